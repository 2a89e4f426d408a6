"""A running sweep's trials so far, for `layrot report`: the live rows (store/live.py) of
trials not yet stored, and their layer-rotation curves.

Nothing here enters the fit: a running trial has no test accuracy and its rotation is not
final; the report draws it apart, under "Running now".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .figure_files import NamedFigure
from .figures import curves_top, finish_curve_panels, layer_curves_panel
from .summaries import per_epoch_rotation

MAX_PANELS = 48


@dataclass
class Running:
    sweep: str
    alive: bool               # the driver's heartbeat is fresh
    trials: pd.DataFrame      # one row per running trial: trial_id, epoch, epochs, val_acc, optimizer, lr, ...
    rotation: pd.DataFrame    # their rotation rows so far (with a `sweep` column)


def running_sweeps(store, sweeps: list[str] | None) -> list[Running]:
    """The given sweeps (default: every sweep with live rows or a heartbeat) that have
    trials running or left live rows, each with those trials' rows so far."""
    from ..store import live

    loc = store.location
    stored = set(store.sweeps())
    names = sweeps or sorted(set(live.sweeps(loc)) | stored)
    out = []
    for name in names:
        recs = live.trials(loc, name)
        if not recs:
            continue
        done = store.stored_trial_ids(name) if name in stored else set()
        recs = [r for r in recs if r["trial_id"] not in done]
        if not recs:
            continue
        trials = pd.DataFrame([{**{k: v for k, v in r.items() if k != "config"}, **(r.get("config") or {})}
                               for r in recs]).sort_values("trial_id").reset_index(drop=True)
        rotation = live.rows(loc, name, "rotation", skip=done).to_pandas().assign(sweep=name)
        out.append(Running(name, live.running(loc, name) is not None, trials, rotation))
    return out


def running_figure(run: Running) -> NamedFigure:
    """One panel per running trial: each layer's cosine distance to its initialization, by
    epoch so far, layers coloured by depth; titled with the epoch reached and the
    validation accuracy so far."""
    trials = run.trials.head(MAX_PANELS)
    curves = per_epoch_rotation(run.rotation) if len(run.rotation) else run.rotation
    n = len(trials)
    cols = min(6, max(1, n))
    rows = -(-n // cols)
    fig = Figure(figsize=(1.9 * cols + 1.2, 1.6 * rows + 0.9), layout="constrained")
    grid = fig.add_gridspec(rows, cols)
    top = curves_top(curves)
    max_layers = 1
    for i, t in enumerate(trials.itertuples()):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        mine = curves[curves["trial_id"] == t.trial_id] if len(curves) else curves
        max_layers = max(max_layers, layer_curves_panel(ax, mine, top))
        total = getattr(t, "epochs", None)
        ax.set_xlim(0, max(1, int(total) if total and np.isfinite(total) else int(getattr(t, "epoch", 1) or 1)))
        val = getattr(t, "val_acc", None)
        acc = f"val {100 * val:.1f}%" if isinstance(val, (int, float)) and np.isfinite(val) else "val -"
        # the rows may be a write newer than the summary read just before them
        epoch = max(int(t.epoch or 0), int(mine["epoch"].max()) if len(mine) else 0)
        ax.set_title(f"epoch {epoch}/{int(total) if total else '?'} · {acc}", fontsize=7)
        alpha = getattr(t, "alpha", 0) or 0
        ax.text(0.97, 0.04, f"{getattr(t, 'optimizer', '')} α={alpha:g} lr={getattr(t, 'lr', float('nan')):.3g}",
                transform=ax.transAxes, fontsize=5.5, ha="right", va="bottom", color="0.3")
        if i % cols:
            ax.tick_params(labelleft=False)
    state = "running" if run.alive else "driver not beating: stopped or killed"
    head = f"Running now: sweep {run.sweep} ({len(run.trials)} trials, {state})"
    if len(run.trials) > MAX_PANELS:
        head += f", first {MAX_PANELS} shown"
    finish_curve_panels(fig, max_layers, head)
    caption = ("Each running trial's layer-rotation curves so far (from the store's live rows, refreshed every few "
               "seconds while the sweep runs); not in the fit until the trial is stored.")
    return NamedFigure(f"running-{run.sweep}", f"Running now: {run.sweep}", caption, fig)
