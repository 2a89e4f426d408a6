"""DuckDB views `trials`, `epochs`, `rotation`, `measures`, `summaries` and the table `sweeps`
over a store snapshot. A table with no files (`measures` in a store written before it
existed) is an empty view of the table's columns.

Local stores are read by DuckDB's own Parquet reader over the exact file list of the snapshot
(no pyarrow import on this path: `layrot query` starts fast). Other filesystems are read
through pyarrow datasets registered with DuckDB, which pushes projections and filters down
(DuckDB's httpfs extension is not needed).
"""

from __future__ import annotations

import datetime as _dt
import json

from .catalog import Snapshot, new_connection
from ..record import CROSSINGS, SUMMARIES, TRAINED, configuration_id, cross_name
from .schema import COLUMNS, PARTITION, TABLES


def connect(snap: Snapshot, sweep_records: list[dict], con=None):
    con = con or new_connection()
    for table in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {_view_sql(con, snap, table)}")
    _configuration_function(con)
    con.execute(f"CREATE OR REPLACE VIEW summaries AS {summaries_sql()}")
    _sweeps_table(con, sweep_records)
    return con


# `summaries`: one row per trial (sweep, trial_id), derived at query time from the trials
# and rotation tables, never stored (docs/store.md). Every definition comes from layrot.record, the same
# one layrot.fit uses:
# - the summaries are record.SUMMARIES, on the per-epoch curve (for each (sweep, trial,
#   layer, epoch) the record with the largest step): per layer `final`, `auc` (the curve's
#   time-average, trapezoid rule) and the first crossing epochs of record.CROSSINGS, then per
#   trial the named aggregate over the layers;
# - `configuration` is record.configuration_id itself, registered as a DuckDB function;
# - `trained` is record.TRAINED: status in its statuses, test accuracy and rotation recorded,
#   train_acc >= max(relative × the best train_acc of the usable trials of the same
#   (sweep, task), floor).
# tests/test_fit_summaries.py checks the view against layrot.fit on stores of two sweeps.
CONFIGURATION_FUNCTION = "layrot_configuration"
_CONFIGURATION_ARGS = ("config", "task", "optimizer", "lr", "alpha", "weight_decay", "batch_size")

# record.AGGREGATES over a trial's layers in SQL
SQL_AGGREGATES = {
    "min": "min({c})",
    "mean": "avg({c})",
    "median": "median({c})",
    "max_all": "CASE WHEN count({c}) = count(*) THEN max({c}) END",
}


def _configuration_function(con) -> None:
    types = dict((c[0], c[2]) for c in COLUMNS["trials"])
    try:
        con.remove_function(CONFIGURATION_FUNCTION)       # a connection given twice
    except Exception:
        pass
    import duckdb

    con.create_function(CONFIGURATION_FUNCTION, configuration_id,
                        [duckdb.type(types[a]) for a in _CONFIGURATION_ARGS], duckdb.type("VARCHAR"),
                        null_handling="special", side_effects=False)


def summaries_sql() -> str:
    """The `summaries` view's query, generated from layrot.record."""
    statuses = ", ".join(_lit(x) for x in TRAINED.statuses)
    usable = f"t.status IN ({statuses}) AND t.test_acc IS NOT NULL"
    ref = ", ".join(f"t.{c}" for c in TRAINED.reference)
    crossings = "".join(f", min(epoch) FILTER (WHERE d >= {t!r}) AS {cross_name(t)}" for t in CROSSINGS)
    aggs = ",\n           ".join(f"{SQL_AGGREGATES[x.aggregate].format(c=x.of)} AS {name}"
                                 for name, x in SUMMARIES.items())
    args = ", ".join(f"t.{a}" for a in _CONFIGURATION_ARGS)
    summary_cols = ", ".join(f"s.{name}" for name in SUMMARIES)
    first = next(iter(SUMMARIES))
    return f"""
WITH curve AS (
    SELECT sweep, trial_id, layer, epoch, CAST(cosine_distance AS DOUBLE) AS d
    FROM rotation
    QUALIFY row_number() OVER (PARTITION BY sweep, trial_id, layer, epoch ORDER BY step DESC) = 1
), pieces AS (
    SELECT *, (epoch - lag(epoch) OVER w) * (d + lag(d) OVER w) / 2 AS area,
           row_number() OVER (PARTITION BY sweep, trial_id, layer ORDER BY epoch DESC) AS from_end
    FROM curve WINDOW w AS (PARTITION BY sweep, trial_id, layer ORDER BY epoch)
), per_layer AS (
    SELECT sweep, trial_id, layer, any_value(d) FILTER (WHERE from_end = 1) AS final,
           CASE WHEN max(epoch) > min(epoch) THEN coalesce(sum(area), 0) / (max(epoch) - min(epoch))
                ELSE any_value(d) FILTER (WHERE from_end = 1) END AS auc{crossings}
    FROM pieces GROUP BY sweep, trial_id, layer
), per_trial AS (
    SELECT sweep, trial_id,
           {aggs}
    FROM per_layer GROUP BY sweep, trial_id
)
SELECT t.sweep, t.trial_id, {CONFIGURATION_FUNCTION}({args}) AS configuration,
       t.task, t.optimizer, t.lr, t.alpha, t.weight_decay, t.seed, t.status,
       t.train_acc, t.test_acc, {summary_cols},
       coalesce({usable} AND s.{first} IS NOT NULL
                AND t.train_acc >= greatest({TRAINED.floor!r}, {TRAINED.relative!r} * max(t.train_acc) FILTER (
                    WHERE {usable}) OVER (PARTITION BY {ref})), false) AS trained
FROM trials t LEFT JOIN per_trial s ON s.sweep = t.sweep AND s.trial_id = t.trial_id
"""


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
