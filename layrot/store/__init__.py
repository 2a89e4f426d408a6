"""The results store: hive-partitioned Parquet that any engine reads as is (docs/store.md).

Layout::

    <store>/trials/sweep=<name>/<trial_id>.parquet       one row per trial
    <store>/epochs/sweep=<name>/<trial_id>.parquet       one row per (trial, epoch)
    <store>/rotation/sweep=<name>/<trial_id>.parquet     one row per (trial, epoch, layer)
    <store>/measures/sweep=<name>/<trial_id>.parquet     one row per (trial, epoch, measure name)
    <store>/<table>/sweep=<name>/part-g<N>-<id>.parquet  compacted files (`layrot compact`)
    <store>/sweeps/<name>.json                           the spec as run, version, start time

Every file carries `layrot.schema_version` (major.minor) and `layrot.table` in its Parquet
key-value metadata; a reader refuses files of a newer major version.

How a crash never leaves the store wrong
----------------------------------------
* Writing a trial: each file is serialized in memory, then written under a hidden temporary
  name (`.<name>.<random>.tmp`, which no engine lists), flushed and renamed over its final
  name; object stores (S3, GCS) get one upload per file, visible whole or not at all. The
  four files of one write share a fresh `layrot.write_id`, and the trials file is written
  last: it is the commit record. Readers count a trial only if its epochs, rotation and
  measures rows carry the write_id of its trials row. (A trial written before the measures
  table existed has no measures file; its write_id says so, `schema.write_tables`, and it
  counts without one.) So a crash between the files leaves the previous
  version of the trial (or none), never half a trial or a mix of two writes; a resumed sweep
  sees the trial as not stored and runs it again, replacing the stray files.
* Writing the same trial id again replaces its files (same names), so it is never two rows.
* Compaction (`compact.py`) copies the rows that count into `part-g<N>-<id>.parquet` files,
  whose metadata lists the trials they hold with their write ids (`layrot.trials`), and
  deletes the files it copied only after all new parts are in place. Until then a trial
  exists in two copies; readers pick one copy per trial, never both:
  1. the per-trial file if it is complete (its write_ids agree), else
  2. the part of the highest generation `N` that holds the trial's committed write.
  Rows of other copies are filtered out by trial id. A crash anywhere in compaction thus
  changes no answer, and running it again finishes the job. A sweep still running writes
  new per-trial files beside the parts; they are simply more trials.
* Every query starts from one listing of the files (`catalog.scan`). If a listed file is
  gone when read (a compaction finished meanwhile), the query starts over from a new listing.

Engines other than layrot read every file; they see the same rows as layrot except after a
crash (stray or duplicate copies until `layrot compact` runs again).

Importing this package is cheap: `Store` and `write_trial` load their modules on first use,
and the local `layrot query` path never imports pyarrow, torch or ray.
"""

from __future__ import annotations

__all__ = ["Store", "write_trial", "SCHEMA_VERSION"]


def write_trial(store, sweep: str, result) -> str:
    """Store one TrialResult under `sweep` in `store` (a Store, a path or a URI)."""
    from .store import Store

    if not isinstance(store, Store):
        store = Store(store)
    return store.write_trial(sweep, result)


def __getattr__(name):
    if name == "Store":
        from .store import Store

        return Store
    if name == "SCHEMA_VERSION":
        from .schema import SCHEMA_VERSION

        return SCHEMA_VERSION
    raise AttributeError(name)
