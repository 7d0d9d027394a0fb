"""JUnit XML reports of ``gate``, ``deploy`` and ``smoke-test`` (``--junit FILE``), for CI test tabs.

The shape both CI systems read: Azure DevOps' ``PublishTestResults@2`` (``testResultsFormat:
JUnit``) and GitHub's JUnit reporters (``dorny/test-reporter`` with ``reporter: java-junit``,
``mikepenz/action-junit-report``)::

    <testsuites name="tollgate" tests=… failures=… errors=… time=…>
      <testsuite name="tollgate gate" tests=… failures=… errors=… skipped=… time=… timestamp=…>
        <properties><property name="model" value="diabetes-regressor:7"/>…</properties>
        <testcase classname="tollgate.gate" name="rmse" time="0"/>
        <testcase classname="tollgate.gate" name="r2" time="0"><failure message="…" type="…">…</failure></testcase>
      </testsuite>
    </testsuites>

One suite per command, one case per gate rule, per smoke case (and the latency check), per
deploy step. A failed check is a ``<failure>`` with its message; an error that stopped the
command (exit 2) is an ``<error>`` case, so a report exists whatever the outcome. The XML is
built with ``xml.etree`` (every attribute and text escaped) and written atomically (a
temporary file in the same folder, then renamed): a CI step that publishes it never reads half
a file. ``--junit`` changes no exit code.
"""
from __future__ import annotations

import os
import tempfile
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from services.entities import GateDecision, Plan, ProgressStep, SmokeTestResult
from services.errors import ServiceError

# characters XML 1.0 cannot carry at all, even escaped (control characters but tab, newline, return)
_NOT_XML = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF])


# placeholders while a deploy step runs or after it failed, until the command's error names why
_RUNNING, _FAILED = "\0running", "\0failed"


def _xml_text(text: object) -> str:
    return str(text).translate(_NOT_XML)


@dataclass
class Case:
    name: str
    seconds: float = 0.0
    failure: str | None = None         # a check that did not pass: its message
    error: str | None = None           # the command could not do it: its message
    skipped: str | None = None         # not reached (an earlier step failed)
    output: str = ""                   # details, shown by the CI's test tab


@dataclass
class Suite:
    """The cases of one command, as it runs; ``write`` turns them into the report."""
    command: str
    properties: dict[str, str] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    began: float = field(default_factory=time.monotonic)

    def case(self, name: str, *, failure: str | None = None, seconds: float = 0.0, output: str = "") -> Case:
        c = Case(name, seconds=seconds, failure=failure, output=output)
        self.cases.append(c)
        return c

    def element(self) -> ET.Element:
        count = {"tests": len(self.cases), "failures": sum(c.failure is not None for c in self.cases),
                 "errors": sum(c.error is not None for c in self.cases),
                 "skipped": sum(c.skipped is not None for c in self.cases)}
        suite = ET.Element("testsuite", {"name": f"tollgate {self.command}", **{k: str(v) for k, v in count.items()},
                                         "time": f"{time.monotonic() - self.began:.3f}",
                                         "timestamp": self.started.strftime("%Y-%m-%dT%H:%M:%S")})
        if self.properties:
            props = ET.SubElement(suite, "properties")
            for key, value in self.properties.items():
                ET.SubElement(props, "property", name=_xml_text(key), value=_xml_text(value))
        for c in self.cases:
            case = ET.SubElement(suite, "testcase", classname=f"tollgate.{self.command}", name=_xml_text(c.name),
                                 time=f"{c.seconds:.3f}")
            for tag, message in (("failure", c.failure), ("error", c.error)):
                if message is not None:
                    first = message.splitlines()[0] if message else ""
                    outcome = ET.SubElement(case, tag, message=_xml_text(first), type=tag)
                    outcome.text = _xml_text(message)
            if c.skipped is not None:
                ET.SubElement(case, "skipped", message=_xml_text(c.skipped))
            if c.output:
                ET.SubElement(case, "system-out").text = _xml_text(c.output)
        return suite

    def write(self, path: Path) -> None:
        suite = self.element()
        root = ET.Element("testsuites", {"name": "tollgate", **{k: suite.get(k) for k in
                                                                  ("tests", "failures", "errors", "time")}})
        root.append(suite)
        ET.indent(root)
        write_atomically(path, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` as ``path``, all or nothing: written beside it under a temporary name, then renamed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def report(path: str | None, command: str) -> Iterator[Suite | None]:
    """``with report(args.junit, "gate") as suite:`` — the command adds its cases to ``suite``
    (``None`` without ``--junit``); the report is written when the block ends, however it ends.
    An error that ends the command becomes an ``<error>`` case, and cases not reached are skipped;
    the error itself still propagates (the exit code stays the command's)."""
    if not path:
        yield None
        return
    target = Path(path)
    if target.is_dir() or not target.parent.is_dir():
        raise ServiceError(f"--junit {path}: not a file in an existing folder",
                           hint="Name a file to write, e.g. --junit test-results/gate.xml (create the folder first).")
    suite = Suite(command)
    try:
        yield suite
    except ServiceError as e:
        message = str(e) + (f"\n{e.hint}" if e.hint else "")
        stopped = [c for c in suite.cases if c.skipped in (_RUNNING, _FAILED)]
        for c in stopped:                         # the step the error ended: a failed check
            c.skipped, c.failure = None, message
        if not stopped:                           # refused before any step: the command's error
            suite.cases.append(Case(command, error=message))
        raise
    finally:
        for c in suite.cases:
            if c.skipped in (_RUNNING, _FAILED):
                c.skipped, c.failure = None, "failed"
        try:
            suite.write(target)
        except OSError as e:
            raise ServiceError(f"cannot write the JUnit report {path}: {e}") from e


def add_option(parser) -> None:
    parser.add_argument("--junit", metavar="FILE", help="also write the result as JUnit XML to FILE (for CI test "
                                                         "reports); the exit code does not change")


# --- what each command reports -----------------------------------------------------------

def gate_cases(suite: Suite | None, gate: GateDecision, candidate: str, improvement: str | None) -> None:
    """One case per gate rule, and one for "must improve on the champion" (``[gate]
    require_improvement``) when there is a champion."""
    if suite is None:
        return
    suite.properties.update({"model": candidate, "champion": gate.champion or "(none)",
                             "evaluated_on": gate.evaluated_on or "", "decision": "pass" if gate.passed else "fail"})
    for check in gate.checks:
        suite.case(check.metric, failure=None if check.passed else check.reason, output=check.reason)
    rule_reasons = {c.reason for c in gate.checks}
    others = [r for r in gate.reasons if r not in rule_reasons] if not gate.passed else []
    if improvement and gate.champion:
        name = f"{improvement} improves on the champion"
        suite.case(name, failure="; ".join(others) or None,
                   output="; ".join(others) if others else f"better than champion {gate.champion} on {improvement}")
    elif others:
        suite.case("decision", failure="; ".join(others))


def smoke_cases(suite: Suite | None, result: SmokeTestResult) -> None:
    """One case per smoke case, and one for the latency measurement when it was taken."""
    if suite is None:
        return
    suite.properties.update({"model": f"{result.model_name}:{result.model_version}", "endpoint": result.endpoint,
                             "deployment": result.deployment, "summary": result.summary,
                             "smoke_test_id": str(result.id)})
    for c in result.cases:
        suite.case(c.name, failure=None if c.passed else c.detail, output=c.detail)
    if result.latency is not None:
        suite.case("latency", failure=None if result.latency.passed else result.latency.reason,
                   output=result.latency.reason)


def step_listener(suite: Suite | None):
    """A progress listener that makes each deploy step a case as it starts and ends; a step that
    fails (or is still running when the command stops) is a failure with the error's message."""
    open_cases: dict[str, Case] = {}

    def listen(step: ProgressStep) -> None:
        if suite is None:
            return
        if step.state == "running" and step.key not in open_cases:
            open_cases[step.key] = suite.case(step.label)
            open_cases[step.key].skipped = _RUNNING
        case = open_cases.get(step.key)
        if case is None or step.state == "running":
            return
        case.name, case.seconds = step.label, step.seconds or 0.0
        case.skipped = _FAILED if step.state == "failed" else None   # the error's message comes with the error
    return listen


def plan_case(suite: Suite | None, plan: Plan) -> None:
    """``--dry-run``: the plan as one case, failed when the action would be refused now."""
    if suite is not None:
        suite.case(f"plan: {plan.title}", failure=plan.refused, output="\n".join(plan.changes))


__all__ = ["add_option", "report", "Suite", "Case", "gate_cases", "smoke_cases", "step_listener", "plan_case", "write_atomically"]
