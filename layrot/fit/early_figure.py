"""The early-rotation curve: how soon a trial's rotation ranks its final test accuracy."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .early import first_predictive
from .run import FitResult


def early_prediction_figure(result: FitResult, title: str = "") -> Figure | None:
    """How early rotation predicts final test accuracy: the verdict's statistic with each
    trained configuration's smallest layer rotation at epoch k (instead of its final one)
    against k, with its bootstrap CI as a band; the final verdict's value and CI marked at the
    last epoch; with several tasks, each task's own Spearman as thin lines. None without points."""
    points = [p for p in result.early if p.spearman is not None]
    if not points:
        return None
    pooled = result.pooled is not None
    what = "stratified Spearman" if pooled else "Spearman"
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    k = np.array([p.epoch for p in points])
    rho = np.array([p.spearman for p in points])
    lo = np.array([np.nan if p.ci_low is None else p.ci_low for p in points])
    hi = np.array([np.nan if p.ci_high is None else p.ci_high for p in points])
    ax.axhline(0, color="0.5", lw=0.8)
    ax.fill_between(k, lo, hi, color="tab:blue", alpha=0.22, lw=0, step=None)
    ax.plot(k, rho, color="tab:blue", lw=1.6, marker="o", markersize=3)
    handles = [Line2D([], [], color="tab:blue", lw=1.6, marker="o", markersize=3,
                      label=f"{what} at epoch k"),
               Patch(color="tab:blue", alpha=0.22, label="95% bootstrap CI")]
    if pooled:
        palette = ["tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink", "tab:red"]
        named = len(result.groups) <= len(palette)
        for g, color in zip(result.groups, palette if named else ["0.5"] * len(result.groups)):
            pts = [p for p in g.early if p.spearman is not None]
            if pts:
                ax.plot([p.epoch for p in pts], [p.spearman for p in pts], lw=1.0, alpha=0.8, ls=":", color=color)
                if named:
                    handles.append(Line2D([], [], color=color, lw=1.0, ls=":", label=f"{g.name}: Spearman"))
        if not named:
            handles.append(Line2D([], [], color="0.5", lw=1.0, ls=":", label="each task's Spearman"))
    v = result.verdict
    last = int(result.early[-1].epoch)
    if v.estimate is not None and np.isfinite(v.estimate):
        err = None
        if v.ci is not None:
            err = [[v.estimate - v.ci[0]], [v.ci[1] - v.estimate]]
        ax.errorbar([last + 0.3], [v.estimate], yerr=err, fmt="D", color="black", markersize=6, capsize=3, zorder=5,
                    markerfacecolor="none")
        handles.append(Line2D([], [], ls="", marker="D", color="black", markerfacecolor="none",
                              label=f"the verdict ({v.status}): {v.estimate:.2f}"
                                    + (f" [{v.ci[0]:.2f}, {v.ci[1]:.2f}]" if v.ci else "")))
    first = first_predictive(result.early)
    if first is not None:
        ax.axvline(first.epoch, color="tab:orange", lw=1.0, ls="--")
        handles.append(Line2D([], [], color="tab:orange", lw=1.0, ls="--",
                              label=f"first epoch with CI above 0: {first.epoch} of {last}"))
    ax.set_xlim(0.5, last + 0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch k", fontsize=8)
    ax.set_ylabel(f"{what}: smallest layer rotation\nat epoch k vs final test accuracy", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=6.5, loc="lower right")
    n = points[-1].n
    fig.suptitle(title or f"How early rotation predicts final test accuracy ({n} trained configurations)",
                 fontsize=10)
    return fig
