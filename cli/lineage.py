"""Where a run or a model version came from.

    tollgate.py provenance RUN_ID | MODEL:VERSION [--json]
"""
from __future__ import annotations

from services.entities import Provenance
from services.errors import InvalidInput, NotFound

from .output import EXIT_NO, EXIT_OK, emit


def register(add) -> None:
    """Add this module's subcommands (``add(name, func, help)`` returns the subparser)."""
    p = add("provenance", cmd_provenance,
            "who asked for a run, the code version and environment it trained with (a run id or MODEL:VERSION; "
            "exit 1 if none was recorded)")
    p.add_argument("ref", metavar="RUN_ID|MODEL:VERSION")


def _subject(ws, ref: str) -> tuple[str, Provenance | None, str | None]:
    """(what it is, its provenance, the run id) of a run id or ``MODEL:VERSION``."""
    name, sep, version = ref.rpartition(":")
    if sep and version.isdigit():
        mv = ws.models.get(name, int(version))
        return f"{mv.ref} (trained by run {mv.run_id or '?'})", mv.provenance, mv.run_id
    if sep:
        raise InvalidInput(f"{ref!r} is neither a run id nor MODEL:VERSION",
                           hint="e.g. tollgate.py provenance diabetes-regressor:3, or a run id from `runs`.")
    run = ws.jobs.get(ref)
    return f"run {run.id}", run.provenance, run.id


def describe(p: Provenance) -> list[tuple[str, str]]:
    """The provenance as label/value lines, as people read it."""
    packages = ", ".join(f"{k} {v}" for k, v in sorted(p.packages.items()))
    return [("requested by", p.requested_by + (f" ({p.trigger})" if p.trigger else "")),
            ("code", p.code_version or "not recorded"),
            ("code sha256", p.code_sha256 or "not recorded"),
            ("python", p.python or "not recorded"),
            ("packages", packages or "not recorded"),
            ("environment", p.environment or "not recorded")]


def cmd_provenance(ws, args) -> int:
    what, origin, run_id = _subject(ws, args.ref)
    if origin is None:
        emit(args, {"subject": args.ref, "provenance": None},
             f"{what}: no provenance recorded (trained before Tollgate recorded it)")
        return EXIT_NO
    lines = describe(origin)
    if run_id and origin.environment:
        try:
            ws.jobs.artifact(run_id, "environment.txt")
            lines.append(("full list", "the run's output environment.txt (pip freeze)"))
        except NotFound:
            pass
    width = max(len(k) for k, _ in lines)
    emit(args, {"subject": args.ref, "provenance": origin},
         what + "\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in lines))
    return EXIT_OK
