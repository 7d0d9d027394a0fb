"""Logs: deployment console logs and the gateway log of an endpoint, searched by text and time."""
from ui import logs_view

logs_view.render()
