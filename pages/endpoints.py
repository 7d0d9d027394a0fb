"""Endpoints: health, deployments and traffic, keys, a test request, console logs."""
from ui import endpoints_view

endpoints_view.render()
