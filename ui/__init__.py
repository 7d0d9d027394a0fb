"""Streamlit glue between the thin pages and services/: cached reads, session
keys, error display and shared widgets. The only place pages get data from."""
