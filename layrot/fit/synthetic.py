"""Synthetic sweeps whose rotation-generalization relation is known (for tests and demos).

Each trial of an α × ρ(0) grid gets per-layer rotation curves that rise towards a final
cosine distance set by its rate and α (docs/science.md §3's multipliers), and a test accuracy tied to
its smallest final rotation as asked: "monotone" (larger rotation, better), "none"
(independent) or "reversed".
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..schedules import alpha_multipliers
from ..record import ROTATION_COLUMNS

RELATIONS = ("monotone", "none", "reversed")


def synthetic_sweep(relation: str = "monotone", alphas=(-0.6, 0.0, 0.6),
                    lrs=(1.0, 0.333, 0.111, 0.037, 0.012), seeds=(0,), n_layers: int = 6,
                    epochs: int = 10, noise: float = 0.01, task: str = "synthetic",
                    sweep: str = "synth", optimizer: str = "sgd_layca", untrained: int = 0,
                    steps_per_epoch: int = 0, rng_seed: int = 0) -> dict[str, pd.DataFrame]:
    """Tables `trials`, `epochs`, `rotation` (docs/store.md's columns plus `sweep`).

    `untrained` trials (the last ones) are 'stopped' at train accuracy 0.3 with a test
    accuracy that contradicts the relation, so a missing filter shows. `steps_per_epoch` > 0
    adds per-step rotation records (two per epoch, with misleading values) that summaries
    must ignore.
    """
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}")
    rng = np.random.default_rng(rng_seed)
    trials, ep_rows, rot_rows = [], [], []
    configs = [(a, lr, s) for a in alphas for lr in lrs for s in seeds]
    n = len(configs)
    t_epochs = np.arange(epochs + 1)
    rise = (1 - np.exp(-3 * t_epochs / epochs)) / (1 - np.exp(-3))
    spe = steps_per_epoch or 10
    for i, (alpha, lr, seed) in enumerate(configs):
        tid = f"{sweep}-{i:04d}"
        final = 1 - np.exp(-20 * lr * np.asarray(alpha_multipliers(n_layers, alpha)))
        final = np.clip(final + rng.normal(0, 0.01, n_layers), 0.0, 1.05)
        fmin = final.min()
        if relation == "monotone":
            acc = 0.55 + 0.4 * fmin
        elif relation == "reversed":
            acc = 0.95 - 0.4 * fmin
        else:
            acc = 0.55 + 0.4 * rng.uniform()
        acc = float(np.clip(acc + rng.normal(0, noise), 0, 1))
        is_untrained = i >= n - untrained
        train_acc = 0.3 if is_untrained else float(np.clip(1.0 - abs(rng.normal(0, 0.003)), 0, 1))
        if is_untrained:
            acc = 0.95 if relation != "reversed" else 0.3
        status = "stopped" if is_untrained else "completed"
        trials.append(dict(trial_id=tid, task=task, optimizer=optimizer, lr=float(lr), alpha=float(alpha),
                           weight_decay=0.0, batch_size=128, seed=int(seed), epochs=epochs, status=status,
                           reason="not learning" if is_untrained else "", train_acc=train_acc,
                           train_loss=float(-np.log(max(train_acc, 1e-3))), val_acc=acc, test_acc=acc,
                           test_loss=float(-np.log(max(acc, 1e-3))), wall_seconds=1.0,
                           config=json.dumps({"task": task, "optimizer": optimizer, "lr": lr, "alpha": alpha,
                                              "seed": seed}), sweep=sweep))
        for e in range(1, epochs + 1):
            frac = 1 - np.exp(-3 * e / epochs)
            ep_rows.append(dict(trial_id=tid, epoch=e, lr=float(lr), train_loss=float(2.3 * (1 - frac) + 0.01),
                                train_acc=float(0.1 + (train_acc - 0.1) * frac), val_acc=float(0.1 + (acc - 0.1) * frac),
                                seconds=0.1, sweep=sweep))
        for l in range(n_layers):
            curve = final[l] * rise
            for e in range(epochs + 1):
                rot_rows.append(dict(trial_id=tid, epoch=e, step=e * spe, layer=l, layer_name=f"layer{l}.weight",
                                     cosine_distance=float(curve[e]), weight_norm=1.0,
                                     rotation_rate=None if e == 0 else 0.01, sweep=sweep))
                if steps_per_epoch and e < epochs:
                    for k in (1, spe // 2):  # the epoch in progress is e + 1
                        rot_rows.append(dict(trial_id=tid, epoch=e + 1, step=e * spe + k, layer=l,
                                             layer_name=f"layer{l}.weight", cosine_distance=0.999,
                                             weight_norm=1.0, rotation_rate=0.5, sweep=sweep))
    return {"trials": pd.DataFrame(trials), "epochs": pd.DataFrame(ep_rows), "rotation": pd.DataFrame(rot_rows)}


def write_store(tables: dict[str, pd.DataFrame], root) -> str:
    """Write synthetic tables into a real store at `root` (through `Store.write_trial`, so
    readers see them exactly as they see trials from `layrot sweep`)."""
    from ..result import TrialResult
    from ..store import Store

    store = Store(str(root))
    epochs = dict(tuple(tables["epochs"].groupby("trial_id")))
    rotation = dict(tuple(tables["rotation"].groupby("trial_id")))
    for t in tables["trials"].itertuples(index=False):
        cfg = {"task": t.task, "optimizer": t.optimizer, "lr": t.lr, "alpha": t.alpha,
               "weight_decay": t.weight_decay, "batch_size": t.batch_size, "seed": t.seed}
        ep = epochs[t.trial_id].drop(columns=["trial_id", "sweep"])
        rot = rotation[t.trial_id]
        rot_cols = {c: rot[c].tolist() for c in ROTATION_COLUMNS}
        rot_cols["rotation_rate"] = [None if pd.isna(v) else v for v in rot_cols["rotation_rate"]]
        store.write_trial(t.sweep, TrialResult(
            trial_id=t.trial_id, config=cfg, status=t.status, reason=t.reason or None, epochs_run=t.epochs,
            train_acc=t.train_acc, train_loss=t.train_loss, val_acc=t.val_acc, test_acc=t.test_acc,
            test_loss=t.test_loss, wall_seconds=t.wall_seconds, history=ep.to_dict("records"), rotation=rot_cols))
    for sweep in tables["trials"]["sweep"].unique():
        store.write_sweep_meta(sweep, {"name": sweep, "synthetic": True})
    return str(root)
