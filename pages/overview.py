"""Overview: production and staging, candidates awaiting a decision, latest runs."""
from ui import overview_view

overview_view.render()
