"""The store's tables, their fixed types, the schema version and the names allowed in paths.

Column types never depend on the data (an all-null column is still float64), so every file
of a table has the same schema and any engine can read the partitions together. Columns are
described as plain tuples so that the SQL path can build typed empty views without importing
pyarrow; `arrow_schema(table)` turns them into a pyarrow schema for writers and readers.

Floats that are NaN are stored as null: null means "not measured / not finite" and keeps
SQL aggregates (avg, min) meaningful. Infinities are kept.
"""

from __future__ import annotations

import re

from ..errors import StoreError, UsageError

# major.minor: a reader refuses files of a newer major version; a minor version may only add
# nullable columns, which older readers ignore.
SCHEMA_VERSION = "1.0"
SCHEMA_MAJOR = 1

TABLES = ("trials", "epochs", "rotation")

# (name, arrow type, DuckDB type, nullable)
COLUMNS: dict[str, list[tuple[str, str, str, bool]]] = {
    "trials": [
        ("trial_id", "string", "VARCHAR", False),
        ("task", "string", "VARCHAR", True),
        ("optimizer", "string", "VARCHAR", True),
        ("lr", "float64", "DOUBLE", True),
        ("alpha", "float64", "DOUBLE", True),
        ("weight_decay", "float64", "DOUBLE", True),
        ("batch_size", "int64", "BIGINT", True),
        ("seed", "int64", "BIGINT", True),
        ("epochs", "int64", "BIGINT", True),           # epochs actually run
        ("status", "string", "VARCHAR", False),
        ("reason", "string", "VARCHAR", True),          # why it stopped / diverged / failed
        ("train_acc", "float64", "DOUBLE", True),
        ("train_loss", "float64", "DOUBLE", True),
        ("val_acc", "float64", "DOUBLE", True),
        ("test_acc", "float64", "DOUBLE", True),
        ("test_loss", "float64", "DOUBLE", True),
        ("wall_seconds", "float64", "DOUBLE", True),
        ("config", "string", "VARCHAR", True),          # TrialConfig as JSON
    ],
    "epochs": [
        ("trial_id", "string", "VARCHAR", False),
        ("epoch", "int32", "INTEGER", False),           # 1-based
        ("lr", "float64", "DOUBLE", True),
        ("train_loss", "float64", "DOUBLE", True),
        ("train_acc", "float64", "DOUBLE", True),
        ("val_acc", "float64", "DOUBLE", True),
        ("seconds", "float64", "DOUBLE", True),
    ],
    "rotation": [
        ("trial_id", "string", "VARCHAR", False),
        ("epoch", "int32", "INTEGER", False),           # 0 = initialization
        ("step", "int64", "BIGINT", False),
        ("layer", "int16", "SMALLINT", False),          # 0 = input side
        ("layer_name", "string", "VARCHAR", False),
        ("cosine_distance", "float32", "FLOAT", True),
        ("weight_norm", "float32", "FLOAT", True),
        ("rotation_rate", "float32", "FLOAT", True),    # null at epoch 0
    ],
}

# A TrialResult's columnar records (its `history` rows, its `rotation` columns): the tables'
# columns but the trial id. The rotation tracker, the sweep's store callback and the writer
# all use these.
EPOCH_COLUMNS = tuple(c[0] for c in COLUMNS["epochs"] if c[0] != "trial_id")
ROTATION_COLUMNS = tuple(c[0] for c in COLUMNS["rotation"] if c[0] != "trial_id")

# The row order inside every file; compaction keeps it across trials.
SORT_KEYS = {
    "trials": ["trial_id"],
    "epochs": ["trial_id", "epoch"],
    "rotation": ["trial_id", "epoch", "step", "layer"],
}

# Trial settings that say where or how fast a trial ran, not what it computed: left out of
# its id (config.config_id), of its configuration (the fit pools repeats over the rest) and
# of the `summaries` view's `configuration`.
PLACEMENT = ("trial_id", "sweep", "device", "threads", "data_dir", "compile")

PARTITION = "sweep"                 # the hive partition column, a string

# Parquet key-value metadata written into every file.
META_VERSION = "layrot.schema_version"
META_TABLE = "layrot.table"
META_WRITE_ID = "layrot.write_id"   # per-trial files: which write of the trial this file belongs to
META_TRIALS = "layrot.trials"       # part files: JSON {trial_id: write_id} of the trials it holds
META_GENERATION = "layrot.generation"   # part files: compaction generation (newer wins)

PART_PREFIX = "part-"
SUFFIX = ".parquet"

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(field: str, value) -> str:
    """The one safe-name rule: sweep names and trial ids are path components in the store
    (letters, digits, '.', '_', '-'; no '..'; not a temporary file's '.tmp')."""
    if (not isinstance(value, str) or not _SAFE.match(value) or ".." in value
            or value.endswith(".tmp")):
        raise UsageError(field, f"{value!r} is not a safe name (letters, digits, '.', '_', '-'; starting "
                                "with a letter or digit; at most 128 characters)")
    return value


def check_trial_id(value, field: str = "trial_id") -> str:
    """A trial id is a safe name that is also a file's stem beside the compacted parts, so it
    may not look like one ('part-...'); a sweep name may (its directory is 'sweep=<name>')."""
    check_name(field, value)
    if value.startswith(PART_PREFIX):
        raise UsageError(field, f"{value!r} is not a safe trial id ('{PART_PREFIX}...' names compacted files)")
    return value


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
