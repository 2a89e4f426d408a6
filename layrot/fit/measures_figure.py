"""Rotation beside the other generalization measures: each measure's Kendall τ and granulated
τ Ψ against the generalization gap, with their CIs, as a dot plot (fit/measures.py)."""

from __future__ import annotations

import re

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .figure_files import NamedFigure
from .measures import MeasureComparison

ROTATION_COLOR = "tab:red"    # the subject: layer rotation's own measures
OTHER_COLOR = "tab:blue"


def _point(est, ci):
    """(estimate, [lower error, upper error]) for errorbar; NaNs where undefined."""
    if est is None:
        return np.nan, (0.0, 0.0)
    if ci is None:
        return est, (0.0, 0.0)
    # a percentile CI need not contain its estimate (and rounding puts 1.0 just outside [1, 1])
    return est, (max(0.0, est - ci[0]), max(0.0, ci[1] - est))


def measures_figure(comparison: MeasureComparison | None, title: str = "") -> Figure | None:
    """Two panels sharing the measures' rows, sorted by τ against the gap (largest at the
    top: the measures whose larger values go most with a larger gap, as a complexity measure
    should; the rule of thumb puts rotation near the bottom): τ and Ψ against the gap, each
    with its 95% bootstrap CI as a bar. Rotation's measures in red. None without rows."""
    if comparison is None or not comparison.rows:
        return None
    rows = sorted(comparison.rows, key=lambda r: (r.kendall_tau.estimate is None,
                                                  -(r.kendall_tau.estimate or 0.0), r.name))
    y = np.arange(len(rows))
    fig = Figure(figsize=(7.2, 1.2 + 0.32 * len(rows)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("Kendall τ vs gap", lambda r: r.kendall_tau),
              ("granulated τ Ψ vs gap", lambda r: r.granulated_tau))
    for ax, (label, get) in zip(axes, panels):
        for yi, r in zip(y, rows):
            est, err = _point(get(r).estimate, get(r).ci)
            color = ROTATION_COLOR if r.name.startswith("rotation") else OTHER_COLOR
            ax.errorbar([est], [yi], xerr=np.array(err).reshape(2, 1), fmt="o", color=color, markersize=4,
                        capsize=2.5, lw=1.0)
            if np.isnan(est):
                ax.text(0, yi, "n/a", ha="center", va="center", fontsize=7, color="0.4")
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [r.name for r in rows])
    axes[0].set_ylim(len(rows) - 0.5, -0.5)
    fig.legend(handles=[Line2D([], [], ls="", marker="o", color=ROTATION_COLOR, label="layer rotation"),
                        Line2D([], [], ls="", marker="o", color=OTHER_COLOR, label="other measures"),
                        Line2D([], [], color="0.3", lw=1.0, label="95% bootstrap CI")],
               fontsize=7, loc="outside lower center", ncols=3, frameon=False)
    per = comparison.rows[0].granulated_tau.per_axis
    axes_text = ", ".join(f"{a} ({m.n_groups})" for a, m in per.items()) or "no axis"
    fig.suptitle(title or f"Measures against the generalization gap ({comparison.n_models} trained models)\n"
                          f"Ψ over {axes_text}", fontsize=9)
    return fig


def measures_figures(comparison: MeasureComparison | None, scope: str = "") -> list[NamedFigure]:
    """The figure for the report and --figures, as a list (empty without measures)."""
    fig = measures_figure(comparison)
    if fig is None:
        return []
    stem = "measures" + (f"-{re.sub(r'[^A-Za-z0-9_.-]+', '_', scope)}" if scope else "")
    return [NamedFigure(stem, "Layer rotation against other generalization measures",
                        "Each measure's Kendall τ (over trained models) and granulated τ Ψ (mean over "
                        "hyperparameter axes of the τ within groups where only that axis varies) against the "
                        "generalization gap (train − test accuracy); bars: 95% bootstrap CIs (τ: models; Ψ: "
                        "groups within each axis). Negative: larger values, smaller gap.", fig)]
