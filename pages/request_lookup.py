"""Request lookup: one request by its id, with its payloads, model version and log lines."""
from ui import lookup_view

lookup_view.render()
