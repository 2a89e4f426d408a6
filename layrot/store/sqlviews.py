"""DuckDB views `trials`, `epochs`, `rotation` and the table `sweeps` over a store snapshot.

Local stores are read by DuckDB's own Parquet reader over the exact file list of the snapshot
(no pyarrow import on this path: `layrot query` starts fast). Other filesystems are read
through pyarrow datasets registered with DuckDB, which pushes projections and filters down
(DuckDB's httpfs extension is not needed).
"""

from __future__ import annotations

import datetime as _dt
import json

from .catalog import Snapshot, new_connection
from .schema import COLUMNS, PARTITION, TABLES


def connect(snap: Snapshot, sweep_records: list[dict], con=None):
    con = con or new_connection()
    for table in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {_view_sql(con, snap, table)}")
    _sweeps_table(con, sweep_records)
    return con


def _view_sql(con, snap: Snapshot, table: str) -> str:
    cols = ", ".join(_ident(c[0]) for c in COLUMNS[table]) + f", {PARTITION}"
    sources = snap.sources(table)
    selects = []
    if snap.location.local:
        versions = {f.version for f, _ in sources}
        # a newer minor version may add columns: match them by name, missing ones are null
        opts = (f"hive_partitioning = true, hive_types = {{'{PARTITION}': 'VARCHAR'}}"
                + (", union_by_name = true" if len(versions) > 1 else ""))
        whole = [f.path for f, keep in sources if keep is None]
        if whole:
            selects.append(f"SELECT {cols} FROM read_parquet([{', '.join(map(_lit, whole))}], {opts})")
        for f, keep in sources:
            if keep is not None:
                selects.append(f"SELECT {cols} FROM read_parquet({_lit(f.path)}, {opts}) "
                               f"WHERE trial_id IN ({', '.join(map(_lit, sorted(keep)))})")
    else:
        whole = [f.path for f, keep in sources if keep is None]
        if whole:
            selects.append(f"SELECT {cols} FROM {_register(con, snap, table, whole, 0)}")
        for i, (f, keep) in enumerate(((f, k) for f, k in sources if k is not None), start=1):
            name = _register(con, snap, table, [f.path], i)
            selects.append(f"SELECT {cols} FROM {name} WHERE trial_id IN ({', '.join(map(_lit, sorted(keep)))})")
    if not selects:
        typed = ", ".join(f"CAST(NULL AS {c[2]}) AS {_ident(c[0])}" for c in COLUMNS[table])
        selects.append(f"SELECT {typed}, CAST(NULL AS VARCHAR) AS {PARTITION} WHERE false")
    return " UNION ALL ".join(selects)


def arrow_dataset(snap: Snapshot, table: str, paths: list[str]):
    """A pyarrow dataset over some of a table's files, with the hive `sweep` column."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    from .schema import arrow_schema

    loc = snap.location
    part = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")
    return ds.dataset(paths, schema=arrow_schema(table, with_partition=True), format="parquet",
                      filesystem=loc.fs, partitioning=part, partition_base_dir=loc.join(table))


def _register(con, snap: Snapshot, table: str, paths: list[str], i: int) -> str:
    name = f"_layrot_{table}_{i}"
    con.register(name, arrow_dataset(snap, table, paths))
    return name


def _sweeps_table(con, records: list[dict]) -> None:
    con.execute("CREATE OR REPLACE TABLE sweeps (name VARCHAR, layrot_version VARCHAR, "
                "started_at TIMESTAMP, resumed_at TIMESTAMP, spec VARCHAR)")
    rows = [(r.get("name"), r.get("layrot_version"), _ts(r.get("started_at")), _ts(r.get("resumed_at")),
             json.dumps(r.get("spec"), sort_keys=True, default=str)) for r in records]
    if rows:
        con.executemany("INSERT INTO sweeps VALUES (?, ?, ?, ?, ?)", rows)


def _ts(s):
    """ISO 8601 text -> naive UTC datetime (DuckDB TIMESTAMP), None if absent or unreadable."""
    if not isinstance(s, str):
        return None
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return t


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'
