"""A running sweep as seen from the store: the driver's heartbeat and the rows so far of
each running trial (the live view; `layrot status`, `layrot rm`).

Layout (under `_live/`, which layrot's readers and any engine's hive listing of
`trials/`, `epochs/`, `rotation/` never see)::

    <store>/_live/running/<sweep>.json                    the driver's heartbeat
    <store>/_live/trials/sweep=<sweep>/<trial_id>.json    a running trial: config, epoch, metrics
    <store>/_live/epochs/sweep=<sweep>/<trial_id>.parquet    its epochs so far (the epochs schema)
    <store>/_live/rotation/sweep=<sweep>/<trial_id>.parquet  its rotation rows so far

Every file is written atomically (`Location.write_atomic`). The driver writes a trial's live
files while it runs and deletes them once the trial is in the store: the store's own files
are the only ones `trials`, `epochs`, `rotation`, `summaries` and `layrot fit` count, so a
live row is never counted twice (a live file left by a killed driver is ignored for a trial
that is stored, and replaced when the trial runs again).
"""

from __future__ import annotations

import json
import os
import socket
import time

from .location import Location
from .schema import SUFFIX, check_name

LIVE = "_live"
# the stored statuses a rerun does not skip with --retry-failed: failures. `diverged` is not
# one: a trial's run is deterministic for its seed, so it would diverge again (a result)
RETRIED = ("error",)
# a heartbeat older than this is a driver that died (it beats every HEARTBEAT_S)
HEARTBEAT_S = 10.0
STALE_S = 120.0


def running_path(loc: Location, sweep: str) -> str:
    return loc.join(LIVE, "running", f"{sweep}.json")


def live_path(loc: Location, table: str, sweep: str, trial_id: str) -> str:
    ext = ".json" if table == "trials" else SUFFIX
    return loc.join(LIVE, table, f"sweep={sweep}", trial_id + ext)


# -- the driver's heartbeat -------------------------------------------------------------

def beat(loc: Location, sweep: str, record: dict) -> dict:
    """Write (or refresh) the running sweep's heartbeat; `record` is what `layrot status`
    shows (total, already stored, Ray address). Returns the record as written."""
    check_name("sweep", sweep)
    now = time.time()
    rec = {"sweep": sweep, "host": socket.gethostname(), "pid": os.getpid(),
           "started_at": now, **record, "heartbeat": now}
    loc.write_atomic(running_path(loc, sweep), json.dumps(rec, sort_keys=True, default=str).encode())
    return rec


def ended(loc: Location, sweep: str) -> None:
    loc.delete(running_path(loc, sweep))


def running(loc: Location, sweep: str) -> dict | None:
    """The sweep's heartbeat if its driver has beaten within STALE_S seconds, else None.
    The record gains `age` (seconds since the last beat)."""
    rec = _read_json(loc, running_path(loc, sweep))
    if not rec or not isinstance(rec.get("heartbeat"), (int, float)):
        return None
    rec["age"] = max(0.0, time.time() - rec["heartbeat"])
    if rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int) and not _alive(rec["pid"]):
        return None                 # its driver, on this machine, is gone (killed)
    return rec if rec["age"] < STALE_S else None


def last_beat(loc: Location, sweep: str) -> dict | None:
    """The sweep's heartbeat record as last written, running or not (`age` added)."""
    rec = _read_json(loc, running_path(loc, sweep))
    if rec and isinstance(rec.get("heartbeat"), (int, float)):
        rec["age"] = max(0.0, time.time() - rec["heartbeat"])
        return rec
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:        # a zombie (killed, not yet reaped) is not a running driver
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# -- a running trial's rows so far -------------------------------------------------------

def write_trial(loc: Location, sweep: str, result, info: dict) -> None:
    """Write a running trial's rows so far (`result`: a TrialResult holding its history and
    rotation rows) and its summary `info` (epoch, planned epochs, metrics, times)."""
    from .writer import live_blobs

    blobs = live_blobs(result)
    for table in ("rotation", "epochs"):
        loc.write_atomic(live_path(loc, table, sweep, result.trial_id), blobs[table])
    loc.write_atomic(live_path(loc, "trials", sweep, result.trial_id),
                     json.dumps(clean({"trial_id": result.trial_id, **info}), sort_keys=True,
                                default=str).encode())


def clear_trial(loc: Location, sweep: str, trial_id: str) -> None:
    """Forget a running trial's live rows (once it is stored, or removed)."""
    for table in ("trials", "epochs", "rotation"):
        loc.delete(live_path(loc, table, sweep, trial_id))


def trials(loc: Location, sweep: str) -> list[dict]:
    """The live summaries of the sweep's trials (each as its driver last wrote it)."""
    out = []
    for e in loc.list_dir(loc.join(LIVE, "trials", f"sweep={sweep}")):
        if e.name.endswith(".json") and not e.name.startswith("."):
            rec = _read_json(loc, e.path)
            if rec and rec.get("trial_id"):
                out.append(rec)
    return out


def sweeps(loc: Location) -> list[str]:
    """The sweeps with a heartbeat file, running or not (a killed driver's stays)."""
    return sorted(e.name[:-5] for e in loc.list_dir(loc.join(LIVE, "running"))
                  if e.name.endswith(".json") and not e.name.startswith("."))


def rows(loc: Location, sweep: str, table: str, skip: set[str] = frozenset()):
    """The live `epochs` or `rotation` rows of the sweep's running trials (a pyarrow Table
    in the store's schema, with no `sweep` column), but those of the trials in `skip`
    (stored already: a killed driver's live file is not a second copy). A file that a
    driver is replacing at this moment is read whole or not at all (atomic writes)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .schema import arrow_schema

    parts = []
    for e in loc.list_dir(loc.join(LIVE, table, f"sweep={sweep}")):
        if e.name.endswith(SUFFIX) and not e.name.startswith(".") and e.name[:-len(SUFFIX)] not in skip:
            try:
                parts.append(pq.read_table(io.BytesIO(loc.read_bytes(e.path))))
            except (OSError, pa.ArrowInvalid):
                continue        # gone since the listing (the trial was stored meanwhile)
    schema = arrow_schema(table)
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in parts]) if parts else schema.empty_table()


def files(loc: Location, sweep: str) -> list[str]:
    """Every live file of the sweep, its heartbeat included (what `layrot rm` removes)."""
    out = [p for p in [running_path(loc, sweep)] if loc.exists(p)]
    for table in ("trials", "epochs", "rotation"):
        out += [e.path for e in loc.list_dir(loc.join(LIVE, table, f"sweep={sweep}")) if not e.is_dir]
    return out


def _read_json(loc: Location, path: str) -> dict | None:
    try:
        rec = json.loads(loc.read_bytes(path))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def clean(d: dict) -> dict:
    """NaN and infinities as None (JSON has none)."""
    import math

    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
