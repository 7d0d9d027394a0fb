"""Plans: what a release action will change, said before it happens (``services.release.plans``),
shown by the CLI's ``--dry-run`` and executed only if still true; and the layer's shape."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

import tollgate
from services.entities import Deployment, Endpoint, ModelVersion, ReleaseState, Stage
from services.policy import Policy
from services.release import plans
from tests.conftest import ROOT, copy_workspace
from tests.test_architecture import imported_modules

MODEL = "diabetes-regressor"


def mv(version: int) -> ModelVersion:
    return ModelVersion(MODEL, version, datetime.now(timezone.utc), "t", "", "ridge", {}, None, "diabetes", 2, {})


def dep(name: str, version: int, traffic: int, state: str = "healthy", env: str = "production") -> Deployment:
    return Deployment(name, env, MODEL, version, state, traffic)


def state(version: int, stage: Stage) -> ReleaseState:
    return ReleaseState(MODEL, version, stage)


# --- the plans --------------------------------------------------------------------------

def test_promote_plan_names_the_deployment_traffic_alias_stages_and_failure():
    prod = Endpoint("production", "http://127.0.0.1:1/score", (dep("blue", 1, 100),))
    p = plans.promote(Policy(), prod, mv(3), state(3, Stage.APPROVED), mv(1))
    text = "\n".join(p.changes)
    assert (p.action, p.deployment, p.replaced, p.champion_after) == ("promote", "green", None, f"{MODEL}:3")
    assert p.traffic_before == {"blue": 100} and p.traffic_after == {"blue": 0, "green": 100}
    assert "production traffic: blue (v1) 100 % → green (v3) 100 %; blue stays warm for rollback" in text
    assert "champion alias moves v1 → v3" in text
    assert [(s.ref, s.before, s.after) for s in p.stages] == [(f"{MODEL}:3", Stage.APPROVED, Stage.PRODUCTION),
                                                               (f"{MODEL}:1", Stage.PRODUCTION, Stage.RETIRED)]
    assert p.on_failure.endswith("production traffic stays as it is") and p.on_failure in p.changes
    assert p.steps == (f"deployment green ({MODEL}:3) created at 0 %", "green healthy", "smoke test of green",
                       "traffic shifted to green", "blue kept warm for rollback")
    assert p.long and p.comment == "optional"


def test_promote_plan_says_that_the_rollback_target_is_replaced():
    prod = Endpoint("production", "", (dep("blue", 1, 0), dep("green", 2, 100)))
    p = plans.promote(Policy(), prod, mv(3), state(3, Stage.APPROVED), mv(2))
    text = "\n".join(p.changes)
    assert p.deployment == "blue" and p.replaced == f"{MODEL}:1"
    assert "the warm deployment blue (v1) (today's rollback target) is stopped and replaced" in text
    assert "green (v2) 100 % → blue (v3) 100 %; green stays warm" in text


def test_rollback_plan_and_its_absence():
    prod = Endpoint("production", "", (dep("blue", 1, 0), dep("green", 3, 100)))
    p = plans.rollback(Policy(), prod, state(3, Stage.PRODUCTION), state(1, Stage.RETIRED))
    text = "\n".join(p.changes)
    assert "production traffic: green (v3) 100 % → blue (v1) 100 %" in text and "champion alias moves v3 → v1" in text
    assert "v3 needs a new deploy to staging and a new approval" in text and p.comment == "required"
    lone = Endpoint("production", "", (dep("green", 3, 100),))
    assert "cannot be rolled back: it has no warm previous deployment" in plans.rollback(
        Policy(), lone, None, None).changes[0]


def test_deploy_plan_keeps_production_out_of_it():
    staging = Endpoint("staging", "", (dep("blue", 3, 100, env="staging"),))
    p = plans.deploy(Policy(), staging, mv(5), state(5, Stage.REGISTERED))
    text = "\n".join(p.changes)
    assert "staging traffic: blue (v3) 100 % → green (v5) 100 %" in text
    assert "release stage of v5: registered (not deployed) → awaiting approval" in text
    assert "production is not touched" in text


def test_the_canary_plan_says_how_each_step_is_judged():
    prod = Endpoint("production", "", (dep("blue", 1, 100),))
    p = plans.canary(Policy(), prod, mv(3), state(3, Stage.APPROVED))
    text = "\n".join(p.changes)
    assert p.traffic_after == {"blue": 90, "green": 10} and p.strategy == "canary"
    assert "then it gets 10 % of production's traffic; it moves 10 % → 50 % → 100 %" in text
    assert "max(2.0%, stable's + 1.0%)" in text


def test_the_basis_moves_with_traffic_and_stages_not_with_health():
    ep = Endpoint("production", "", (dep("blue", 1, 100), dep("green", 3, 0)))
    flapping = Endpoint("production", "", (dep("blue", 1, 100, state="unhealthy"), dep("green", 3, 0)))
    shifted = Endpoint("production", "", (dep("blue", 1, 90), dep("green", 3, 10)))
    s = state(3, Stage.APPROVED)
    assert plans.basis(ep, s) == plans.basis(flapping, s)
    assert plans.basis(ep, s) != plans.basis(shifted, s)
    assert plans.basis(ep, s) != plans.basis(ep, state(3, Stage.REJECTED))


# --- --dry-run: the plan, and nothing changes -------------------------------------------

@pytest.fixture
def cold(demo_template, tmp_path):
    return copy_workspace(demo_template, tmp_path / "ws")


def run(capsys, root, *argv: str) -> tuple[int, str, str]:
    code = tollgate.main(["--workspace", f"local://{root}", "--as", "qa@contoso.com", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_runs_print_the_plan_or_why_it_would_be_refused_and_change_nothing(cold, capsys):
    from services.local.workspace import LocalWorkspace
    ws = LocalWorkspace(cold)
    trail = len(ws.releases.audit())
    code, out, _ = run(capsys, cold, "deploy", "--model", MODEL, "--version", "3", "--dry-run")
    assert code == 0 and out.startswith(f"Deploy {MODEL}:3 to staging (dry run: nothing changes)")
    assert "  steps: deployment blue" in out
    code, out, err = run(capsys, cold, "promote", "--model", MODEL, "--version", "3", "--dry-run")
    assert code == 2 and "refused now:" in out and "only an approved version can be promoted" in err
    code, out, err = run(capsys, cold, "canary", "start", "--model", MODEL, "--version", "3", "--dry-run", "--json")
    assert code == 2 and '"action": "canary"' in out
    code, out, err = run(capsys, cold, "rollback", "--dry-run")
    assert code == 2 and "production cannot be rolled back: nothing serves it" in out
    code, _, err = run(capsys, cold, "rollback")
    assert code == 2 and "a rollback needs a comment saying why" in err
    assert len(ws.releases.audit()) == trail and ws.endpoints.supervisor_pid() is None
    ws.close()


# --- the layer's shape -------------------------------------------------------------------

def imports(relative: str) -> set[str]:
    return imported_modules(ROOT / relative)


def test_the_release_workflow_is_written_once_above_the_backends():
    for path in (ROOT / "services" / "release").glob("*.py"):
        names = imported_modules(path)
        assert not [n for n in names if n.startswith(("services.local", "services.azure", "streamlit"))], path


def test_the_daemons_have_their_own_entry_modules_and_no_import_cycle():
    assert not [n for n in imports("services/local/supervisor.py") if n.startswith("services.local.workspace")]
    assert not [n for n in imports("services/local/endpoints.py") if n.startswith("services.local.supervisor")]
    assert "services.local.workspace" in imports("services/local/supervisor_daemon.py")


def test_the_cli_and_the_pages_reach_the_backends_only_through_the_workspace():
    for folder in ("cli", "ui"):
        for path in (ROOT / folder).glob("*.py"):
            offending = [n for n in imported_modules(path) if n.startswith(("services.local", "services.azure"))]
            assert not offending, f"{path.relative_to(ROOT)} imports {offending}"


def test_the_promote_plan_warns_of_a_better_approved_version_and_of_a_champion_changed_since_approval(cold):
    """Release states arranged through the ledger (no processes): two approved versions, the
    champion moved after their approval."""
    from services.local.workspace import LocalWorkspace
    ws = LocalWorkspace(cold)
    try:
        champion = ws.models.champion(MODEL).version
        others = [v.version for v in ws.models.versions(MODEL) if v.version != champion]
        worse, better = next((a, b) for a in others for b in others
                             if a != b and ws.evaluation.compare(MODEL, b, champion_version=a).gate.passed)
        moved_to = next(v for v in others if v not in (worse, better))
        with ws.releases.ledger.unit() as uow:
            for v in (worse, better):
                uow.set_stage(ws.releases.state(MODEL, v), Stage.APPROVED, actor="lead@contoso.com", role="ml_lead",
                              action="approve", decided_by="lead@contoso.com",
                              approved_against=f"{MODEL}:{champion}")
            uow.move_champion(MODEL, moved_to, actor="admin@contoso.com", role="admin")
        warnings = ws.releases.plan_promote(MODEL, worse).warnings
        assert any(w.startswith(f"{MODEL}:{worse} was approved against the champion {MODEL}:{champion}; "
                                f"{MODEL}:{moved_to} is the champion now") for w in warnings), warnings
        assert any(w.startswith(f"{MODEL}:{better} is also approved and beats {MODEL}:{worse} on the same "
                                f"held-out rows (rmse ") for w in warnings), warnings
        assert not any("also approved" in w for w in ws.releases.plan_promote(MODEL, better).warnings)
    finally:
        ws.close()
