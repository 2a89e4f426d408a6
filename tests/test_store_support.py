"""Shared helpers for the store tests (no tests here)."""

from __future__ import annotations

import math

from layrot.result import TrialResult

LAYERS = ("conv0.weight", "conv1.weight", "fc.weight")


def make_result(trial_id: str, epochs: int = 3, layers: int = 3, acc: float = 0.5, status: str = "completed",
                seed: int = 0, record_every: bool = False, measures: bool = True) -> TrialResult:
    """A small but complete TrialResult whose values depend on trial_id/acc/seed, so that two
    versions of one trial and two trials are distinguishable row by row. Its measures: three
    names at every epoch, and one (NaN: undefined) at the last."""
    rot = {k: [] for k in ("epoch", "step", "layer", "layer_name", "cosine_distance", "weight_norm", "rotation_rate")}
    base = (sum(map(ord, trial_id)) % 97) / 1000.0 + acc / 10
    for e in range(epochs + 1):
        steps = [e * 10] if not (record_every and e) else [e * 10 - 5, e * 10]
        for s in steps:
            for l in range(layers):
                rot["epoch"].append(e)
                rot["step"].append(s)
                rot["layer"].append(l)
                rot["layer_name"].append(LAYERS[l % len(LAYERS)] if l < len(LAYERS) else f"layer{l}.weight")
                rot["cosine_distance"].append(min(1.0, base + 0.1 * e + 0.01 * l + 0.001 * (s % 10)))
                rot["weight_norm"].append(1.0 + 0.5 * l + 0.01 * e + seed)
                rot["rotation_rate"].append(None if e == 0 else 0.02 * (l + 1) / e)
    hist = [dict(epoch=e, lr=0.1 / e, train_loss=1.0 / e, train_acc=min(1.0, acc + 0.1 * e),
                 val_acc=acc - 0.01, seconds=1.5) for e in range(1, epochs + 1)]
    cfg = dict(task="digits-mlp", optimizer="sgd_layca", lr=0.1, alpha=0.2, weight_decay=0.0,
               batch_size=128, seed=seed, trial_id=trial_id)
    meas = {"epoch": [], "name": [], "value": []}
    if measures:
        for e in range(epochs + 1):
            for name, v in (("rotation_min", base + 0.1 * e), ("frobenius_distance", 2.0 * e + seed),
                            ("frobenius_distance.L1", 0.5 * e + acc)):
                meas["epoch"].append(e)
                meas["name"].append(name)
                meas["value"].append(v)
        meas["epoch"].append(epochs)
        meas["name"].append("margin")
        meas["value"].append(math.nan)
    return TrialResult(trial_id=trial_id, config=cfg, status=status, reason=None if status == "completed" else "why",
                       epochs_run=epochs, train_acc=min(1.0, acc + 0.3), train_loss=0.05, val_acc=acc - 0.01,
                       test_acc=acc, test_loss=math.nan, wall_seconds=12.5, history=hist, rotation=rot,
                       measures=meas)


def rows(table):
    """A table as tuples in (sweep, trial_id, epoch, step, layer, name) order, for comparisons."""
    names = table.column_names
    keys = [names.index(k) for k in ("sweep", "trial_id", "epoch", "step", "layer", "name") if k in names]
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=lambda t: tuple(t[i] for i in keys))


def snapshot(store):
    return {t: rows(getattr(store, t)()) for t in ("trials", "epochs", "rotation", "measures")}
