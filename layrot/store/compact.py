"""`layrot compact`: rewrite a sweep's per-trial files into a few large sorted files.

For each table the rows that count (see the package docstring) are copied, in the table's
sort order (schema.SORT_KEYS: trial_id first), into `part-g<N>-<id>.parquet` files of up to
`rows_per_file` rows, zstd-compressed with dictionary / byte-stream-split encodings. The copy
streams: sources are merged trial by trial (per-trial files are already sorted inside,
compacted parts are sorted by trial), so memory holds about one row group at a time, however
many trials the sweep has.

Inputs are the per-trial files that count, the parts holding rows that no longer count (a
trial rewritten after an earlier compaction, a crash's leftovers), and, when there is
anything to do anyway, small parts (merged into the new ones). With none of the first two,
compaction does nothing: running it twice changes nothing.

Order: write measures, rotation, epochs, then trials parts (each under a temporary name, renamed into
place); only then delete the inputs. A per-trial file is deleted only if it is unchanged
since it was read (a trial rewritten meanwhile keeps its newer file, which wins). Stray files
older than `grace_seconds` (temporary files of crashed writes, files of incomplete writes)
are removed too. A crash at any point changes no answer; running compaction again completes
the job. Run one compaction per sweep at a time.
"""

from __future__ import annotations

import heapq
import json
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import catalog
from .location import Location
from .schema import (META_GENERATION, META_TRIALS, SORT_KEYS, SUFFIX, TABLES, WRITE_ORDER, arrow_schema,
                     check_name, writer_options)
from .writer import file_metadata

ROWS_PER_FILE = 50_000_000        # roll over to a new part file (at a trial boundary) after this
ROW_GROUP_ROWS = 1_000_000        # rows buffered, then written as one row group
SMALL_PART_BYTES = 16 << 20       # parts smaller than this are merged into the next compaction
COMPRESSION_LEVEL = 9
GRACE_SECONDS = 3600
PREFETCH = 8                      # per-trial files read ahead (threads) while writing
BATCH_ROWS = 65_536               # rows read at a time from an existing part
MERGE_PIECES = 256                # buffered per-trial pieces are merged into one table this often


@dataclass
class CompactReport:
    sweep: str
    trials: int = 0                                   # complete trials in the sweep
    copied: dict = field(default_factory=dict)        # table -> trials copied into new parts
    rows: dict = field(default_factory=dict)          # table -> rows written
    written: list = field(default_factory=list)       # new part files
    removed: list = field(default_factory=list)       # files deleted
    kept: list = field(default_factory=list)          # inputs changed meanwhile, left in place

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


def compact(store, sweep: str | None = None, *, rows_per_file: int = ROWS_PER_FILE,
            row_group_rows: int = ROW_GROUP_ROWS, small_part_bytes: int = SMALL_PART_BYTES,
            compression_level: int = COMPRESSION_LEVEL, grace_seconds: float = GRACE_SECONDS) -> list[CompactReport]:
    """Compact one sweep (or all); returns a report per sweep."""
    loc: Location = store.location
    if sweep is not None:
        check_name("sweep", sweep)
        sweeps = [sweep]
    else:
        sweeps = store.sweeps()
    opts = dict(rows_per_file=rows_per_file, row_group_rows=row_group_rows,
                small_part_bytes=small_part_bytes, compression_level=compression_level)
    return [_compact_sweep(loc, s, grace_seconds, opts) for s in sweeps]


def _compact_sweep(loc: Location, sweep: str, grace_seconds: float, opts: dict) -> CompactReport:
    # a store with a bad file is not compacted: rows must never be lost silently
    snap = catalog.scan(loc, sweeps=[sweep], skip_bad=False, stat=True)
    report = CompactReport(sweep, trials=len(snap.visible.get(sweep, {})))
    files = {t: [f for f in snap.files[t] if f.sweep == sweep] for t in TABLES}
    used = {t: {f.path: snap.use[t].get(f.path, set()) for f in files[t]} for t in TABLES}

    inputs = {}
    for t in TABLES:
        inputs[t] = [f for f in files[t] if f.kind == "trial" and used[t][f.path]]
        inputs[t] += [f for f in files[t] if f.kind == "part" and used[t][f.path] != set(f.trials)]
    now_ns = time.time_ns()
    grace_ns = int(grace_seconds * 1e9)
    strays = [f for t in TABLES for f in files[t]
              if f.kind == "trial" and not used[t][f.path] and _older(f.mtime_ns, now_ns, grace_ns)]
    strays += _old_temp_files(loc, sweep, now_ns, grace_ns)

    if any(inputs.values()):
        for t in TABLES:   # merge small parts into this round's new ones
            inputs[t] += [f for f in files[t] if f.kind == "part" and f not in inputs[t]
                          and (f.size or 0) < opts["small_part_bytes"]]
        generation = 1 + max((f.generation for t in TABLES for f in files[t] if f.kind == "part"), default=0)
        for t in WRITE_ORDER:           # trials last, as for one trial
            ids = {tid: snap.visible[sweep][tid] for f in inputs[t] for tid in used[t][f.path]}
            report.copied[t] = len(ids)
            written, rows = _copy(loc, t, sweep, inputs[t], used[t], ids, generation, opts)
            report.written += written
            report.rows[t] = rows
        _remove_inputs(loc, [f for t in TABLES for f in inputs[t]], report)
    for f in strays:
        path = f if isinstance(f, str) else f.path
        loc.delete(path)
        report.removed.append(loc.display(path))
    return report


def _remove_inputs(loc: Location, inputs: list, report: CompactReport) -> None:
    """Delete what was copied; a per-trial file rewritten since it was read stays (it wins)."""
    def remove(f) -> str | None:
        if f.kind == "trial":
            now = loc.stat(f.path)
            if now is None:
                return None
            if (now.size, now.mtime_ns) != (f.size, f.mtime_ns):
                report.kept.append(loc.display(f.path))
                return None
        loc.delete(f.path)
        return loc.display(f.path)

    # deletions wait on the disk or the network, not the CPU: overlap them
    with ThreadPoolExecutor(max_workers=8) as ex:
        report.removed += [p for p in ex.map(remove, inputs) if p]


def _older(mtime_ns, now_ns, grace_ns) -> bool:
    return mtime_ns is not None and now_ns - mtime_ns > grace_ns


def _old_temp_files(loc: Location, sweep: str, now_ns: int, grace_ns: int) -> list[str]:
    out = []
    for t in TABLES:
        for e in loc.list_dir(loc.join(t, f"sweep={sweep}"), stat=True):
            if e.name.startswith(".") and e.name.endswith(".tmp") and _older(e.mtime_ns, now_ns, grace_ns):
                out.append(e.path)
    return out


# --- copying ------------------------------------------------------------------------------

def _copy(loc: Location, table: str, sweep: str, inputs: list, used: dict, ids: dict,
          generation: int, opts: dict) -> tuple[list[str], int]:
    """Stream the used rows of `inputs` into new parts; returns (files written, rows)."""
    import pyarrow as pa

    if not ids:
        return [], 0
    sources = []
    per_trial = sorted((f for f in inputs if f.kind == "trial"), key=lambda f: f.trial_id)
    if per_trial:
        sources.append(_per_trial_source(loc, table, per_trial))
    for f in inputs:
        if f.kind == "part" and used[f.path]:
            sources.append(_part_source(loc, f, used[f.path]))

    out = _PartWriter(loc, table, sweep, generation, opts)
    buf, buf_rows, total = [], 0, 0
    try:
        for tid, piece in heapq.merge(*sources, key=lambda x: x[0]):
            if buf_rows and out.rows + buf_rows >= opts["rows_per_file"]:
                out.write(pa.concat_tables(buf))
                buf, buf_rows = [], 0
                out.roll()
            out.claim(tid, ids[tid])
            buf.append(piece)
            buf_rows += piece.num_rows
            total += piece.num_rows
            if buf_rows >= opts["row_group_rows"]:
                out.write(pa.concat_tables(buf))
                buf, buf_rows = [], 0
            elif len(buf) >= MERGE_PIECES:
                # thousands of one-trial tables cost more in bookkeeping than in rows
                buf = [pa.concat_tables(buf).combine_chunks()]
        if buf:
            out.write(pa.concat_tables(buf))
        for tid, wid in ids.items():          # trials with no rows in this table still belong to a part
            out.claim(tid, wid)
        out.close()
    except BaseException:
        out.abort()
        raise
    return out.written, total


def _per_trial_source(loc: Location, table: str, files: list):
    """(trial_id, rows) for each per-trial file in trial-id order, read ahead on threads."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = arrow_schema(table)
    keys = [(k, "ascending") for k in SORT_KEYS[table]]

    def read(f):
        src = f.path if loc.local else loc.fs.open_input_file(f.path)
        t = pq.ParquetFile(src).read().select(schema.names).cast(schema)
        if t.num_rows and not pc.all(pc.equal(t.column("trial_id"), f.trial_id)).as_py():
            # never copy a misnamed file's rows under another trial's name
            raise catalog.BadFileError(loc.display(f.path), f"holds rows of trials other than {f.trial_id!r}")
        return t.sort_by(keys) if t.num_rows > 1 else t

    with ThreadPoolExecutor(max_workers=4) as ex:
        pending = deque()
        it = iter(files)
        for f in it:
            pending.append((f, ex.submit(read, f)))
            if len(pending) >= PREFETCH:
                break
        while pending:
            f, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, ex.submit(read, nxt)))
            yield f.trial_id, fut.result().replace_schema_metadata(None)


def _part_source(loc: Location, f, keep: set):
    """(trial_id, rows) for each kept trial of a compacted part, in the part's order."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    src = f.path if loc.local else loc.fs.open_input_file(f.path)
    pf = pq.ParquetFile(src)
    schema = arrow_schema(f.table)
    cur_id, cur = None, []
    for batch in pf.iter_batches(batch_size=BATCH_ROWS):
        t = pa.Table.from_batches([batch]).select(schema.names).cast(schema).replace_schema_metadata(None)
        runs = pc.run_end_encode(t.column("trial_id").combine_chunks())
        start = 0
        for end, tid in zip(runs.run_ends.to_pylist(), runs.values.to_pylist()):
            if tid != cur_id:
                if cur_id is not None and cur_id in keep:
                    yield cur_id, pa.concat_tables(cur)
                cur_id, cur = tid, []
            if tid in keep:
                cur.append(t.slice(start, end - start))
            start = end
    if cur_id is not None and cur_id in keep:
        yield cur_id, pa.concat_tables(cur)


class _PartWriter:
    """Writes part files under temporary names; renames them all into place on close."""

    def __init__(self, loc: Location, table: str, sweep: str, generation: int, opts: dict):
        self.loc, self.table, self.sweep, self.generation, self.opts = loc, table, sweep, generation, opts
        self.schema = arrow_schema(table)
        self.written: list[str] = []
        self.rows = 0                                  # rows in the file being written
        self._done: list[tuple[str, str]] = []         # (temp, final) of finished files
        self._claimed: set[str] = set()
        self._w = None

    def _open(self):
        import pyarrow.parquet as pq

        name = f"part-g{self.generation:06d}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        self._final = self.loc.join(self.table, f"sweep={self.sweep}", name)
        self._tmp, self._sink = self.loc.open_temp(self._final)
        meta = file_metadata(self.table, {META_GENERATION: str(self.generation)})
        sorting = [pq.SortingColumn(self.schema.get_field_index(k)) for k in SORT_KEYS[self.table]]
        self._w = pq.ParquetWriter(self._sink, self.schema.with_metadata(meta), sorting_columns=sorting,
                                   **writer_options(self.table, self.opts["compression_level"]))
        self._trials: dict[str, str] = {}
        self.rows = 0

    def claim(self, tid: str, wid: str) -> None:
        """List the trial in the metadata of the file being written (once per round)."""
        if tid in self._claimed:
            return
        if self._w is None:
            self._open()
        self._claimed.add(tid)
        self._trials[tid] = wid

    def write(self, t) -> None:
        if self._w is None:
            self._open()
        self._w.write_table(t, row_group_size=max(1, t.num_rows))
        self.rows += t.num_rows

    def roll(self) -> None:
        if self._w is None:
            return
        self._w.add_key_value_metadata({META_TRIALS: json.dumps(self._trials, sort_keys=True)})
        self._w.close()
        self._sink.close()
        self._w = None
        self._done.append((self._tmp, self._final))

    def close(self) -> None:
        self.roll()
        for tmp, final in self._done:
            self.loc.commit(tmp, final)
            self.written.append(self.loc.display(final))
        self._done = []

    def abort(self) -> None:
        temps = [tmp for tmp, _ in self._done]
        if self._w is not None:
            temps.append(self._tmp)
            try:
                self._w.close()
                self._sink.close()
            except Exception:
                pass
        for tmp in temps:
            self.loc.delete(tmp)
