"""The release workflow, written once above the backends.

* ``workflow`` — ``ReleaseWorkflow``: deploy, smoke test, approve, reject, promote, rollback,
  traffic, keys, and the plans of each; ``rollouts`` — its canary part;
* ``ports`` — the two Protocols a backend implements: ``EndpointDriver`` and ``Ledger``;
* ``plans`` — what an action will change (pure); ``smoke`` — the smoke test and its latency
  measurement; ``progress`` — typed steps with a time each;
* ``agent`` — what advances canary rollouts and delivers notifications where no supervisor
  does (Azure).

Each workspace builds its ``ReleaseWorkflow`` with its driver and ledger (``ws.releases``).
"""
from .ports import EndpointDriver, Ledger, UnitOfWork
from .progress import Progress, step_text
from .workflow import ReleaseWorkflow

__all__ = ["ReleaseWorkflow", "EndpointDriver", "Ledger", "UnitOfWork", "Progress", "step_text"]
