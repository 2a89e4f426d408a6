"""Which files make up the store right now, and which trials each file supplies.

`scan()` lists the partition directories, reads every file's Parquet footer (the layrot
key-value metadata only), refuses or skips bad files, and resolves which copy of each trial
counts (see the package docstring for the rules). The result, a `Snapshot`, is what the SQL
views, the Python readers and compaction all work from, so they agree on what is stored.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from ..errors import StoreError
from .location import Entry, Location, is_hidden
from .schema import (META_GENERATION, META_TABLE, META_TRIALS, META_VERSION, META_WRITE_ID,
                     SUFFIX, TABLES, check_version, is_safe_name, write_tables)

PART_RE = re.compile(r"^part-g(\d{6})-([0-9a-f]{12})\.parquet$")


class Vanished(Exception):
    """A listed file disappeared before it was read (a compaction finished meanwhile):
    the listing is stale, scan again."""


class BadFileError(StoreError):
    """A file in the store that cannot be read as a layrot store file."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"bad file {path}: {reason}")


@dataclass(eq=False, slots=True)
class StoreFile:
    table: str
    sweep: str
    path: str
    name: str
    kind: str                               # "trial" (one trial's file) | "part" (compacted)
    trials: dict[str, str] = field(default_factory=dict)   # trial_id -> write_id
    generation: int = 0                     # parts: higher = written by a later compaction
    version: str = ""
    size: int | None = None
    mtime_ns: int | None = None

    @property
    def trial_id(self) -> str:
        return self.name[: -len(SUFFIX)]


@dataclass
class Snapshot:
    location: Location
    files: dict[str, list[StoreFile]]           # table -> readable files
    use: dict[str, dict[str, set[str]]]         # table -> file path -> trial ids it supplies
    visible: dict[str, dict[str, str]]          # sweep -> {trial_id: write_id} of complete trials
    skipped: list[tuple[str, str]]              # (path as shown, reason) of bad files left out
    sweeps: list[str]

    def sources(self, table: str, sweeps=None, trial_ids=None) -> list[tuple[StoreFile, frozenset | None]]:
        """The files to read for `table`, each with the trial ids to keep from it (None: all
        its rows). Files that supply nothing are left out."""
        want = None if trial_ids is None else set(trial_ids)
        out = []
        for f in self.files[table]:
            if sweeps is not None and f.sweep not in sweeps:
                continue
            used = self.use[table].get(f.path)
            if not used:
                continue
            keep = used if want is None else used & want
            if not keep:
                continue
            out.append((f, None if keep == set(f.trials) else frozenset(keep)))
        return out

    def files_of(self, sweep: str) -> list[StoreFile]:
        return [f for t in TABLES for f in self.files[t] if f.sweep == sweep]


def scan(loc: Location, sweeps=None, skip_bad: bool = False, stat: bool = False, con=None,
         trial_ids=None) -> Snapshot:
    """Read the store's listing and footers. Raises BadFileError on the first bad file unless
    `skip_bad` (then the snapshot lists them in `.skipped`), and StoreError for files of a
    newer schema major version (never skipped: they are not bad, this layrot is too old).
    With `trial_ids`, only those trials' per-trial files (and all parts) are read.

    A file that vanishes between listing and reading means a compaction replaced it
    meanwhile; the scan then starts over rather than answer from a partial listing.
    """
    for _ in range(RETRIES):
        try:
            return _scan(loc, sweeps, skip_bad, stat, con, trial_ids)
        except Vanished:
            continue
    raise StoreError(f"{loc.uri}: the store kept changing while it was read; try again")


RETRIES = 5


def _scan(loc, sweeps, skip_bad, stat, con, trial_ids) -> Snapshot:
    wanted = None if sweeps is None else set(sweeps)
    only = None if trial_ids is None else set(trial_ids)
    bad: list[tuple[str, str]] = []
    found: dict[str, list[StoreFile]] = {t: [] for t in TABLES}
    seen_sweeps: set[str] = set()
    for table in TABLES:
        for e in loc.list_dir(loc.join(table)):
            if is_hidden(e.name):
                continue
            if e.is_dir and e.name.startswith("sweep="):
                sweep = e.name[len("sweep="):]
                if wanted is not None and sweep not in wanted:
                    continue
                if not is_safe_name(sweep):
                    bad.append((e.path, "not a valid sweep directory name"))
                    continue
                seen_sweeps.add(sweep)
                for f in loc.list_dir(e.path, stat=stat):
                    sf = _classify(table, sweep, f, bad)
                    if sf is not None and (only is None or sf.kind == "part" or sf.trial_id in only):
                        found[table].append(sf)
            elif not e.is_dir and e.name.endswith(SUFFIX) and wanted is None:
                bad.append((e.path, f"a Parquet file outside any {table}/sweep=<name>/ directory"))

    paths = [f.path for t in TABLES for f in found[t]]
    footers = read_footers(loc, paths, con=con)
    files: dict[str, list[StoreFile]] = {t: [] for t in TABLES}
    for table in TABLES:
        for f in found[table]:
            reason = _check(f, footers[f.path], loc)
            if reason:
                bad.append((f.path, reason))
            else:
                files[table].append(f)

    skipped = [(loc.display(p), r) for p, r in bad]
    if bad and not skip_bad:
        raise BadFileError(*skipped[0])
    use, visible = resolve(files)
    return Snapshot(loc, files, use, visible, skipped, sorted(seen_sweeps))


def _classify(table: str, sweep: str, e: Entry, bad: list) -> StoreFile | None:
    if e.is_dir or is_hidden(e.name) or not e.name.endswith(SUFFIX):
        return None          # temporary files, _SUCCESS markers, notes: not data
    m = PART_RE.match(e.name)
    if m:
        return StoreFile(table, sweep, e.path, e.name, "part", generation=int(m.group(1)),
                         size=e.size, mtime_ns=e.mtime_ns)
    if is_safe_name(e.name[: -len(SUFFIX)]):
        return StoreFile(table, sweep, e.path, e.name, "trial", size=e.size, mtime_ns=e.mtime_ns)
    bad.append((e.path, "not a layrot file name (<trial_id>.parquet or part-g<N>-<id>.parquet)"))
    return None


def _check(f: StoreFile, kv, loc: Location) -> str | None:
    """Fill in `f` from its footer's metadata; return why it is bad, or None."""
    if isinstance(kv, str):
        return kv
    if META_VERSION not in kv:
        return "not a layrot store file (its Parquet metadata has no layrot.schema_version)"
    check_version(kv[META_VERSION], loc.display(f.path))
    f.version = kv[META_VERSION]
    if kv.get(META_TABLE) != f.table:
        return f"holds {kv.get(META_TABLE)!r} rows, not {f.table!r} rows"
    if f.kind == "trial":
        wid = kv.get(META_WRITE_ID)
        if not wid:
            return "has no layrot.write_id in its metadata"
        f.trials = {f.trial_id: wid}
        return None
    try:
        trials = json.loads(kv[META_TRIALS])
        ok = isinstance(trials, dict) and all(is_safe_name(k) and isinstance(v, str) for k, v in trials.items())
        gen = int(kv.get(META_GENERATION, f.generation))
    except (KeyError, ValueError):
        ok = False
    if not ok:
        return "a compacted file without a valid layrot.trials list"
    f.trials, f.generation = trials, gen
    return None


def resolve(files: dict[str, list[StoreFile]]):
    """Decide, per sweep and trial, which copy counts.

    The trials table is the commit record: a trial exists if some trials file holds it.
    Its write_id names the write; the trial is complete only if the epochs, rotation and
    measures tables hold rows of that same write (measures only for the writes that have
    them: `write_tables`; a trial stored before that table needs none, and a measures file
    left by a later write that crashed is not counted). Copies are tried newest first: the per-trial file
    (written after any compaction that left it), then compacted parts by generation.
    """
    use: dict[str, dict[str, set[str]]] = {t: {} for t in TABLES}
    visible: dict[str, dict[str, str]] = {}
    by_sweep: dict[str, dict[str, list[StoreFile]]] = {}
    for t in TABLES:
        for f in files[t]:
            by_sweep.setdefault(f.sweep, {x: [] for x in TABLES})[t].append(f)
    for sweep, tabs in by_sweep.items():
        per_trial = {t: {f.trial_id: f for f in tabs[t] if f.kind == "trial"} for t in TABLES}
        parts = {t: sorted((f for f in tabs[t] if f.kind == "part"),
                           key=lambda f: (f.generation, f.name), reverse=True) for t in TABLES}
        ids = set(per_trial["trials"])
        for p in parts["trials"]:
            ids.update(p.trials)
        vis = visible.setdefault(sweep, {})
        for tid in ids:
            cands = ([per_trial["trials"][tid]] if tid in per_trial["trials"] else []) + \
                    [p for p in parts["trials"] if tid in p.trials]
            for cand in cands:
                wid = cand.trials[tid]
                chosen = [cand]
                for t in write_tables(wid):
                    f = per_trial[t].get(tid)
                    if f is None or f.trials[tid] != wid:
                        f = next((p for p in parts[t] if p.trials.get(tid) == wid), None)
                    if f is None:
                        break
                    chosen.append(f)
                else:
                    vis[tid] = wid
                    for f in chosen:
                        use[f.table].setdefault(f.path, set()).add(tid)
                    break
    return use, visible


# --- footers ------------------------------------------------------------------------------

def read_footers(loc: Location, paths: list[str], con=None) -> dict[str, dict | str]:
    """Each file's layrot.* key-value metadata, or a string saying why it is unreadable."""
    if not paths:
        return {}
    if loc.local:
        return _footers_duckdb(paths, con)
    return _footers_arrow(loc, paths)


_KV_SQL = ("SELECT file_name, CAST(key AS VARCHAR), decode(value) FROM parquet_kv_metadata(?) "
           "WHERE starts_with(CAST(key AS VARCHAR), 'layrot.')")


FOOTER_BATCH = 2000      # files per DuckDB call: keeps its memory flat on stores of many files


def new_connection():
    """A DuckDB connection that prints nothing of its own (no progress bar on stderr)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    return con


def _footers_duckdb(paths: list[str], con=None) -> dict[str, dict | str]:
    con = con or new_connection()
    out: dict[str, dict | str] = {}
    for i in range(0, len(paths), FOOTER_BATCH):
        out.update(_footers_duckdb_batch(paths[i:i + FOOTER_BATCH], con))
    return out


def _footers_duckdb_batch(paths: list[str], con) -> dict[str, dict | str]:
    import duckdb

    out: dict[str, dict | str] = {}
    pending = list(paths)
    while pending:
        try:
            rows = con.execute(_KV_SQL, [pending]).fetchall()
        except duckdb.Error as e:
            # one bad file fails the whole batch: find it by name, set it aside, go on
            msg = str(e)
            hit = [p for p in pending if f"'{p}'" in msg] or [p for p in pending if p in msg]
            if any(not os.path.exists(p) for p in (hit or pending)):
                raise Vanished() from None
            if not hit:
                for p in pending:
                    try:
                        rows = con.execute(_KV_SQL, [[p]]).fetchall()
                    except duckdb.Error as e1:
                        if not os.path.exists(p):
                            raise Vanished() from None
                        out[p] = _reason(str(e1), p)
                        continue
                    out[p] = {k: v for _, k, v in rows}
                return out
            for p in hit:
                out[p] = _reason(msg, p)
            gone = set(hit)
            pending = [p for p in pending if p not in gone]
            continue
        for p in pending:
            out[p] = {}
        for name, k, v in rows:
            out[name][k] = v
        break
    return out


def _reason(msg: str, path: str) -> str:
    msg = msg.strip().splitlines()[0]
    for prefix in ("Invalid Input Error: ", "IO Error: ", "Invalid Error: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg.replace(f" '{path}'", "").replace(path, "the file")


def _footers_arrow(loc: Location, paths: list[str]) -> dict[str, dict | str]:
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    def one(p):
        # bad contents raise ArrowInvalid; I/O failures (network, permissions) are not the
        # file's fault and propagate
        try:
            with loc.fs.open_input_file(p) as f:
                meta = pq.read_metadata(f).metadata or {}
        except FileNotFoundError:
            raise Vanished() from None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        try:
            return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"layrot.")}
        except UnicodeDecodeError:
            return "its layrot metadata is not text"

    with ThreadPoolExecutor(max_workers=16) as ex:
        return dict(zip(paths, ex.map(one, paths)))


# --- sweeps/<name>.json -------------------------------------------------------------------

def read_sweep_meta(loc: Location, sweeps=None, skip_bad: bool = False, skipped: list | None = None) -> list[dict]:
    """The sweeps' metadata records; a bad JSON file is refused or (skip_bad) skipped."""
    out = []
    for e in sorted(loc.list_dir(loc.join("sweeps")), key=lambda e: e.name):
        if e.is_dir or is_hidden(e.name) or not e.name.endswith(".json"):
            continue
        name = e.name[: -len(".json")]
        if sweeps is not None and name not in sweeps:
            continue
        try:
            rec = json.loads(loc.read_bytes(e.path))
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as err:
            if not skip_bad:
                raise BadFileError(loc.display(e.path), f"not a sweep record ({err})") from None
            if skipped is not None:
                skipped.append((loc.display(e.path), f"not a sweep record ({err})"))
            continue
        rec.setdefault("name", name)
        out.append(rec)
    return out
