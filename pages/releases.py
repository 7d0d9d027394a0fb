"""Releases: each candidate's way to production, the gates' evidence, the release actions, the audit trail."""
from ui import releases_view

releases_view.render()
