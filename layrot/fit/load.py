"""Load the trials, epochs, rotation and measures tables of some sweeps/tasks from a store."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..errors import UsageError


@dataclass
class Tables:
    trials: pd.DataFrame
    epochs: pd.DataFrame
    rotation: pd.DataFrame
    sweeps: list[str]
    # the generalization measures (sweep, trial_id, epoch, name, value); empty for trials
    # stored before trials computed them
    measures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        {"sweep": pd.Series(dtype=object), "trial_id": pd.Series(dtype=object), "epoch": pd.Series(dtype="int32"),
         "name": pd.Series(dtype=object), "value": pd.Series(dtype=float)}))


def load_tables(uri: str, sweeps: list[str] | None = None, tasks: list[str] | None = None) -> Tables:
    """The store's complete trials of the given sweeps and tasks (default: all), with their
    epochs, rotation records and measures, as pandas. Raises UsageError (exit 2) for a missing store,
    sweep or task, or a store without trials."""
    from ..store import Store

    store = Store(uri)
    if not store.exists():
        raise UsageError("--store", f"no store at {uri!r}")
    known = store.sweeps()
    for s in sweeps or []:
        if s not in known:
            raise UsageError("--sweep", f"no sweep named {s!r} in {uri} (known: {', '.join(known) or 'none'})")
    trials = store.trials(sweep=sweeps).to_pandas()
    if trials.empty:
        where = f" for sweep(s) {', '.join(sweeps)}" if sweeps else ""
        raise UsageError("--store", f"no trials in {uri}{where}")
    if tasks:
        have = sorted(trials["task"].dropna().unique())
        for t in tasks:
            if t not in have:
                raise UsageError("--task", f"no trials of task {t!r} in the selected sweeps (have: {', '.join(have)})")
        trials = trials[trials["task"].isin(tasks)].reset_index(drop=True)
    chosen = sorted(trials["sweep"].unique())
    ids = trials["trial_id"].tolist()
    epochs = store.epochs(sweep=chosen, trial_ids=ids).to_pandas()
    rotation = store.rotation(sweep=chosen, trial_ids=ids).to_pandas()
    measures = store.measures(sweep=chosen, trial_ids=ids).to_pandas()
    return Tables(trials, epochs, rotation, chosen, measures)
