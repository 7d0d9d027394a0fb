"""The policy file (``tollgate.toml``): release rules as data.

Looked up in the workspace folder first, then the project root; built-in
defaults fill whatever a file leaves out.
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import InvalidInput
from .metrics import DEFAULT_GATE, TASKS, metric, metrics_of

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLICY_FILE = "tollgate.toml"


@dataclass(frozen=True)
class GateRule:
    metric: str
    direction: str = "lower"            # which way is better: the metric's (services.metrics)
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
    body_timeout_s: float = 10.0         # a request body not in by then gets 408 (slow clients)
    health_timeout_s: float = 90.0       # how long a new deployment may take to become healthy


@dataclass(frozen=True)
class SmokePolicy:
    cases: int = 5                       # rows of the held-out split sent as named cases
    tolerance: float = 1e-6              # |endpoint - offline prediction| allowed (relative)
    latency_requests: int = 20           # requests to the new deployment and as many to the live one,
                                         # interleaved, for their p50/p95 (0: no latency measurement)


@dataclass(frozen=True)
class LatencyGate:
    """``[gate]`` latency rule, judged on the smoke test's measurement when a version is promoted:
    the candidate's p95 may be at most max(live p95 x (1 + max_p95_regression), live p95 +
    p95_allowance_ms). ``max_p95_regression = None``: latency is measured and shown, not judged."""
    max_p95_regression: float | None = None
    p95_allowance_ms: float = 25.0

    def limit_ms(self, live_p95_ms: float | None) -> float | None:
        if self.max_p95_regression is None or live_p95_ms is None:
            return None
        return max(live_p95_ms * (1 + self.max_p95_regression), live_p95_ms + self.p95_allowance_ms)


@dataclass(frozen=True)
class ReleasePolicy:
    """``[release]``: what the release workflow asks of people (reject and rollback always need a comment),
    and what Tollgate does by itself: ``auto_stage`` deploys a candidate a training run registered behind
    the gate to staging (smoke test included), where it awaits approval; it waits up to
    ``auto_stage_wait_s`` for a release operation holding staging, then skips (``services.release.auto_stage``)."""
    approve_comment_required: bool = False
    auto_stage: bool = False
    auto_stage_wait_s: float = 300.0


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


@dataclass(frozen=True)
class TelemetryPolicy:
    """How long request telemetry is kept (``services.local.retention``) and how much of it.

    Raw rows carry the payloads (request lookup, the drift check); per-minute aggregates draw the
    charts of windows up to 30 days with their edges to the minute; hourly ones draw the rest.
    ``capture_fraction``: the share of successful requests whose payloads are kept (failures and
    client errors always are), per endpoint in ``[telemetry.capture]`` (Azure ML's data collector
    samples the same way)."""
    raw_days: float = 7.0
    minute_days: float = 30.0
    hour_days: float = 365.0
    capture_fraction: float = 1.0
    capture: Mapping[str, float] = field(default_factory=dict)   # endpoint -> its capture fraction

    def capture_for(self, endpoint: str) -> float:
        return self.capture.get(endpoint, self.capture_fraction)


# What a webhook can subscribe to (``services.notify`` builds the messages).
NOTIFY_EVENTS = ("candidate_ready", "auto_stage_failed", "approval_requested", "promoted", "rolled_back",
                 "endpoint_degraded", "endpoint_recovered", "canary_step", "canary_paused", "canary_aborted")
WEBHOOK_FORMATS = ("generic", "teams", "slack")


@dataclass(frozen=True)
class Webhook:
    """One webhook of ``[[notifications.webhooks]]``. The URL is given in the file (``url``) or,
    to keep its token out of the file, by the name of an environment variable (``url_env``)."""
    name: str
    format: str = "generic"              # generic | teams | slack
    events: tuple[str, ...] = NOTIFY_EVENTS
    url: str | None = None
    url_env: str | None = None


@dataclass(frozen=True)
class NotificationPolicy:
    webhooks: tuple[Webhook, ...] = ()
    console_url: str = "http://localhost:8501"   # links in messages point here
    max_attempts: int = 6                # then the delivery is given up (audit: notification.failed)
    backoff_s: float = 60.0              # wait before retry n: backoff_s * 2**(n-1) -> 1, 2, 4, 8, 16 min
    timeout_s: float = 10.0              # per POST


@dataclass(frozen=True)
class CanaryPolicy:
    """Promote in steps of production traffic, each judged on live telemetry (``services.canary``)."""
    steps: tuple[int, ...] = (10, 50, 100)   # % of production traffic on the candidate, ending at 100
    step_seconds: float = 300.0          # analysis window of each step
    min_requests: int = 50               # canary requests a step needs to be judged
    max_step_seconds: float = 900.0      # a step short of min_requests waits this long at most, then ...
    on_low_traffic: str = "pause"        # ... "pause" (QA decides) or "rollback"
    max_failure_rate: float = 0.02       # canary failure rate <= max(this, stable's + increase)
    max_failure_rate_increase: float = 0.01
    max_p95_ratio: float = 1.5           # canary p95 <= max(stable p95 * ratio, stable p95 + increase_ms)
    max_p95_increase_ms: float = 25.0
    strategy: str = "blue_green"         # what a promote does by default: "blue_green" or "canary"


ROLES = ("ml_lead", "qa", "support", "admin")


@dataclass(frozen=True)
class AuthPolicy:
    """Sign-in for the console (``st.login``, Microsoft Entra ID) when ``.streamlit/secrets.toml``
    has an ``[auth]`` section. Roles come from ``[roles]`` and, through ``app_roles``, from the
    app roles in the user's ID token (``roles`` claim): app role value -> Tollgate role."""
    provider: str = "microsoft"          # the [auth.<provider>] section of secrets.toml
    app_roles: Mapping[str, str] = field(default_factory=dict)
    # Local mode: "picker" (anyone may say who they are: unauthenticated, for one person's machine)
    # or "os-user" (the acting identity is the operating-system user running the process, mapped by
    # os_users or derived as login@os_user_domain: for a shared machine; the services refuse any other)
    local_identity: str = "picker"
    os_users: Mapping[str, str] = field(default_factory=dict)    # OS login -> identity
    os_user_domain: str = ""

    def bound_identity(self) -> str | None:
        """The identity every local action is taken as when the policy binds it to the OS user; None
        when the picker (or ``--as``) names it."""
        if self.local_identity != "os-user":
            return None
        login = os_login()
        mapped = {k.lower(): v for k, v in self.os_users.items()}.get(login.lower())
        return (mapped or (f"{login}@{self.os_user_domain}" if self.os_user_domain else login)).strip().lower()


def os_login() -> str:
    """The login of the user this process runs as, from the OS's account database (not from
    ``$USER`` / ``$LOGNAME``, which anyone can set)."""
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):   # Windows, or a uid without an account entry
        import getpass
        return getpass.getuser()


# Roles a directory vouched for: granted when a user signs in with a verified ID token whose
# app roles map to Tollgate roles. Per identity (not per session), in this process only.
_DIRECTORY_ROLES: dict[str, tuple[str, ...]] = {}


def grant_directory_roles(identity: str, roles: tuple[str, ...]) -> None:
    """Record the roles a verified sign-in carries (replacing earlier ones for that identity).
    Never call this with anything a user typed: only with claims of a validated token."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise InvalidInput(f"unknown role(s) {', '.join(unknown)}; known: {', '.join(ROLES)}")
    _DIRECTORY_ROLES[(identity or "").strip().lower()] = tuple(roles)


# [training.bounds]: what a training run may ask for. A parameter's bound is "max" or [min, max];
# at the top of the table it holds for every estimator that has the parameter, in a sub-table
# ([training.bounds.gbr]) for that estimator only. Unbounded, n_estimators=1000000000 runs for days.
DEFAULT_TRAINING_BOUNDS: Mapping[str, tuple[float, float]] = {
    "n_estimators": (1, 2000), "max_depth": (1, 64), "max_iter": (1, 100_000), "min_samples_leaf": (1, 10_000),
    "learning_rate": (1e-6, 1.0), "subsample": (0.01, 1.0), "alpha": (0.0, 1e6), "C": (1e-6, 1e6),
}


@dataclass(frozen=True)
class TrainingPolicy:
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_TRAINING_BOUNDS))
    per_estimator: Mapping[str, Mapping[str, tuple[float, float]]] = field(default_factory=dict)
    wait_timeout_s: float = 3600.0     # `retrain --wait` gives up waiting (the run goes on) after this long

    def bounds_of(self, estimator: str) -> dict[str, tuple[float, float]]:
        """Parameter -> (min, max) for ``estimator``."""
        return {**self.bounds, **self.per_estimator.get(estimator, {})}


def default_gate(task: str) -> tuple[str, tuple[GateRule, ...]]:
    """The metric a candidate must improve and the rules of a policy that names none, for ``task``."""
    primary, rules = DEFAULT_GATE[task]
    return primary, tuple(GateRule(name, metric(name).direction, allowed, min=floor)
                          for name, allowed, floor in rules)


@dataclass(frozen=True)
class Policy:
    model_name: str = "diabetes-regressor"
    target: str = "target"
    experiment: str = "diabetes-retrain"
    task: str = "regression"             # regression | binary | multiclass: the metrics, estimators, gate
    test_fraction: float = 0.2
    split_seed: int = 42
    require_improvement: str | None = default_gate("regression")[0]
    gate_rules: tuple[GateRule, ...] = default_gate("regression")[1]
    data_tests: DataTestPolicy = field(default_factory=DataTestPolicy)
    max_concurrent_jobs: int = 2
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)
    smoke: SmokePolicy = field(default_factory=SmokePolicy)
    latency_gate: LatencyGate = field(default_factory=LatencyGate)
    release: ReleasePolicy = field(default_factory=ReleasePolicy)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    notifications: NotificationPolicy = field(default_factory=NotificationPolicy)
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)
    telemetry: TelemetryPolicy = field(default_factory=TelemetryPolicy)
    training: TrainingPolicy = field(default_factory=TrainingPolicy)
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # identity -> roles
    auth: AuthPolicy = field(default_factory=AuthPolicy)
    source: str = "built-in defaults"
    raw: Mapping[str, Any] = field(default_factory=dict)

    def direction(self, metric: str) -> str:
        """'lower' or 'higher' is better, for display and comparison: the metric's own."""
        from .metrics import direction
        return direction(metric)

    def roles_of(self, identity: str) -> tuple[str, ...]:
        """``[roles]`` of the identity, plus what its signed-in token's app roles grant."""
        key = (identity or "").strip().lower()
        return tuple(dict.fromkeys((*self.roles.get(key, ()), *_DIRECTORY_ROLES.get(key, ()))))


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
    "project": {"model_name", "target", "experiment", "task"},
    "evaluation": {"test_fraction", "split_seed"},
    "gate": {"require_improvement", "rules", "max_p95_regression", "p95_allowance_ms"},
    "release": {"approve_comment_required", "auto_stage", "auto_stage_wait_s"},
    "data_tests": None,
    "jobs": {"max_concurrent"},
    "endpoints": None,    # checked by EndpointPolicy's fields
    "smoke_test": None,   # checked by SmokePolicy's fields
    "health": None,       # checked by HealthPolicy's fields
    "drift": None,        # checked by DriftPolicy's fields
    "roles": None,        # identities are free-form; parse_roles checks the role names
    "auth": {"provider", "app_roles", "local_identity", "os_users", "os_user_domain"},
    "notifications": {"webhooks", "console_url", "max_attempts", "backoff_s", "timeout_s"},
    "canary": None,       # checked by CanaryPolicy's fields (parse_canary)
    "telemetry": {"raw_days", "minute_days", "hour_days", "capture_fraction", "capture"},
    "training": {"bounds", "wait_timeout_s"},
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


def _checked_table(value: Any, known: set[str], where: str) -> None:
    """Refuses ``value`` unless it is a table holding only ``known`` keys (one of a list of tables)."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a table")
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


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
    task = project.get("task", defaults.task)
    if task not in TASKS:
        raise InvalidInput(f"{source}: [project] task must be one of {', '.join(TASKS)}, got {task!r}")
    primary, rules = parse_gate_rules(gate, task, source)
    try:
        data_tests = DataTestPolicy(**raw.get("data_tests", {}))
        endpoints = EndpointPolicy(**raw.get("endpoints", {}))
        smoke = SmokePolicy(**raw.get("smoke_test", {}))
        health = HealthPolicy(**raw.get("health", {}))
        drift = DriftPolicy(**raw.get("drift", {}))
        roles = parse_roles(raw.get("roles", {}), source)
        auth = parse_auth(raw.get("auth", {}), source)
        training = parse_training(raw.get("training", {}), source)
        notifications = parse_notifications(raw.get("notifications", {}), source)
        canary = parse_canary(raw.get("canary", {}), source)
        latency_gate = parse_latency_gate(gate, source)
        release = parse_release(raw.get("release", {}), source)
        telemetry = parse_telemetry(raw.get("telemetry", {}), source)
    except TypeError as e:  # unknown key in a table
        raise InvalidInput(f"{source}: {e}") from e
    for table_name, table in (("health", health), ("drift", drift)):
        for key, value in vars(table).items():
            kind = int if key in ("window_minutes", "min_requests", "min_rows") else float
            if _number(vars(table), key, kind, value, f"{source}: {table_name}") < 0:
                raise InvalidInput(f"{source}: {table_name}.{key} must not be negative, got {value}")
    latency_requests = _number(vars(smoke), "latency_requests", int, smoke.latency_requests, f"{source}: smoke_test")
    if not 0 <= latency_requests <= 1000:
        raise InvalidInput(f"{source}: smoke_test.latency_requests must be between 0 and 1000, got {latency_requests}")
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
        task=task,
        test_fraction=fraction,
        split_seed=_number(evaluation, "split_seed", int, defaults.split_seed, f"{source}: evaluation"),
        require_improvement=primary,
        gate_rules=rules,
        data_tests=data_tests,
        max_concurrent_jobs=max_concurrent,
        endpoints=endpoints,
        smoke=smoke,
        latency_gate=latency_gate,
        release=release,
        health=health,
        drift=drift,
        notifications=notifications,
        canary=canary,
        telemetry=telemetry,
        roles=roles,
        auth=auth,
        training=training,
        source=source,
        raw=raw,
    )


RULE_KEYS = {"metric", "direction", "max_regression", "min", "max"}


def parse_gate_rules(gate: Mapping[str, Any], task: str, source: str) -> tuple[str | None, tuple[GateRule, ...]]:
    """``[gate] require_improvement`` and ``[[gate.rules]]`` for ``task``: each rule names a metric of the
    task (rmse on a classifier, f1 on a regressor are refused, naming the file and the key); its direction
    is the metric's (a rule may repeat it, not contradict it). None given: the task's defaults."""
    primary, defaults = default_gate(task)
    known = [m.name for m in metrics_of(task)]

    def of_task(name: Any, key: str) -> str:
        if not isinstance(name, str) or name not in known:
            raise InvalidInput(f"{source}: {key} = {name!r} is not a metric of the task {task!r} ([project] task)",
                               hint=f"Its metrics: {', '.join(known)}.")
        return name

    if "require_improvement" in gate:
        primary = gate["require_improvement"] and of_task(gate["require_improvement"], "[gate] require_improvement")
    if "rules" not in gate:
        return primary or None, defaults
    if not isinstance(gate["rules"], list):
        raise InvalidInput(f"{source}: [gate] rules must be a list of tables ([[gate.rules]])")
    rules = []
    for i, raw in enumerate(gate["rules"], 1):
        where = f"[[gate.rules]] #{i}"
        _checked_table(raw, RULE_KEYS, f"{source}: {where}")
        name = of_task(raw.get("metric"), f"{where} metric")
        direction = metric(name).direction
        if raw.get("direction", direction) != direction:
            raise InvalidInput(f"{source}: {where} ({name}): direction = {raw['direction']!r}, but for {name} "
                               f"{direction} is better", hint="Leave direction out: it comes from the metric.")
        bounds = {key: _number(raw, key, float, None, f"{source}: {where}")
                  for key in ("max_regression", "min", "max") if raw.get(key) is not None}
        if bounds.get("max_regression", 0.0) < 0:
            raise InvalidInput(f"{source}: {where} ({name}): max_regression must not be negative")
        rules.append(GateRule(name, direction, **bounds))
    return primary or None, tuple(rules)


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


WEBHOOK_KEYS = {"name", "url", "url_env", "format", "events"}


def parse_notifications(table: Mapping[str, Any], source: str) -> NotificationPolicy:
    """``[notifications]`` with ``[[notifications.webhooks]]``; URLs are http(s) only."""
    where = f"{source}: notifications"
    defaults = NotificationPolicy()
    hooks = table.get("webhooks", [])
    if not isinstance(hooks, list):
        raise InvalidInput(f"{where}.webhooks must be a list of tables ([[notifications.webhooks]])")
    webhooks, names = [], set()
    for i, hook in enumerate(hooks, 1):
        _checked_table(hook, WEBHOOK_KEYS, f"{where}.webhooks[{i}]")
        fmt = hook.get("format", "generic")
        if fmt not in WEBHOOK_FORMATS:
            raise InvalidInput(f"{where}.webhooks[{i}]: format must be one of {', '.join(WEBHOOK_FORMATS)}, got {fmt!r}")
        name = str(hook.get("name") or f"{fmt}-{i}")
        if name in names:
            raise InvalidInput(f"{where}.webhooks[{i}]: the name {name!r} is used twice")
        names.add(name)
        url, url_env = hook.get("url"), hook.get("url_env")
        if (url is None) == (url_env is None):
            raise InvalidInput(f"{where}.webhooks[{i}] ({name}): give exactly one of url or url_env",
                               hint="url_env names an environment variable holding the URL, so its token "
                                    "stays out of the file.")
        if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise InvalidInput(f"{where}.webhooks[{i}] ({name}): url must start with http:// or https://")
        if url_env is not None and not (isinstance(url_env, str) and url_env.strip()):
            raise InvalidInput(f"{where}.webhooks[{i}] ({name}): url_env must name an environment variable")
        events = hook.get("events", list(NOTIFY_EVENTS))
        if isinstance(events, str):
            events = [events]
        bad = [e for e in events if e not in NOTIFY_EVENTS]
        if bad or not events:
            raise InvalidInput(f"{where}.webhooks[{i}] ({name}): unknown event(s) {', '.join(map(str, bad)) or '(none given)'}",
                               hint=f"Events: {', '.join(NOTIFY_EVENTS)}.")
        webhooks.append(Webhook(name=name, format=fmt, events=tuple(events), url=url, url_env=url_env))
    max_attempts = _number(table, "max_attempts", int, defaults.max_attempts, where)
    backoff_s = _number(table, "backoff_s", float, defaults.backoff_s, where)
    timeout_s = _number(table, "timeout_s", float, defaults.timeout_s, where)
    if max_attempts < 1 or backoff_s < 0 or timeout_s <= 0:
        raise InvalidInput(f"{where}: max_attempts must be at least 1, backoff_s not negative, timeout_s positive")
    console_url = table.get("console_url", defaults.console_url)
    if not isinstance(console_url, str):
        raise InvalidInput(f"{where}.console_url must be a string")
    return NotificationPolicy(webhooks=tuple(webhooks), console_url=console_url.rstrip("/"),
                              max_attempts=max_attempts, backoff_s=backoff_s, timeout_s=timeout_s)


def parse_canary(table: Mapping[str, Any], source: str) -> CanaryPolicy:
    """``[canary]``: steps strictly increasing whole percentages ending at 100; limits not negative."""
    where = f"{source}: canary"
    defaults = CanaryPolicy()
    unknown = sorted(set(table) - set(vars(defaults)))
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(vars(defaults)))}")
    steps = table.get("steps", list(defaults.steps))
    if (not isinstance(steps, list) or not steps
            or any(isinstance(s, bool) or not isinstance(s, int) or not 0 < s <= 100 for s in steps)
            or any(b <= a for a, b in zip(steps, steps[1:])) or steps[-1] != 100):
        raise InvalidInput(f"{where}.steps must be whole percentages, increasing, ending at 100 "
                           f"(e.g. [10, 50, 100]); got {steps!r}")
    values = {}
    for key in ("step_seconds", "max_step_seconds", "max_failure_rate", "max_failure_rate_increase",
                "max_p95_ratio", "max_p95_increase_ms"):
        values[key] = _number(table, key, float, getattr(defaults, key), where)
        if values[key] < 0:
            raise InvalidInput(f"{where}.{key} must not be negative, got {values[key]}")
    values["min_requests"] = _number(table, "min_requests", int, defaults.min_requests, where)
    if values["step_seconds"] <= 0 or values["min_requests"] < 1:
        raise InvalidInput(f"{where}: step_seconds must be positive and min_requests at least 1")
    if values["max_step_seconds"] < values["step_seconds"]:
        raise InvalidInput(f"{where}.max_step_seconds ({values['max_step_seconds']:g}) must be at least "
                           f"step_seconds ({values['step_seconds']:g})")
    on_low = table.get("on_low_traffic", defaults.on_low_traffic)
    if on_low not in ("pause", "rollback"):
        raise InvalidInput(f"{where}.on_low_traffic must be 'pause' or 'rollback', got {on_low!r}")
    strategy = table.get("strategy", defaults.strategy)
    if strategy not in ("blue_green", "canary"):
        raise InvalidInput(f"{where}.strategy must be 'blue_green' or 'canary', got {strategy!r}")
    return CanaryPolicy(steps=tuple(steps), on_low_traffic=on_low, strategy=strategy, **values)


def parse_latency_gate(gate: Mapping[str, Any], source: str) -> LatencyGate:
    """``[gate] max_p95_regression`` (relative, e.g. 1.0: up to twice the live p95) and
    ``p95_allowance_ms`` (the smallest increase that always passes)."""
    where = f"{source}: gate"
    defaults = LatencyGate()
    regression = gate.get("max_p95_regression")
    if regression is not None:
        regression = _number(gate, "max_p95_regression", float, None, where)
        if regression < 0:
            raise InvalidInput(f"{where}.max_p95_regression must not be negative, got {regression}")
    allowance = _number(gate, "p95_allowance_ms", float, defaults.p95_allowance_ms, where)
    if allowance < 0:
        raise InvalidInput(f"{where}.p95_allowance_ms must not be negative, got {allowance}")
    return LatencyGate(max_p95_regression=regression, p95_allowance_ms=allowance)


def parse_release(table: Mapping[str, Any], source: str) -> ReleasePolicy:
    switches = {key: table.get(key, getattr(ReleasePolicy, key)) for key in ("approve_comment_required", "auto_stage")}
    for key, value in switches.items():
        if not isinstance(value, bool):
            raise InvalidInput(f"{source}: release.{key} must be true or false, got {value!r}")
    wait = _number(table, "auto_stage_wait_s", float, ReleasePolicy.auto_stage_wait_s, f"{source}: release")
    if not 0 <= wait <= 86400:
        raise InvalidInput(f"{source}: release.auto_stage_wait_s must be between 0 and 86400 (a day), got {wait:g}")
    return ReleasePolicy(**switches, auto_stage_wait_s=wait)
def parse_telemetry(table: Mapping[str, Any], source: str) -> TelemetryPolicy:
    """``[telemetry]``: retention in days (raw rows <= per-minute <= hourly aggregates) and the
    capture fraction of payloads, with ``[telemetry.capture]`` per endpoint."""
    where, defaults = f"{source}: telemetry", TelemetryPolicy()
    days = {key: _number(table, key, float, getattr(defaults, key), where)
            for key in ("raw_days", "minute_days", "hour_days")}
    if not 1 <= days["raw_days"] <= days["minute_days"] <= days["hour_days"] <= 3660:
        raise InvalidInput(f"{where}: need 1 <= raw_days <= minute_days <= hour_days <= 3660, got "
                           + ", ".join(f"{k} = {v:g}" for k, v in days.items()),
                           hint="Raw rows (with payloads) are the shortest kept, hourly aggregates the longest.")
    capture = table.get("capture", {})
    if not isinstance(capture, dict):
        raise InvalidInput(f"{where}.capture must be a table of endpoint = fraction ([telemetry.capture])")
    fractions = {"capture_fraction": _number(table, "capture_fraction", float, defaults.capture_fraction, where),
                 **{f"capture.{name}": _number(capture, name, float, None, where) for name in capture}}
    for key, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise InvalidInput(f"{where}.{key} must be between 0 and 1, got {value}")
    return TelemetryPolicy(**days, capture_fraction=fractions["capture_fraction"],
                           capture={name: fractions[f"capture.{name}"] for name in capture})


def parse_training(table: Mapping[str, Any], source: str) -> TrainingPolicy:
    """``[training.bounds]``: ``param = max`` or ``param = [min, max]``, for every estimator, and
    ``[training.bounds.ESTIMATOR]`` for one; the built-in bounds hold where the policy says nothing."""
    def bound(where: str, value: Any) -> tuple[float, float]:
        param = where.rpartition(".")[2]
        floor = DEFAULT_TRAINING_BOUNDS.get(param, (0, 0))[0]   # "max_depth = 10" keeps max_depth ≥ 1
        lo, hi = (floor, value) if not isinstance(value, list) else (tuple(value) if len(value) == 2 else (None, None))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi)) \
                or lo > hi:
            raise InvalidInput(f"{source}: [training.bounds] {where} must be a number (the maximum) or "
                               f"[minimum, maximum], not {value!r}")
        return lo, hi

    raw = table.get("bounds", {})
    if not isinstance(raw, dict):
        raise InvalidInput(f"{source}: [training] bounds must be a table ([training.bounds])")
    common = dict(DEFAULT_TRAINING_BOUNDS)
    per: dict[str, dict[str, tuple[float, float]]] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            per[key] = {p: bound(f"{key}.{p}", v) for p, v in value.items()}
        else:
            common[key] = bound(key, value)
    wait = _number(table, "wait_timeout_s", float, TrainingPolicy.wait_timeout_s, f"{source}: training")
    if not 0 < wait <= 7 * 86400:
        raise InvalidInput(f"{source}: training.wait_timeout_s must be more than 0 and at most a week "
                           f"(604800), got {wait:g}")
    return TrainingPolicy(bounds=common, per_estimator=per, wait_timeout_s=wait)


def parse_auth(table: Mapping[str, Any], source: str) -> AuthPolicy:
    """``[auth]``: ``provider`` and ``app_roles = {"Tollgate.QA" = "qa", ...}``."""
    app_roles = table.get("app_roles", {})
    if not isinstance(app_roles, dict):
        raise InvalidInput(f"{source}: [auth] app_roles must be a table of app role = Tollgate role")
    unknown = sorted({r for r in app_roles.values() if r not in ROLES})
    if unknown:
        raise InvalidInput(f"{source}: [auth] app_roles: unknown role(s) {', '.join(map(str, unknown))}; "
                           f"known: {', '.join(ROLES)}")
    local_identity = table.get("local_identity", "picker")
    if local_identity not in ("picker", "os-user"):
        raise InvalidInput(f"{source}: [auth] local_identity must be \"picker\" or \"os-user\", not {local_identity!r}")
    os_users = table.get("os_users", {})
    if not isinstance(os_users, dict) or not all(isinstance(v, str) and v.strip() for v in os_users.values()):
        raise InvalidInput(f"{source}: [auth.os_users] must map OS logins to identities (login = \"e-mail\")")
    return AuthPolicy(provider=str(table.get("provider", "microsoft")), app_roles=dict(app_roles),
                      local_identity=local_identity, os_users=dict(os_users),
                      os_user_domain=str(table.get("os_user_domain", "")).strip().lstrip("@"))
