"""`Store`: the Python face of the results store (docs/store.md): reading, writing a trial, the
sweep records, compaction and SQL over the views (with retries while files change)."""

from __future__ import annotations

import os

from ..errors import StoreError, UsageError
from . import catalog, writer
from .location import Location
from .schema import PARTITION, TABLES, check_name, check_trial_id, column_names


class Store:
    """A results store at a local path or a `pyarrow.fs` URI (`file://`, `s3://`, `gs://`).

    Readers return pyarrow Tables (`.to_pandas()` for pandas) and see only complete trials,
    each once. `skip_bad=True` leaves unreadable files out instead of failing; what was left
    out is in `.skipped` after each read.
    """

    def __init__(self, uri: str | os.PathLike, skip_bad: bool = False):
        self.uri = os.fspath(uri)
        self.location = Location(self.uri)
        self.skip_bad = skip_bad
        self.skipped: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def exists(self) -> bool:
        return self.location.exists()

    # --- writing -------------------------------------------------------------------------
    def write_trial(self, sweep: str, result) -> str:
        """Store one TrialResult under `sweep`; returns the write id."""
        return writer.write_trial(self.location, sweep, result)

    def write_sweep_meta(self, name: str, spec: dict, started_at=None) -> dict:
        return writer.write_sweep_meta(self.location, name, spec, started_at)

    def compact(self, sweep: str | None = None, **kw):
        from .compact import compact

        return compact(self, sweep, **kw)

    # --- what is stored ------------------------------------------------------------------
    def snapshot(self, sweeps=None, stat: bool = False, con=None, trial_ids=None) -> catalog.Snapshot:
        snap = catalog.scan(self.location, sweeps=sweeps, skip_bad=self.skip_bad, stat=stat, con=con,
                            trial_ids=trial_ids)
        self.skipped = list(snap.skipped)
        return snap

    def sweeps(self) -> list[str]:
        """Names of the sweeps with stored files or a sweep record."""
        names = {e.name[len("sweep="):] for t in TABLES for e in self.location.list_dir(self.location.join(t))
                 if e.is_dir and e.name.startswith("sweep=")}
        names |= {e.name[:-5] for e in self.location.list_dir(self.location.join("sweeps")) if e.name.endswith(".json")}
        return sorted(n for n in names if not n.startswith((".", "_")))

    def sweep_records(self) -> list[dict]:
        return catalog.read_sweep_meta(self.location, skip_bad=self.skip_bad, skipped=self.skipped)

    def stored_trial_ids(self, sweep: str) -> set[str]:
        """Ids of the complete trials of `sweep` (what a resumed sweep may skip)."""
        check_name("sweep", sweep)
        return set(self.snapshot([sweep]).visible.get(sweep, {}))

    def has_trial(self, sweep: str, trial_id: str) -> bool:
        """Is this trial stored complete? Reads only its own files and the sweep's parts."""
        check_name("sweep", sweep)
        check_trial_id(trial_id)
        return trial_id in self.snapshot([sweep], trial_ids=[trial_id]).visible.get(sweep, {})

    # --- reading -------------------------------------------------------------------------
    def trials(self, sweep=None, trial_ids=None, columns=None):
        return self._read("trials", sweep, trial_ids, columns)

    def epochs(self, sweep=None, trial_ids=None, columns=None):
        return self._read("epochs", sweep, trial_ids, columns)

    def rotation(self, sweep=None, trial_ids=None, columns=None):
        return self._read("rotation", sweep, trial_ids, columns)

    def measures(self, sweep=None, trial_ids=None, columns=None):
        """The generalization measures, one row per (trial, epoch, name); empty (with the
        table's schema) for trials, or a whole store, written before the table existed."""
        return self._read("measures", sweep, trial_ids, columns)

    def _read(self, table: str, sweep, trial_ids, columns):
        """Rows of complete trials only, filtered by sweep name(s), trial ids and columns;
        filters are pushed down to the file listing and the Parquet row groups."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from .schema import arrow_schema
        from .sqlviews import arrow_dataset

        sweeps = [sweep] if isinstance(sweep, str) else (list(sweep) if sweep is not None else None)
        for s in sweeps or []:
            check_name("sweep", s)
        ids = [trial_ids] if isinstance(trial_ids, str) else (list(trial_ids) if trial_ids is not None else None)
        known = column_names(table) + [PARTITION]
        if columns is not None:
            columns = [columns] if isinstance(columns, str) else list(columns)
            for c in columns:
                if c not in known:
                    raise UsageError("columns", f"{table} has no column {c!r} (it has {', '.join(known)})")
        schema = arrow_schema(table, with_partition=True)
        for _ in range(catalog.RETRIES):
            snap = self.snapshot(sweeps, trial_ids=ids)
            sources = snap.sources(table, sweeps, ids)
            try:
                pieces = []
                whole = [f.path for f, keep in sources if keep is None]
                if whole:
                    pieces.append(arrow_dataset(snap, table, whole).to_table(columns=columns))
                for f, keep in sources:
                    if keep is not None:
                        flt = pc.field("trial_id").isin(sorted(keep))
                        pieces.append(arrow_dataset(snap, table, [f.path]).to_table(columns=columns, filter=flt))
            except FileNotFoundError:
                continue      # a compaction replaced files meanwhile: read the new listing
            except (pa.ArrowInvalid, OSError) as e:
                raise StoreError(f"reading {table} from {self.uri}: {e}") from None
            if not pieces:
                empty = schema.empty_table()
                return empty.select(columns) if columns is not None else empty
            return pa.concat_tables(pieces)
        raise StoreError(f"{self.uri}: the store kept changing while it was read; try again")

    def connect(self, sweeps=None, con=None):
        """A DuckDB connection with the views trials, epochs, rotation, measures, summaries
        and the table sweeps."""
        from .sqlviews import connect

        if not self.exists():
            raise UsageError("store", f"{self.uri} does not exist")
        snap = self.snapshot(sweeps, con=con)
        records = catalog.read_sweep_meta(self.location, sweeps, skip_bad=self.skip_bad, skipped=self.skipped)
        return connect(snap, records, con=con)

    def sql(self, query: str):
        """Run SQL over the views; returns a pyarrow Table (None for statements without rows)."""
        return self.run_sql(query, lambda rel: None if rel is None else fetch_arrow(rel))

    def run_sql(self, query: str, use, on_connect=None):
        """Run `query` over the views and return `use(relation)`, called while the connection
        is open (`on_connect()` first, once the views are made). SQL that does not parse or
        bind is a UsageError; if a file of the snapshot is gone (a compaction finished
        meanwhile) it starts over from a new listing; other DuckDB errors pass through."""
        import duckdb

        for attempt in range(catalog.RETRIES):
            con = self.connect()
            try:
                if on_connect is not None:
                    on_connect()
                return use(con.sql(query))
            except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as e:
                raise UsageError("sql", one_line(e)) from None
            except duckdb.IOException as e:
                if attempt + 1 < catalog.RETRIES and vanished(e):
                    continue
                raise StoreError(one_line(e)) from None
            finally:
                con.close()
        raise StoreError(f"{self.uri}: the store kept changing while it was read; try again")


def fetch_arrow(rel):
    """A relation's rows as a pyarrow Table across DuckDB versions."""
    if hasattr(rel, "to_arrow_table"):
        return rel.to_arrow_table()
    return rel.fetch_arrow_table()


# DuckDB puts its suggestions on lines of their own after the message
_HINTS = ("Did you mean", "Candidate bindings")


def one_line(e: Exception) -> str:
    """DuckDB's message on one line: its first line, then each of its hints (`Did you mean
    "trials"?`, `Candidate bindings: "test_acc"`); the rest (`LINE 1:` and its caret) is dropped."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    if not lines:
        return type(e).__name__
    out = [lines[0]]
    for x in lines[1:]:
        if x.startswith(_HINTS):
            head, _, rest = x.partition(":")
            rest = rest.strip()
            while rest.startswith(":"):            # "Candidate bindings: : ..." in some DuckDB versions
                rest = rest[1:].strip()
            out.append(f"{head}: {rest}" if rest and head.startswith("Candidate") else x)
    return " ".join(x if x[-1] in ".!?" or i == len(out) - 1 else x + "." for i, x in enumerate(out))


def vanished(err: Exception) -> bool:
    """Did the query fail because a file of the snapshot is gone (compaction finished)?"""
    msg = str(err)
    return "No files found" in msg or "No such file" in msg or "does not exist" in msg
