"""The supervisor's entry module: ``python -m services.local.supervisor_daemon --workspace PATH``.

It wires the supervisor (``services.local.supervisor``: processes, restarts, the release and
notification threads) to the workspace its threads work on, so that neither the supervisor
nor the workspace imports the other (``workspace → endpoints`` starts this module by name).
"""
from __future__ import annotations

import sys

from .supervisor import main
from .workspace import LocalWorkspace

if __name__ == "__main__":
    sys.exit(main(open_workspace=LocalWorkspace))
