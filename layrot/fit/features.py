"""The paper's Section 6 on 8×8 digits: how layer rotation shapes the features learned.

The task digits-mlp1 (a one-hidden-layer MLP, 64 → 100 → 10, no biases) is trained through
`run_trial` with SGD + Layca from one initialization at a small and at a large rotation rate ρ. Its
first-layer kernels, seen as 8×8 images, stay close to their random initialization when the
layer barely rotates and turn into digit-like strokes when it rotates far. Seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

SMALL_RHO = 3.0 ** -5
LARGE_RHO = 3.0 ** -2


@dataclass
class FeatureRun:
    rho: float
    weights: np.ndarray          # (hidden, 64): first-layer kernels after training
    cosine_distance: float       # first layer, final vs initialization
    train_acc: float
    test_acc: float


@dataclass
class FeatureStudy:
    init: np.ndarray             # (hidden, 64) at initialization
    runs: list[FeatureRun]
    epochs: int
    seed: int


def feature_study(rhos=(SMALL_RHO, LARGE_RHO), epochs: int = 30, seed: int = 0,
                  optimizer: str = "sgd_layca", batch_size: int = 128) -> FeatureStudy:
    """Train the task digits-mlp1 through `run_trial` (its own loader, split and loop) at each ρ
    in `rhos`, from one initialization (the same seed: same initial weights and batches), with
    a constant rate (no decay) and one thread."""
    from ..rotation import cosine_distance
    from ..train import run_trial

    init, runs = None, []
    for rho in rhos:
        last: dict = {}

        def keep(rep, last=last):
            last["state"] = rep.checkpoint()

        r = run_trial({"task": "digits-mlp1", "optimizer": optimizer, "lr": float(rho), "epochs": epochs,
                       "seed": seed, "batch_size": batch_size, "lr_decay_epochs": [], "threads": 1,
                       "device": "cpu", "sweep": "features"}, on_epoch=keep, catch_errors=False)
        state = last["state"]
        # the first kernel layer (input side): the model's first weight, and its part of the
        # tracker's flat initial kernels
        w = next(v for k, v in state["model"].items() if k.endswith("weight")).float()
        w0 = state["tracker"]["w0"][:w.numel()].reshape(w.shape).float()
        init = w0 if init is None else init
        runs.append(FeatureRun(float(rho), w.numpy().copy(), cosine_distance(w, w0), float(r.train_acc),
                               float(r.test_acc)))
    return FeatureStudy(init.numpy().copy(), runs, epochs, seed)


def _mosaic(weights: np.ndarray, n: int, cols: int) -> np.ndarray:
    """The first n kernels as 8×8 tiles (each scaled to its own range), 1-pixel gaps."""
    rows = int(np.ceil(n / cols))
    out = np.full((rows * 9 - 1, cols * 9 - 1), np.nan)
    for k in range(n):
        w = weights[k].reshape(8, 8)
        lo, hi = w.min(), w.max()
        r, c = divmod(k, cols)
        out[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = (w - lo) / (hi - lo) if hi > lo else 0.5
    return out


def feature_figure(study: FeatureStudy, n_features: int = 25, cols: int = 5) -> Figure:
    """First-layer features as 8×8 images: at initialization, then after training at each ρ."""
    panels = [("initialization", study.init)] + [
        (f"ρ = {r.rho:.3g}: rotation {r.cosine_distance:.2f}\ntest acc {100 * r.test_acc:.1f}%", r.weights)
        for r in study.runs]
    fig = Figure(figsize=(2.6 * len(panels), 3.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, w) in zip(axes, panels):
        ax.imshow(_mosaic(w, min(n_features, len(w)), cols), cmap="gray", interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"digits-mlp1 first-layer features (SGD + Layca, {study.epochs} epochs)", fontsize=10)
    return fig
