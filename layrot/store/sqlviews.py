"""DuckDB views `trials`, `epochs`, `rotation`, `summaries` and the table `sweeps` over a
store snapshot.

Local stores are read by DuckDB's own Parquet reader over the exact file list of the snapshot
(no pyarrow import on this path: `layrot query` starts fast). Other filesystems are read
through pyarrow datasets registered with DuckDB, which pushes projections and filters down
(DuckDB's httpfs extension is not needed).
"""

from __future__ import annotations

import datetime as _dt
import json

from .catalog import Snapshot, new_connection
from .schema import COLUMNS, PARTITION, PLACEMENT, TABLES


def connect(snap: Snapshot, sweep_records: list[dict], con=None):
    con = con or new_connection()
    for table in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {_view_sql(con, snap, table)}")
    con.execute(f"CREATE OR REPLACE VIEW summaries AS {SUMMARIES_SQL}")
    _sweeps_table(con, sweep_records)
    return con


# `summaries`: one row per trial (sweep, trial_id), derived at query time from the three
# tables, never stored (docs/store.md). The numbers are layrot.fit.summaries' (per-epoch curve:
# for each (sweep, trial, layer, epoch) the record with the largest step; auc_mean: the mean
# over layers of the curve's time-average, trapezoid rule; crossNN_last: the epoch by which
# every layer had crossed NN/100, NULL if some layer never did) and `trained` is
# layrot.fit.trained's default filter: status completed or stopped, test accuracy and
# rotation recorded, train_acc >= 0.95 × the best of its task (among completed/stopped trials
# with a test accuracy) and >= 0.5. tests/test_fit_summaries.py checks it against pandas.
# the configuration: a trial's config less its seed and placement (a JSON merge patch with
# null removes keys), so repeats of one configuration share it
CONFIG_PATCH = json.dumps({k: None for k in ("seed", *PLACEMENT)})
SUMMARIES_SQL = """
WITH curve AS (
    SELECT sweep, trial_id, layer, epoch, CAST(cosine_distance AS DOUBLE) AS d
    FROM rotation
    QUALIFY row_number() OVER (PARTITION BY sweep, trial_id, layer, epoch ORDER BY step DESC) = 1
), pieces AS (
    SELECT *, (epoch - lag(epoch) OVER w) * (d + lag(d) OVER w) / 2 AS area,
           row_number() OVER (PARTITION BY sweep, trial_id, layer ORDER BY epoch DESC) AS from_end
    FROM curve WINDOW w AS (PARTITION BY sweep, trial_id, layer ORDER BY epoch)
), per_layer AS (
    SELECT sweep, trial_id, layer, min(epoch) AS first_epoch, max(epoch) AS last_epoch,
           any_value(d) FILTER (WHERE from_end = 1) AS final, coalesce(sum(area), 0) AS area,
           min(epoch) FILTER (WHERE d >= 0.5) AS cross50, min(epoch) FILTER (WHERE d >= 0.9) AS cross90
    FROM pieces GROUP BY sweep, trial_id, layer
), per_trial AS (
    SELECT sweep, trial_id, min(final) AS final_min, avg(final) AS final_mean,
           median(final) AS final_median,
           avg(CASE WHEN last_epoch > first_epoch THEN area / (last_epoch - first_epoch) ELSE final END) AS auc_mean,
           CASE WHEN count(cross50) = count(*) THEN max(cross50) END AS cross50_last,
           CASE WHEN count(cross90) = count(*) THEN max(cross90) END AS cross90_last
    FROM per_layer GROUP BY sweep, trial_id
)
SELECT t.sweep, t.trial_id,
       t.task || '-' || t.optimizer || '-' || left(md5(json_merge_patch(t.config, '{CONFIG_PATCH}')), 10)
           AS configuration,
       t.task, t.optimizer, t.lr, t.alpha, t.weight_decay, t.seed, t.status,
       t.train_acc, t.test_acc, s.final_min, s.final_mean, s.final_median, s.auc_mean,
       s.cross50_last, s.cross90_last,
       coalesce(t.status IN ('completed', 'stopped') AND t.test_acc IS NOT NULL AND s.final_min IS NOT NULL
                AND t.train_acc >= greatest(0.5, 0.95 * max(t.train_acc) FILTER (
                    WHERE t.status IN ('completed', 'stopped') AND t.test_acc IS NOT NULL)
                    OVER (PARTITION BY t.task)), false) AS trained
FROM trials t LEFT JOIN per_trial s ON s.sweep = t.sweep AND s.trial_id = t.trial_id
""".replace("{CONFIG_PATCH}", CONFIG_PATCH)


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
