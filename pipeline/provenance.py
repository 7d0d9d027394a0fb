"""What a training run was made with: the version of the training code and the environment.

Runs wherever the training runs (the local runner, an Azure ML command job), with the
standard library only:

* ``code_version(root)`` — the git commit of the training code (``git rev-parse HEAD``)
  and whether its files differ from that commit (``git status --porcelain -- pipeline``),
  when ``root`` is a git repository; always the SHA-256 of the training code files
  (``TRAINING_CODE``), so a copy outside git still names its code exactly;
* ``environment()`` — the Python version and the versions of the packages a fitted model
  needs to be loaded and to predict the same (``MODEL_PACKAGES``);
* ``freeze()`` — every installed distribution as ``name==version``, sorted: the
  ``pip freeze`` list, kept as the run's ``environment.txt``.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIR = "pipeline"
MODEL_PACKAGES = ("scikit-learn", "numpy", "scipy", "pandas", "joblib")
ENVIRONMENT_FILE = "environment.txt"
GIT_TIMEOUT_S = 10


def training_code(root: Path = ROOT) -> list[str]:
    """The training code's files, relative to ``root``, sorted: every Python file of ``pipeline/``."""
    return sorted(p.relative_to(root).as_posix() for p in (Path(root) / CODE_DIR).glob("*.py"))


def code_sha256(root: Path = ROOT) -> str:
    """One hash of the training code files (names and contents), independent of git."""
    digest = hashlib.sha256()
    for rel in training_code(root):
        digest.update(rel.encode() + b"\0" + (Path(root) / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):  # no git on this machine, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(root: Path = ROOT) -> dict:
    """``{"commit": sha or None, "dirty": bool or None, "sha256": hex}`` of the training code."""
    commit = _git(root, "rev-parse", "--verify", "HEAD")
    dirty = None
    if commit:
        status = _git(root, "status", "--porcelain", "--", CODE_DIR)
        dirty = None if status is None else bool(status)
    return {"commit": commit or None, "dirty": dirty, "sha256": code_sha256(root)}


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """``{"python": "3.11.9", "packages": {"scikit-learn": "1.5.2", …}}`` (installed ones only)."""
    packages = {name: package_version(name) for name in MODEL_PACKAGES}
    return {"python": platform.python_version(), "packages": {k: v for k, v in packages.items() if v}}


def mlflow_tags(env: dict) -> dict[str, str]:
    """``environment()`` as the MLflow tags the training script sets (on Azure ML, how the
    console learns what a job trained with)."""
    return {"tollgate.python": env["python"], "tollgate.packages": json.dumps(env["packages"], sort_keys=True),
            "tollgate.environment": ENVIRONMENT_FILE}


def freeze() -> str:
    """Every installed distribution as ``name==version``, one a line, sorted by name."""
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(seen[k] for k in sorted(seen)) + "\n"


def write_environment(output: Path) -> Path:
    """The ``pip freeze`` list as ``output/environment.txt`` (an artifact of the run)."""
    path = Path(output) / ENVIRONMENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(freeze())
    return path
