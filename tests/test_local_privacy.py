"""A local workspace at rest, on a machine other people use too: what it writes is its user's alone
(0600 files, 0700 folders: the endpoints' keys live in tollgate.db, payloads in telemetry, logs
beside them); a tollgate.toml dropped into the workspace folder takes effect only with a record in
the audit trail; and the policy can bind the acting identity to the operating-system user, so that
``--as`` cannot claim someone else."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.demo import diabetes_v1
from services.errors import Forbidden
from services.local.workspace import LocalWorkspace
from services.permissions import authorize
from services.policy import os_login, parse_policy

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin@contoso.com"


def cli(ws: Path, *args: str, actor: str | None = ADMIN, umask: int = 0o022) -> subprocess.CompletedProcess:
    """``tollgate.py`` as a user whose shell has the usual permissive umask (022)."""
    who = ["--as", actor] if actor else []
    env = {k: v for k, v in os.environ.items() if k != "TOLLGATE_AS"}
    proc = subprocess.run([sys.executable, "tollgate.py", "--workspace", f"local://{ws}", *who, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env, preexec_fn=lambda: os.umask(umask))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def open_to_others(root: Path) -> list[str]:
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{path.relative_to(root)} {stat.filemode(mode)}")
    return found


def test_what_a_workspace_writes_is_private_to_its_user(tmp_path):
    ws = tmp_path / "ws"
    data = tmp_path / "diabetes.csv"
    diabetes_v1().to_csv(data, index=False)
    assert cli(ws, "register-dataset", "diabetes", str(data)).returncode == 0
    assert cli(ws, "retrain", "--dataset", "diabetes", "--wait").returncode == 0        # a run, its log, a model
    try:
        up = cli(ws, "up")                                                              # supervisor, pid files, logs
        assert up.returncode == 0, up.stderr
    finally:
        cli(ws, "down")
    assert cli(ws, "audit").returncode == 0
    created = [p.name for p in ws.rglob("*")]
    assert "tollgate.db" in created and any(n.endswith(".log") for n in created) and len(created) > 10, created
    assert open_to_others(ws) == []


def test_an_existing_workspace_open_to_others_is_closed_when_opened(tmp_path):
    root = tmp_path / "old"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    LocalWorkspace(root).close()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def policy_records(root: Path) -> list:
    ws = LocalWorkspace(root)
    try:
        return [r for r in ws.audit.audit() if r.action == "policy.in_effect"]
    finally:
        ws.close()


def test_a_policy_in_the_workspace_folder_is_audited_when_it_takes_effect_and_when_it_changes(tmp_path):
    root = tmp_path / "ws"
    assert policy_records(root) == []                        # the project's policy: nothing to say
    (root / "tollgate.toml").write_text('[roles]\n"mallory@contoso.com" = "admin"\n')
    first = policy_records(root)
    assert len(first) == 1 and first[0].after["policy"] == str(root / "tollgate.toml")
    assert first[0].actor == "tollgate-system" and "replaces the project's policy" in first[0].comment
    assert len(policy_records(root)) == 1                    # reopened unchanged: no new record
    (root / "tollgate.toml").write_text('[roles]\n"mallory@contoso.com" = ["admin", "qa"]\n')
    changed = policy_records(root)
    assert len(changed) == 2 and changed[0].after["sha256"] != changed[1].after["sha256"]
    (root / "tollgate.toml").unlink()
    back = policy_records(root)
    assert len(back) == 3 and "project" in back[0].comment


BOUND = f'''
[auth]
local_identity = "os-user"
[auth.os_users]
"{os_login()}" = "me@contoso.com"
[roles]
"me@contoso.com" = "ml_lead"
"{ADMIN}" = "admin"
'''


def test_bound_to_the_os_user_no_one_acts_as_someone_else():
    policy = parse_policy(BOUND, source="test")
    assert policy.auth.bound_identity() == "me@contoso.com"
    assert authorize(policy, "me@contoso.com", "register_dataset") == "ml_lead"
    with pytest.raises(Forbidden, match="operating-system user"):
        authorize(policy, ADMIN, "register_dataset")       # a role in [roles] does not help: it is not you
    derived = parse_policy('[auth]\nlocal_identity = "os-user"\nos_user_domain = "contoso.com"\n', source="t")
    assert derived.auth.bound_identity() == f"{os_login()}@contoso.com".lower()


def test_bound_to_the_os_user_the_cli_acts_as_the_os_user_and_refuses_as(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "tollgate.toml").write_text(BOUND)
    data = tmp_path / "d.csv"
    diabetes_v1().head(50).to_csv(data, index=False)
    env_claim = cli(ws, "register-dataset", "d", str(data), actor=ADMIN)
    assert env_claim.returncode == 2 and "operating-system user" in env_claim.stderr
    mine = cli(ws, "register-dataset", "d", str(data), actor=None)
    assert mine.returncode == 0, mine.stderr
    records = json.loads(cli(ws, "audit", "--json", actor=None).stdout)
    assert {r["actor"] for r in records if r["action"] != "policy.in_effect"} == {"me@contoso.com"}


def test_an_unknown_local_identity_mode_is_refused():
    with pytest.raises(Exception, match="local_identity"):
        parse_policy('[auth]\nlocal_identity = "anyone"\n', source="t")
