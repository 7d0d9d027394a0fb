"""The policy file (``tollgate.toml``): release rules as data.

Looked up in the workspace folder first, then the project root; built-in
defaults fill whatever a file leaves out.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLICY_FILE = "tollgate.toml"


@dataclass(frozen=True)
class GateRule:
    metric: str
    direction: str = "lower"            # which way is better
    max_regression: float | None = 0.0  # relative, vs the champion
    min: float | None = None            # absolute bounds on the candidate
    max: float | None = None


@dataclass(frozen=True)
class DataTestPolicy:
    max_missing_fraction_warn: float = 0.0
    max_missing_fraction_fail: float = 0.05
    shift_sigma_warn: float = 1.0
    shift_sigma_fail: float = 3.0
    std_ratio_fail: float = 2.0
    psi_warn: float = 0.1
    psi_fail: float = 0.25
    range_tolerance: float = 0.1
    min_rows: int = 50


@dataclass(frozen=True)
class EndpointPolicy:
    staging: str = "staging"
    production: str = "production"
    max_payload_bytes: int = 1_048_576
    request_timeout_s: float = 30.0
    health_timeout_s: float = 90.0       # how long a new deployment may take to become healthy


@dataclass(frozen=True)
class SmokePolicy:
    cases: int = 5                       # rows of the held-out split sent as named cases
    tolerance: float = 1e-6              # |endpoint - offline prediction| allowed (relative)


@dataclass(frozen=True)
class HealthPolicy:
    """When an endpoint counts as degraded (``services.telemetry.endpoint_health``)."""
    window_minutes: int = 15             # judged over the last N minutes
    min_requests: int = 20               # fewer requests than this: "idle", not judged
    max_failure_rate: float = 0.02       # share of 5xx / unanswered requests
    max_p95_ms: float = 500.0            # p95 latency


@dataclass(frozen=True)
class DriftPolicy:
    """Live inputs vs the training data of the version that served them."""
    psi_warn: float = 0.1
    psi_fail: float = 0.25
    ks_warn: float = 0.1                 # Kolmogorov-Smirnov statistic (max CDF distance)
    ks_fail: float = 0.2
    min_rows: int = 500                  # fewer collected rows: not judged (PSI noise alone ~0.1 at 100)


ROLES = ("ml_lead", "qa", "support", "admin")


@dataclass(frozen=True)
class Policy:
    model_name: str = "diabetes-regressor"
    target: str = "target"
    experiment: str = "diabetes-retrain"
    test_fraction: float = 0.2
    split_seed: int = 42
    require_improvement: str | None = "rmse"
    gate_rules: tuple[GateRule, ...] = (
        GateRule("rmse", "lower", 0.0),
        GateRule("mae", "lower", 0.02),
        GateRule("r2", "higher", 0.02, min=0.3),
    )
    data_tests: DataTestPolicy = field(default_factory=DataTestPolicy)
    max_concurrent_jobs: int = 2
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)
    smoke: SmokePolicy = field(default_factory=SmokePolicy)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # identity -> roles
    source: str = "built-in defaults"
    raw: Mapping[str, Any] = field(default_factory=dict)

    def direction(self, metric: str) -> str:
        """'lower' or 'higher' is better, for display and comparison."""
        for rule in self.gate_rules:
            if rule.metric == metric:
                return rule.direction
        return "higher" if metric in ("r2", "accuracy", "auc", "f1") else "lower"

    def roles_of(self, identity: str) -> tuple[str, ...]:
        return self.roles.get((identity or "").strip().lower(), ())


def load_policy(*search: Path) -> Policy:
    """The first ``tollgate.toml`` found in ``search`` (then the project root)."""
    for folder in (*search, PROJECT_ROOT):
        path = Path(folder) / POLICY_FILE
        if path.is_file():
            return parse_policy(path.read_text(), source=str(path))
    return Policy()


# The keys each table may hold; a misspelt key would otherwise silently leave a default in force.
# ([data_tests] and [[gate.rules]] are checked by their dataclasses.)
KNOWN_KEYS = {
    "project": {"model_name", "target", "experiment"},
    "evaluation": {"test_fraction", "split_seed"},
    "gate": {"require_improvement", "rules"},
    "data_tests": None,
    "jobs": {"max_concurrent"},
    "endpoints": None,    # checked by EndpointPolicy's fields
    "smoke_test": None,   # checked by SmokePolicy's fields
    "health": None,       # checked by HealthPolicy's fields
    "drift": None,        # checked by DriftPolicy's fields
    "roles": None,        # identities are free-form; parse_roles checks the role names
}


def _check_keys(raw: Mapping[str, Any], source: str) -> None:
    for table, value in raw.items():
        if table not in KNOWN_KEYS:
            raise InvalidInput(f"{source}: unknown table [{table}]; known: {', '.join(KNOWN_KEYS)}")
        if not isinstance(value, dict):
            raise InvalidInput(f"{source}: {table} must be a table ([{table}])")
        unknown = sorted(set(value) - KNOWN_KEYS[table]) if KNOWN_KEYS[table] is not None else []
        if unknown:
            raise InvalidInput(f"{source}: unknown key(s) in [{table}]: {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(KNOWN_KEYS[table]))}")


def _number(table: Mapping[str, Any], key: str, kind: type, default, where: str):
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise InvalidInput(f"{where}.{key} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


def parse_policy(text: str, source: str = "<text>") -> Policy:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"{source}: not valid TOML: {e}",
                           hint="Fix the policy file; see the comments in the project's tollgate.toml.") from e
    _check_keys(raw, source)
    project = raw.get("project", {})
    evaluation = raw.get("evaluation", {})
    gate = raw.get("gate", {})
    defaults = Policy()
    try:
        rules = tuple(GateRule(**r) for r in gate["rules"]) if "rules" in gate else defaults.gate_rules
        for r in rules:
            if r.direction not in ("lower", "higher"):
                raise InvalidInput(f"{source}: gate rule {r.metric!r}: direction must be 'lower' or 'higher'")
        data_tests = DataTestPolicy(**raw.get("data_tests", {}))
        endpoints = EndpointPolicy(**raw.get("endpoints", {}))
        smoke = SmokePolicy(**raw.get("smoke_test", {}))
        health = HealthPolicy(**raw.get("health", {}))
        drift = DriftPolicy(**raw.get("drift", {}))
        roles = parse_roles(raw.get("roles", {}), source)
    except TypeError as e:  # unknown key in a table
        raise InvalidInput(f"{source}: {e}") from e
    for table_name, table in (("health", health), ("drift", drift)):
        for key, value in vars(table).items():
            kind = int if key in ("window_minutes", "min_requests", "min_rows") else float
            if _number(vars(table), key, kind, value, f"{source}: {table_name}") < 0:
                raise InvalidInput(f"{source}: {table_name}.{key} must not be negative, got {value}")
    fraction = _number(evaluation, "test_fraction", float, defaults.test_fraction, f"{source}: evaluation")
    if not 0.05 <= fraction <= 0.5:
        raise InvalidInput(f"{source}: evaluation.test_fraction must be between 0.05 and 0.5, got {fraction}")
    max_concurrent = _number(raw.get("jobs", {}), "max_concurrent", int, defaults.max_concurrent_jobs, f"{source}: jobs")
    if max_concurrent < 1:
        raise InvalidInput(f"{source}: jobs.max_concurrent must be at least 1, got {max_concurrent}")
    return Policy(
        model_name=project.get("model_name", defaults.model_name),
        target=project.get("target", defaults.target),
        experiment=project.get("experiment", defaults.experiment),
        test_fraction=fraction,
        split_seed=_number(evaluation, "split_seed", int, defaults.split_seed, f"{source}: evaluation"),
        require_improvement=gate.get("require_improvement", defaults.require_improvement) or None,
        gate_rules=rules,
        data_tests=data_tests,
        max_concurrent_jobs=max_concurrent,
        endpoints=endpoints,
        smoke=smoke,
        health=health,
        drift=drift,
        roles=roles,
        source=source,
        raw=raw,
    )


def parse_roles(table: Mapping[str, Any], source: str) -> dict[str, tuple[str, ...]]:
    """``[roles]`` maps an identity (e-mail) to a role or a list of roles."""
    out = {}
    for identity, roles in table.items():
        roles = (roles,) if isinstance(roles, str) else tuple(roles)
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise InvalidInput(f"{source}: [roles] {identity}: unknown role(s) {', '.join(unknown)}; "
                               f"known: {', '.join(ROLES)}")
        out[identity.strip().lower()] = roles
    return out
