"""Which deployment of a local endpoint answers a request: the gateway routes by it, the
supervisor audits the failovers it implies (one rule, read from the database by both).

* **Traffic split**: a request goes to a healthy deployment with traffic, chosen by weight.
* **Failover**: when no deployment with traffic is healthy (the only serving one crashed and
  is restarting), a healthy warm deployment of the same endpoint (0 %: the one a rollback
  would go to) answers instead, until one with traffic is healthy again — never one whose
  version was rolled back or rejected (those wait warm for nothing: a version taken out of
  service must not come back through a crash; requests fail with 503 meanwhile). Azure gets
  the same continuity from ``instance_count`` ≥ 2; a local deployment is one process.
"""
from __future__ import annotations

import hmac
import random
from dataclasses import dataclass, field

from ..entities import Stage
from .db import Database

# release stages whose versions never answer as a failover
WITHDRAWN = (Stage.ROLLED_BACK.value, Stage.REJECTED.value)


@dataclass(frozen=True)
class Target:
    deployment: str
    model: str           # name:version
    port: int
    traffic: int
    healthy: bool
    standby: bool = True   # may answer for the deployments with traffic (its version not withdrawn)


@dataclass(frozen=True)
class Routes:
    version: int
    keys: tuple[str, ...]
    targets: tuple[Target, ...]
    # derived once per routing table, not per request
    key_bytes: tuple[bytes, ...] = field(init=False, default=())
    live: tuple[Target, ...] = field(init=False, default=())
    warm: tuple[Target, ...] = field(init=False, default=())

    def __post_init__(self):
        object.__setattr__(self, "key_bytes", tuple(k.encode() for k in self.keys if k))
        object.__setattr__(self, "live", tuple(t for t in self.targets if t.traffic > 0 and t.healthy))
        object.__setattr__(self, "warm", tuple(sorted((t for t in self.targets if t.traffic == 0 and t.healthy and t.standby),
                                                      key=lambda t: t.deployment)))

    @property
    def failover(self) -> Target | None:
        """The warm deployment answering for the deployments with traffic, when none of them is healthy."""
        return self.warm[0] if self.warm and not self.live else None

    def pick(self, exclude: set[str] = frozenset()) -> Target | None:
        """A healthy deployment with traffic, by weight; else (all of them down, or ``exclude``d
        after failing this request) a healthy warm one."""
        live = [t for t in self.live if t.deployment not in exclude] if exclude else self.live
        if not live:
            return next((t for t in self.warm if t.deployment not in exclude), None)
        if len(live) == 1:
            return live[0]
        return random.choices(live, weights=[t.traffic for t in live])[0]

    def named(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.deployment == name), None)

    def authorized(self, authorization: bytes) -> bool:
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        return any(hmac.compare_digest(token, key) for key in self.key_bytes)


def load_routes(db: Database, endpoint: str) -> Routes:
    ep = db.one("SELECT primary_key, secondary_key, config_version FROM endpoints WHERE name = ?", (endpoint,))
    if ep is None:
        return Routes(-1, (), ())
    rows = db.query("SELECT d.name, d.model_name, d.model_version, d.port, d.traffic, d.state, r.stage"
                    " FROM deployments d LEFT JOIN releases r"
                    " ON r.model_name = d.model_name AND r.model_version = d.model_version"
                    " WHERE d.endpoint = ? AND d.desired = 'running' AND d.port IS NOT NULL", (endpoint,))
    targets = tuple(Target(r["name"], f"{r['model_name']}:{r['model_version']}", r["port"], r["traffic"],
                           r["state"] == "healthy", r["stage"] not in WITHDRAWN) for r in rows)
    return Routes(ep["config_version"], (ep["primary_key"], ep["secondary_key"]), targets)


def describe(routes: Routes) -> str:
    targets = ", ".join(f"{t.deployment} ({t.model}) {t.traffic}%{'' if t.healthy else ' not healthy'}"
                        for t in routes.targets)
    failover = routes.failover
    return (f"routing v{routes.version}: {targets or 'no deployments'}"
            + (f"; failover to {failover.deployment} ({failover.model})" if failover else ""))
