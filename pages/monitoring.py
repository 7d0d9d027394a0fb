"""Monitoring: an endpoint's health, request rate, failures and latency per model version, release events."""
from ui import monitoring_view

monitoring_view.render()
