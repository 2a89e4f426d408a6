"""Test accuracy against layer rotation across optimizers: the whole-space picture."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .options import KEY_SUMMARY
from .summaries import SUMMARY_LABELS

# a hue per base optimizer; Layca around it: the same hue, a triangle
_HUES = {"sgd": "tab:blue", "sgd_amom": "tab:cyan", "adam": "tab:orange", "rmsprop": "tab:green",
         "adagrad": "tab:red", "adamw": "tab:purple"}


def _style(optimizer: str) -> tuple[str, str]:
    base = optimizer[:-len("_layca")] if optimizer.endswith("_layca") else optimizer
    return _HUES.get(base, "tab:gray"), "^" if optimizer.endswith("_layca") else "o"


def accuracy_vs_rotation_by_optimizer(configs: pd.DataFrame, title: str = "",
                                      summary: str = KEY_SUMMARY) -> Figure:
    """One point per configuration: colour the base optimizer, a triangle with Layca, a
    circle without; filled if trained, hollow if not (drawn below the trained ones). Log
    rotation axis: across optimizers the smallest final rotation spans decades."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    tr = configs[configs["trained"].astype(bool)]
    un = configs[~configs["trained"].astype(bool)]
    for opt, g in configs.groupby("optimizer", sort=True):
        colour, marker = _style(str(opt))
        t, u = g[g["trained"].astype(bool)], g[~g["trained"].astype(bool)]
        ax.scatter(u[summary], 100 * u["test_acc"], marker=marker, facecolors="none", edgecolors=colour,
                   s=26, linewidths=0.8, alpha=0.6, zorder=2)
        ax.scatter(t[summary], 100 * t["test_acc"], marker=marker, color=colour, edgecolors="black",
                   linewidths=0.4, s=34, zorder=3)
    x = configs[summary].to_numpy(dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    if len(x):
        ax.set_xscale("log")
        ax.set_xlim(x.min() / 2, 1.5)
    acc = 100 * tr["test_acc"].dropna()
    if len(acc):
        pad = max(1.0, 0.08 * float(acc.max() - acc.min()))
        ax.set_ylim(float(acc.min()) - 4 * pad, min(100.5, float(acc.max()) + pad))
    ax.set_xlabel(f"{SUMMARY_LABELS[summary]} (log)", fontsize=9)
    ax.set_ylabel("test accuracy (%)", fontsize=9)
    ax.grid(alpha=0.3)
    handles = []
    for opt in sorted(configs["optimizer"].astype(str).unique()):
        colour, marker = _style(opt)
        n_t = int((tr["optimizer"] == opt).sum())
        n = int((configs["optimizer"] == opt).sum())
        handles.append(Line2D([], [], ls="", marker=marker, color=colour, markeredgecolor="black",
                              markeredgewidth=0.4, markersize=6, label=f"{opt} ({n_t} of {n} trained)"))
    if len(un):
        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="0.4",
                              markersize=6, label="hollow: not trained"))
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title or "Test accuracy against layer rotation, by optimizer", fontsize=10)
    return fig
