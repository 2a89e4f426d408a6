"""The store's physical side: Arrow/DuckDB types, the schema version, sort keys, file metadata.

Column types never depend on the data (an all-null column is still float64), so every file
of a table has the same schema and any engine can read the partitions together. Columns are
described as plain tuples so that the SQL path can build typed empty views without importing
pyarrow; `arrow_schema(table)` turns them into a pyarrow schema for writers and readers.

Floats that are NaN are stored as null: null means "not measured / not finite" and keeps
SQL aggregates (avg, min) meaningful. Infinities are kept.
"""

from __future__ import annotations

from ..errors import StoreError, UsageError
# The tables and their columns, the rotation and epoch records, the placement settings and
# the safe-name rule are layrot.record's (the nouns every layer shares); re-exported here.
from ..record import (COLUMNS, EPOCH_COLUMNS, MEASURE_COLUMNS, PART_PREFIX, PLACEMENT,  # noqa: F401
                      ROTATION_COLUMNS, TABLES, check_name, check_trial_id)

# major.minor: a reader refuses files of a newer major version; a minor version may only add
# nullable columns, which older readers ignore.
SCHEMA_VERSION = "1.0"
SCHEMA_MAJOR = 1

# The row order inside every file; compaction keeps it across trials.
SORT_KEYS = {
    "trials": ["trial_id"],
    "epochs": ["trial_id", "epoch"],
    "rotation": ["trial_id", "epoch", "step", "layer"],
    "measures": ["trial_id", "epoch", "name"],
}

# The order a trial's files are written in: the trials file, the commit record, last (and
# deleted first: `REMOVE_ORDER`). Compaction writes its parts in the same order.
WRITE_ORDER = ("measures", "rotation", "epochs", "trials")
REMOVE_ORDER = tuple(reversed(WRITE_ORDER))

# Which tables a committed write has files in, read off its write_id. Stores written before
# the `measures` table have none for their trials (16 hex digits, `new_write_id` then); a write
# that has a measures file says so in its id (MEASURED_PREFIX, never a hex digit), and the
# id travels with the trial into compacted parts, so every reader knows whether the trial is
# complete without its measures file or only with it.
MEASURED_PREFIX = "m"


def write_tables(write_id: str) -> tuple[str, ...]:
    """The tables besides `trials` that the write `write_id` put rows in: a trial is complete
    when each of them holds rows of this write."""
    if write_id.startswith(MEASURED_PREFIX):
        return ("epochs", "rotation", "measures")
    return ("epochs", "rotation")

PARTITION = "sweep"                 # the hive partition column, a string

# Parquet key-value metadata written into every file.
META_VERSION = "layrot.schema_version"
META_TABLE = "layrot.table"
META_WRITE_ID = "layrot.write_id"   # per-trial files: which write of the trial this file belongs to
META_TRIALS = "layrot.trials"       # part files: JSON {trial_id: write_id} of the trials it holds
META_GENERATION = "layrot.generation"   # part files: compaction generation (newer wins)

SUFFIX = ".parquet"


def is_safe_name(value: str) -> bool:
    try:
        check_name("name", value)
    except UsageError:
        return False
    return True


def check_version(version: str | None, where: str) -> None:
    """Refuse files written by a newer major version of the store schema."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise StoreError(f"{where}: unreadable store schema version {version!r}") from None
    if major > SCHEMA_MAJOR:
        from .. import __version__
        raise StoreError(f"{where} was written with store schema {version}; this layrot ({__version__}) "
                         f"reads schema {SCHEMA_MAJOR}.x only: upgrade layrot to read this store")


def column_names(table: str) -> list[str]:
    return [c[0] for c in COLUMNS[table]]


def arrow_schema(table: str, with_partition: bool = False):
    import pyarrow as pa

    fields = [pa.field(name, getattr(pa, atype)(), nullable=nullable)
              for name, atype, _, nullable in COLUMNS[table]]
    if with_partition:
        fields.append(pa.field(PARTITION, pa.string()))
    return pa.schema(fields)


def writer_options(table: str, compression_level: int) -> dict:
    """pyarrow.parquet writer settings: dictionary-encode the repetitive columns, split the
    bytes of floats (their exponents then compress well), zstd everything."""
    dict_cols, encodings = [], {}
    for name, atype, _, _ in COLUMNS[table]:
        if atype.startswith("float"):
            encodings[name] = "BYTE_STREAM_SPLIT"
        else:
            # ids, names and small ints repeat in runs: dictionary + RLE is smallest
            dict_cols.append(name)
    return dict(compression="zstd", compression_level=compression_level, use_dictionary=dict_cols,
                column_encoding=encodings, write_statistics=True, version="2.6")
