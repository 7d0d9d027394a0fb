"""Schedules: retraining schedules and dataset triggers, what they fired, and the scheduler."""
from ui import schedules_view
from ui.widgets import guard

with guard():  # app.py catches too, but a page opened by its URL can run without app.py around it
    schedules_view.render()
