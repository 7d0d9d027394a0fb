"""Datasets: versions, schema and profile, data tests, distributions, upload."""
from ui import datasets_view

datasets_view.render()
