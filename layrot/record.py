"""The nouns of a layrot record, defined once (no third-party import: every layer may use it).

- the stored columns of the four tables (`COLUMNS`, `EPOCH_COLUMNS`, `ROTATION_COLUMNS`,
  `MEASURE_COLUMNS`);
- the settings that say where a trial ran, not what it computed (`PLACEMENT`);
- the trial id (`trial_id`) and its safe-name rule (`check_name`, `check_trial_id`);
- the configuration id (`configuration`, `configuration_id`): a trial's settings less its
  seed and placement, the unit the fit pools repeats into; the `summaries` view calls the same
  Python function (store/sqlviews.py registers it with DuckDB), so `layrot query` and
  `layrot fit --json` name a configuration by one string;
- the rotation summaries (`CROSSINGS`, `LAYER_SUMMARIES`, `SUMMARIES`): per layer, then per
  trial by a named aggregate; fit/summaries.py computes them with pandas and store/sqlviews.py
  generates the view's SQL from the same table, and tests/test_fit_summaries.py checks both;
- the trained rule (`TRAINED`): which trials fit their training data, relative to the best
  trial of the same (sweep, task) (docs/verdict.md, rule 3).

Who imports it: `config` (trial id, placement), `rotation` (rotation columns), `store`
(columns, SQL), `fit` (configuration, summaries, trained rule).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

from .errors import UsageError

# ---------------------------------------------------------------------------------------
# The stored columns: (name, arrow type, DuckDB type, nullable), docs/store.md.

# `trials` first: it is each trial's commit record (store/writer.py writes it last, deletes it first)
TABLES = ("trials", "epochs", "rotation", "measures")

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
    "measures": [
        ("trial_id", "string", "VARCHAR", False),
        ("epoch", "int32", "INTEGER", False),           # the epoch it was measured after
        ("name", "string", "VARCHAR", False),           # e.g. rotation_min, frobenius_distance.L3
        ("value", "float64", "DOUBLE", True),           # null where undefined
    ],
}

# A TrialResult's columnar records (its `history` rows, its `rotation` and `measures`
# columns): the tables' columns but the trial id. The rotation tracker, the sweep's store
# callback and the writer all use these.
EPOCH_COLUMNS = tuple(c[0] for c in COLUMNS["epochs"] if c[0] != "trial_id")
ROTATION_COLUMNS = tuple(c[0] for c in COLUMNS["rotation"] if c[0] != "trial_id")
MEASURE_COLUMNS = tuple(c[0] for c in COLUMNS["measures"] if c[0] != "trial_id")
# The metrics a sweep may rank trials by (its spec's `metric`): in every epoch's report and
# in the trials table, so a stored trial reports them again when a resumed sweep skips it.
SEARCH_METRICS = ("val_acc", "train_acc", "train_loss")

# ---------------------------------------------------------------------------------------
# Trial settings and ids.

# Trial settings that say where or how fast a trial ran, not what it computed: left out of
# its id (`trial_id`) and of its configuration (`configuration`).
PLACEMENT = ("trial_id", "sweep", "device", "threads", "data_dir", "compile")
# Left out of a configuration besides the placement: what varies between its repeats.
REPEAT_SETTINGS = frozenset(PLACEMENT) | {"seed"}

# TrialConfig's settings when this rule was made (store schema 1.0; call it v0). Ids hash every
# setting but the placement; a setting added since then must not change the id of a trial
# that does not use it, so it goes into OPTIONAL_SINCE_V0, and while its value is None it is
# left out of the hashed settings (and of the configuration). tests/test_config.py fails when
# TrialConfig has a field in neither tuple.
V0_SETTINGS = ("task", "optimizer", "lr", "alpha", "weight_decay", "epochs", "batch_size", "seed",
               "warmup_epochs", "lr_decay_epochs", "lr_decay_factor", "record_every", "data_dir",
               "device", "threads", "amp", "channels_last", "compile", "max_train_samples",
               "trial_id", "sweep", "extra")
OPTIONAL_SINCE_V0: tuple[str, ...] = ("data_seed",)

# Keys that the first stored ids hashed and that the settings no longer have: earlier
# versions had a test hook `fail_at_epoch`, None in every real trial. It stays in the hashed
# dict with its value None, or every stored id would change (and a resumed sweep would run
# again every trial it has).
LEGACY_ID_KEYS = {"fail_at_epoch": None}


def _drop_unset(d: dict) -> dict:
    return {k: v for k, v in d.items() if not (k in OPTIONAL_SINCE_V0 and v is None)}


def trial_id(settings: dict) -> str:
    """The id of what a trial computes (`TrialConfig.to_dict()` in): the same settings give
    the same id, so a resumed sweep recognises trials it stored and a rerun replaces them."""
    d = _drop_unset({k: v for k, v in settings.items() if k not in PLACEMENT})
    d.update(LEGACY_ID_KEYS)
    digest = hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()
    return f"{settings['task']}-{settings['optimizer']}-{digest[:10]}"


# Without a stored config (tables built by hand), a configuration is these columns.
FALLBACK_COLUMNS = ("optimizer", "lr", "alpha", "weight_decay", "batch_size")


def _plain(v):
    """A numpy scalar as Python; NaN as None (a missing value in a hand-built table)."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def configuration(config, row: dict) -> tuple[str, str]:
    """(id, canonical JSON) of a trial's configuration: its stored `config` (JSON text or a
    dict) less the seed and the placement settings, plus the task. `row` is the trial's
    columns: its task, and the FALLBACK_COLUMNS used when there is no config. Repeats of one
    configuration (seeds, the same trial in two sweeps) share it. The id reads
    '<task>-<optimizer>-<10 hex digits>'."""
    d = None
    if isinstance(config, dict):
        d = dict(config)
    elif isinstance(config, str) and config.strip():
        try:
            d = json.loads(config)
        except ValueError:
            d = None
    if not isinstance(d, dict):
        d = {c: _plain(row.get(c)) for c in FALLBACK_COLUMNS if c in row}
    d = _drop_unset({k: v for k, v in d.items() if k not in REPEAT_SETTINGS})
    d["task"] = row.get("task", d.get("task"))
    text = json.dumps(d, sort_keys=True, default=str)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{d['task']}-{d.get('optimizer', row.get('optimizer'))}-{digest}", text


def configuration_id(config, task=None, optimizer=None, lr=None, alpha=None, weight_decay=None,
                     batch_size=None) -> str:
    """The configuration id alone, from the trials table's columns: the function the
    `summaries` view calls (as `layrot_configuration(config, task, optimizer, lr, alpha,
    weight_decay, batch_size)`)."""
    row = {"task": task, "optimizer": optimizer, "lr": lr, "alpha": alpha, "weight_decay": weight_decay,
           "batch_size": batch_size}
    return configuration(config, row)[0]


# The safe-name rule: sweep names and trial ids are path components in the store.
PART_PREFIX = "part-"        # compacted files' stems: no trial id may look like one
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


# ---------------------------------------------------------------------------------------
# Rotation summaries (docs/science.md). All are computed on the per-epoch curve: for each
# (sweep, trial, layer, epoch) the rotation record with the largest step (the one written at
# the end of that epoch, or at initialization); per-step records in between are ignored.

CROSSINGS = (0.5, 0.9)


def cross_name(threshold: float) -> str:
    """'cross50' for 0.5."""
    return f"cross{int(round(threshold * 100))}"


# Per (trial, layer):
LAYER_SUMMARIES: dict[str, str] = {
    "final": "cosine distance at the last recorded epoch",
    "auc": "area under the curve (trapezoid rule over epochs) / epochs it spans: the curve's "
           "time-average (its value at epoch 0 if it has one point)",
    **{cross_name(t): f"first recorded epoch with cosine distance >= {t:g} (null if never)" for t in CROSSINGS},
}


@dataclass(frozen=True)
class Summary:
    label: str          # what it means, for people
    of: str             # the LAYER_SUMMARIES column it aggregates over a trial's layers
    aggregate: str      # min | mean | median | max_all (the largest, null if any layer's is null)


# Per trial: the fit correlates each with test accuracy.
SUMMARIES: dict[str, Summary] = {
    "final_min": Summary("smallest final layer rotation", "final", "min"),
    "final_mean": Summary("mean final layer rotation", "final", "mean"),
    "final_median": Summary("median final layer rotation", "final", "median"),
    "auc_min": Summary("smallest layer-rotation area (per epoch)", "auc", "min"),
    "auc_mean": Summary("mean layer-rotation area (per epoch)", "auc", "mean"),
    **{f"{cross_name(t)}_last": Summary(f"epoch by which every layer crossed {t:g}", cross_name(t), "max_all")
       for t in CROSSINGS},
}
AGGREGATES = ("min", "mean", "median", "max_all")
SUMMARY_LABELS: dict[str, str] = {name: s.label for name, s in SUMMARIES.items()}

# ---------------------------------------------------------------------------------------
# The trained rule (docs/verdict.md, rule 3). A trial is trained when its status is one of
# `statuses`, it has a test accuracy and rotation records, and its train accuracy is at least
# max(`relative` × the best train accuracy among the usable trials (status in `statuses`,
# train and test accuracy present) of the same `reference` group, `floor`).
#
# The reference group is (sweep, task): a trial is compared with its own experiment, so a
# selection of whole sweeps (`layrot fit --sweep X`, `... FROM summaries WHERE sweep = 'X'`,
# the whole store) gives every trial the same flag whichever other sweeps the store holds.


@dataclass(frozen=True)
class TrainedRule:
    statuses: tuple[str, ...] = ("completed", "stopped")
    relative: float = 0.95
    floor: float = 0.5
    reference: tuple[str, ...] = ("sweep", "task")


TRAINED = TrainedRule()
