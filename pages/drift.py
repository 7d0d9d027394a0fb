"""Drift: collected inputs per model version against its training data; register them as a dataset version."""
from ui import drift_view

drift_view.render()
