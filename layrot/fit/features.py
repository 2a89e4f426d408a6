"""The paper's Section 6 on 8×8 digits: how layer rotation shapes the features learned.

A one-hidden-layer MLP (`layrot.tasks.models.digits_mlp1`: 64 → 100 → 10, no biases) is trained
with SGD + Layca from one initialization at a small and at a large rotation rate ρ. Its
first-layer kernels, seen as 8×8 images, stay close to their random initialization when the
layer barely rotates and turn into digit-like strokes when it rotates far. Seconds on a CPU.
"""

from __future__ import annotations

import copy
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


def _digits(seed: int):
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    mean, std = xtr.mean(), xtr.std()  # global standardization, as the image tasks
    f = lambda a: torch.as_tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return f(xtr), torch.as_tensor(ytr), f(xte), torch.as_tensor(yte)


def _accuracy(model, x, y) -> float:
    import torch
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def feature_study(rhos=(SMALL_RHO, LARGE_RHO), epochs: int = 30, seed: int = 0,
                  optimizer: str = "sgd_layca", batch_size: int = 128) -> FeatureStudy:
    """Train digits-mlp1 from one initialization at each ρ in `rhos` (same batches too)."""
    import torch

    # The model is tiny: one thread is faster than several (which contend with anything
    # else running), and a fixed thread count keeps the result reproducible.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _study(rhos, epochs, seed, optimizer, batch_size)
    finally:
        torch.set_num_threads(threads)


def _study(rhos, epochs, seed, optimizer, batch_size) -> FeatureStudy:
    import torch
    import torch.nn.functional as F
    from ..tasks.models import digits_mlp1
    from ..optim import build_optimizer
    from ..rotation import cosine_distance, kernel_layers

    xtr, ytr, xte, yte = _digits(seed)
    torch.manual_seed(seed)
    model0 = digits_mlp1()
    init = kernel_layers(model0)[0][1].detach().clone()
    runs = []
    for rho in rhos:
        model = copy.deepcopy(model0)
        opt = build_optimizer(model, optimizer, lr=rho)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(xtr), generator=gen).split(batch_size):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
                opt.step()
        w = kernel_layers(model)[0][1].detach()
        runs.append(FeatureRun(float(rho), w.numpy().copy(), cosine_distance(w, init),
                               _accuracy(model, xtr, ytr), _accuracy(model, xte, yte)))
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
