"""Browser tests: Playwright's assertions wait longer than their 5-s default.

A Streamlit rerun that opens a dialog or redraws a page takes well under a second on a
quiet machine, but CI runs two test workers beside training and endpoint processes on
two cores, where one rerun took over 5 s (a release-journey dialog never "appeared").
Waiting longer costs nothing when the page is fast.
"""
import pytest

playwright = pytest.importorskip("playwright.sync_api")

playwright.expect.set_options(timeout=30_000)
