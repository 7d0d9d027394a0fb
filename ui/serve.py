"""Start the console: ``python -m ui.serve [streamlit options]`` (``make run`` uses it).

The same as ``streamlit run app.py``, with one fix: Streamlit treats a folder
named ``pages/`` beside the entry script as a legacy multipage app until the
entry script has run once, so a fresh server answering a deep link such as
``/runs`` would run ``pages/runs.py`` alone — without ``app.py``'s navigation,
page config and sidebar. ``app.py`` declares its pages with ``st.navigation``,
so we say so before the server starts.
"""
from __future__ import annotations

import sys
from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import cli

APP = Path(__file__).resolve().parent.parent / "app.py"


def main(argv: list[str] | None = None) -> None:
    PagesManager.uses_pages_directory = False  # app.py uses st.navigation (Streamlit 1.67 internals)
    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
