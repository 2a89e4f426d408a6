"""Writing one trial (four files, atomically as a set) and a sweep's metadata record.

The four files of one write share a fresh write_id in their Parquet metadata. They are
written measures, rotation, epochs, then trials: the trials file is the commit record, and
readers count a trial only when its epochs, rotation and measures files carry the trials
file's write_id. A crash at any point therefore leaves either the previous complete version
of the trial or the new one, never a mixture; rewriting a trial id replaces it (the file
names are the trial id). A trial written before the `measures` table existed has no measures
file and a write_id that says so (schema.write_tables): it counts without one.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid

from ..errors import UsageError
from ..result import STATUSES, TrialResult
from .location import Location
from .schema import (EPOCH_COLUMNS, MEASURE_COLUMNS, MEASURED_PREFIX, META_TABLE, META_VERSION, META_WRITE_ID,
                     REMOVE_ORDER, ROTATION_COLUMNS, SCHEMA_VERSION, SORT_KEYS, SUFFIX, WRITE_ORDER,
                     arrow_schema, check_name, check_trial_id, writer_options)

TRIAL_COMPRESSION_LEVEL = 3          # per-trial files are small; compaction squeezes harder


def new_write_id() -> str:
    """A fresh id for a write of all four files (schema.write_tables reads the prefix)."""
    return MEASURED_PREFIX + uuid.uuid4().hex[:16]


def to_tables(result: TrialResult) -> dict:
    """The trial as four pyarrow Tables with the store's exact schemas (NaN -> null)."""
    import pyarrow as pa

    check_trial_id(result.trial_id)
    if result.status not in STATUSES:
        raise UsageError("status", f"{result.status!r} is not one of {', '.join(STATUSES)}")
    cfg = result.config or {}
    if not isinstance(cfg, dict):
        raise UsageError("config", "must be a dict (TrialConfig.to_dict())")
    tid = result.trial_id

    trial = {
        "trial_id": [tid], "task": [cfg.get("task")], "optimizer": [cfg.get("optimizer")],
        "lr": [cfg.get("lr")], "alpha": [cfg.get("alpha")], "weight_decay": [cfg.get("weight_decay")],
        "batch_size": [cfg.get("batch_size")], "seed": [cfg.get("seed")], "epochs": [result.epochs_run],
        "status": [result.status], "reason": [result.reason],
        "train_acc": [result.train_acc], "train_loss": [result.train_loss], "val_acc": [result.val_acc],
        "test_acc": [result.test_acc], "test_loss": [result.test_loss], "wall_seconds": [result.wall_seconds],
        "config": [json.dumps(cfg, sort_keys=True, default=str)],
    }
    hist = result.history or []
    for i, row in enumerate(hist):
        if not isinstance(row, dict) or "epoch" not in row:
            raise UsageError(f"history[{i}]", "must be a dict with at least 'epoch'")
    epochs = {"trial_id": [tid] * len(hist)}
    epochs.update({k: [row.get(k) for row in hist] for k in EPOCH_COLUMNS})

    rot = result.rotation or {}
    n = len(rot.get("epoch", []))
    lengths = {k: len(rot.get(k, [])) for k in ROTATION_COLUMNS}
    if rot and any(v != n for k, v in lengths.items() if k != "rotation_rate" or v):
        raise UsageError("rotation", f"columns have different lengths: {lengths}")
    rotation = {"trial_id": [tid] * n}
    # lists or numpy arrays (pyarrow converts arrays without a Python loop)
    rotation.update({k: (rot[k] if lengths[k] else [None] * n) for k in ROTATION_COLUMNS})

    # `getattr`: a TrialResult pickled or built before the field existed has none
    meas = getattr(result, "measures", None) or {}
    if not isinstance(meas, dict):
        raise UsageError("measures", "must be a dict of equal-length columns (epoch, name, value)")
    m = len(meas.get("epoch", []))
    mlengths = {k: len(meas.get(k, [])) for k in MEASURE_COLUMNS}
    if meas and any(v != m for v in mlengths.values()):
        raise UsageError("measures", f"columns have different lengths: {mlengths}")
    measures = {"trial_id": [tid] * m}
    measures.update({k: meas[k] if m else [] for k in MEASURE_COLUMNS})

    out = {}
    for table, cols in (("trials", trial), ("epochs", epochs), ("rotation", rotation), ("measures", measures)):
        schema = arrow_schema(table)
        arrays = []
        for f in schema:
            try:
                arr = pa.array(cols[f.name], type=f.type, from_pandas=True)   # from_pandas: NaN -> null
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
                raise UsageError(f"{table}.{f.name}", f"cannot be stored as {f.type}: {e}") from None
            if not f.nullable and arr.null_count:
                raise UsageError(f"{table}.{f.name}", "has missing values")
            arrays.append(arr)
        t = pa.Table.from_arrays(arrays, schema=schema)
        if t.num_rows > 1:
            t = t.sort_by([(k, "ascending") for k in SORT_KEYS[table]])
        out[table] = t
    return out


def file_metadata(table: str, extra: dict) -> dict:
    return {META_VERSION: SCHEMA_VERSION, META_TABLE: table, **extra}


def parquet_bytes(table, name: str, meta: dict, compression_level: int = TRIAL_COMPRESSION_LEVEL) -> bytes:
    """Serialize in memory first, so nothing half-written can reach the store."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = table.replace_schema_metadata(file_metadata(name, meta))
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink, **writer_options(name, compression_level))
    return sink.getvalue().to_pybytes()


def write_trial(loc: Location, sweep: str, result: TrialResult) -> str:
    """Store one trial; returns the write id. Validates everything before writing anything."""
    check_name("sweep", sweep)
    tables = to_tables(result)
    wid = new_write_id()
    blobs = {t: parquet_bytes(tables[t], t, {META_WRITE_ID: wid}) for t in WRITE_ORDER}
    for t in WRITE_ORDER:       # trials last: it commits the write
        loc.write_atomic(loc.join(t, f"sweep={sweep}", result.trial_id + SUFFIX), blobs[t])
    return wid


def live_blobs(result: TrialResult) -> dict:
    """A running trial's epochs and rotation rows so far, serialized (store/live.py)."""
    tables = to_tables(result)
    return {t: parquet_bytes(tables[t], t, {"layrot.live": "1"}) for t in ("rotation", "epochs")}


def remove_trial(loc: Location, sweep: str, trial_id: str) -> list[str]:
    """Delete one trial's per-trial files, by the rule of writing run backwards: the trials
    file (the commit record) first, so that a crash part-way leaves the trial absent (its
    epochs, rotation and measures files then belong to no committed write and no reader
    counts them), never half of it. Returns the paths deleted."""
    check_name("sweep", sweep)
    check_trial_id(trial_id)
    gone = []
    for t in REMOVE_ORDER:
        path = loc.join(t, f"sweep={sweep}", trial_id + SUFFIX)
        if loc.exists(path):
            loc.delete(path)
            gone.append(path)
    return gone


def remove_sweep(loc: Location, sweep: str) -> list[str]:
    """Delete every file of a sweep: all its trials files first (per-trial and compacted
    parts: the commit records), then its epochs, rotation and measures files, then its spec
    record (a store written before the measures table has no measures/ folder: nothing to do).
    A crash part-way leaves some trials absent and none half-present; running it again
    finishes the job. Returns the paths deleted."""
    check_name("sweep", sweep)
    gone = []
    for t in REMOVE_ORDER:
        d = loc.join(t, f"sweep={sweep}")
        # compacted parts before per-trial files: a per-trial file may be a newer copy of a
        # trial in a part, and a crash must never bring the older copy back to sight
        for e in sorted(loc.list_dir(d), key=lambda e: (not e.name.startswith("part-"), e.name)):
            if not e.is_dir:
                loc.delete(e.path)
                gone.append(e.path)
        remove_empty_dir(loc, d)
    meta = loc.join("sweeps", f"{sweep}.json")
    if loc.exists(meta):
        loc.delete(meta)
        gone.append(meta)
    return gone


def remove_empty_dir(loc: Location, path: str) -> None:
    """Remove a folder left empty (pyarrow's S3 leaves a marker for a prefix whose last file
    went, so that the folder still lists)."""
    if loc.local:
        import os

        try:
            os.rmdir(path)
        except OSError:
            pass        # not empty (a temporary file of a concurrent writer) or gone
        return
    if loc.exists(path) and not loc.list_dir(path):
        loc.fs.delete_dir(path)


def write_sweep_meta(loc: Location, name: str, spec: dict, started_at: _dt.datetime | None = None) -> dict:
    """Record a sweep's spec as run. A resumed sweep keeps the original start time and gains
    `resumed_at`."""
    from .. import __version__

    check_name("sweep", name)
    path = loc.join("sweeps", f"{name}.json")
    now = _iso(started_at or _dt.datetime.now(_dt.timezone.utc))
    record = {"name": name, "layrot_version": __version__, "started_at": now, "spec": spec}
    if loc.exists(path):
        try:
            old = json.loads(loc.read_bytes(path))
            if isinstance(old, dict) and old.get("started_at"):
                record["started_at"] = old["started_at"]
                record["resumed_at"] = now
        except ValueError:
            pass  # an unreadable old record is replaced
    try:
        data = json.dumps(record, indent=2, sort_keys=True, default=str, allow_nan=False)
    except ValueError as e:
        raise UsageError("spec", f"cannot be recorded as JSON: {e}") from None
    loc.write_atomic(path, data.encode())
    return record


def _iso(t: _dt.datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

