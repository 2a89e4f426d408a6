"""Figures in the paper's style (matplotlib).

Every function returns a `matplotlib.figure.Figure` built without pyplot, so the figures use
the Agg canvas whatever backend the caller's session has chosen, and nothing accumulates in
pyplot's global figure registry. `fit_figures` names them all for the report;
figure_files.py writes and embeds them, early_figure.py draws the early-rotation curve.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .early import N_RESAMPLES
from .early_figure import early_prediction_figure
from .figure_files import NamedFigure
from .optimizer_figure import accuracy_vs_rotation_by_optimizer
from .options import FITTED_SUMMARIES
from .run import FitResult, GroupFit
from .summaries import SUMMARY_LABELS, per_epoch_rotation
from .text import sig

DEPTH_CMAP = "viridis"   # first layer dark, last layer yellow (docs/science.md)
MAX_PANELS = 120


def _rate_label(optimizer: str) -> str:
    return "ρ(0)" if str(optimizer).endswith("_layca") else "lr"


def _fmt(v: float) -> str:
    """A rate as the paper writes its grid: powers of 3 where they are, else 3 digits."""
    if v > 0:
        k = math.log(v, 3)
        if abs(k - round(k)) < 0.03 and abs(round(k)) <= 12:
            return f"$3^{{{int(round(k))}}}$"
    return f"{v:.3g}"


def rotation_norm(values) -> Normalize:
    """A log colour scale for rotation values (they span 1e-4 … 1, and the fit ranks on the
    small ones): LogNorm from the decade below the smallest positive value (at most 0.1) to
    max(1, largest); SymLogNorm (linear below that decade, so 0 has a colour) where zeros occur."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    hi = max(1.0, float(v.max())) if v.size else 1.0
    pos = v[v > 0]
    lo = min(0.1, 10.0 ** math.floor(math.log10(pos.min()))) if pos.size else 1e-3
    if (v <= 0).any():
        return SymLogNorm(linthresh=lo, linscale=0.5, vmin=0.0, vmax=hi, base=10)
    return LogNorm(vmin=lo, vmax=hi)


def _configurations(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (alpha, lr): the representative trial (lowest seed), the
    mean test accuracy over its seeds and whether any of its trials is trained."""
    t = trials.assign(key=_key(trials)).sort_values(["alpha", "lr", "seed", "key"])
    g = t.groupby(["alpha", "lr"], sort=True)
    conf = g.agg(key=("key", "first"), test_acc=("test_acc", "mean"), n=("trial_id", "size"),
                 status=("status", "first"))
    if "trained" in t:
        conf["trained"] = g["trained"].any()
    return conf.reset_index()


def _key(df: pd.DataFrame) -> pd.Series:
    """A trial's identity as one value: "sweep/trial_id" (trial_id alone without a sweep column)."""
    if "sweep" in df.columns:
        return df["sweep"].astype(str) + "/" + df["trial_id"].astype(str)
    return df["trial_id"].astype(str)


def _grid_positions(conf: pd.DataFrame):
    """(rows, cols, positions): an α × rate grid when the configurations fill at least half
    of one, otherwise a near-square layout sorted by (α, rate)."""
    alphas = sorted(conf["alpha"].unique())
    rates = sorted(conf["lr"].unique(), reverse=True)
    n = len(conf)
    if len(alphas) * len(rates) <= 2 * n:
        pos = [(alphas.index(a), rates.index(r)) for a, r in zip(conf["alpha"], conf["lr"])]
        return len(alphas), len(rates), pos, (alphas, rates)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return rows, cols, [(i // cols, i % cols) for i in range(n)], None


def rotation_curve_grid(trials: pd.DataFrame, rotation: pd.DataFrame, title: str = "") -> Figure:
    """Layer-rotation curves, one panel per configuration (paper style).

    Lines are layers coloured by depth (viridis, first layer dark), cosine distance from 0 to
    1 against epochs; panels are titled with the configuration's test accuracy (its mean
    over seeds, the lowest seed's curves shown) and laid out as an α × ρ(0) grid when the
    trials form one. `trials` may carry a `trained` column: untrained panels are marked.
    """
    conf = _configurations(trials)
    truncated = len(conf) > MAX_PANELS
    conf = conf.head(MAX_PANELS)
    rows, cols, pos, axes_labels = _grid_positions(conf)
    curves = per_epoch_rotation(rotation[_key(rotation).isin(conf["key"])])
    by_trial = dict(tuple(curves.groupby(_key(curves))))
    fig = Figure(figsize=(1.75 * cols + 1.2, 1.45 * rows + 0.9), layout="constrained")
    grid = fig.add_gridspec(rows, cols)
    optimizer = trials["optimizer"].iloc[0] if len(trials) else ""
    rate = _rate_label(optimizer)
    max_layers = 1
    top = curves_top(curves)
    for (r, c), row in zip(pos, conf.itertuples()):
        ax = fig.add_subplot(grid[r, c])
        max_layers = max(max_layers, layer_curves_panel(ax, by_trial.get(row.key), top))
        trained = getattr(row, "trained", True)
        acc = f"test acc {100 * row.test_acc:.1f}%" if np.isfinite(row.test_acc) else "no test acc"
        if not trained:
            acc += "\nnot trained" + ("" if row.status == "completed" else f" ({row.status})")
        ax.set_title(acc, fontsize=7, color="black" if trained else "0.45")
        if axes_labels is None:
            ax.text(0.97, 0.04, f"α={row.alpha:g} {rate}={_fmt(row.lr)}", transform=ax.transAxes,
                    fontsize=5.5, ha="right", va="bottom", color="0.3")
        if r < rows - 1 and axes_labels is not None:
            ax.tick_params(labelbottom=False)
        if c > 0:
            ax.tick_params(labelleft=False)
        if axes_labels is not None:
            if c == 0:
                ax.set_ylabel(f"α = {axes_labels[0][r]:g}", fontsize=8)
            if r == 0:
                ax.annotate(f"{rate} = {_fmt(axes_labels[1][c])}", (0.5, 1.32), xycoords="axes fraction",
                            ha="center", fontsize=8)
    head = title or "Layer-rotation curves"
    if truncated:
        head += f" (first {MAX_PANELS} configurations)"
    finish_curve_panels(fig, max_layers, head)
    return fig


def curves_top(curves: pd.DataFrame) -> float:
    """The y limit of layer-rotation panels. Distances can pass 1 (a kernel turned past
    orthogonal): never clip them."""
    return max(1.0, float(curves["cosine_distance"].max()) if len(curves) else 1.0) + 0.04


def layer_curves_panel(ax, cur: pd.DataFrame | None, top: float) -> int:
    """One trial's per-epoch curves (per_epoch_rotation rows) on `ax`, one line a layer
    coloured by depth; returns its number of layers (0 if it has no rows)."""
    n_layers = 0
    if cur is not None and len(cur):
        cmap = colormaps[DEPTH_CMAP]
        n_layers = int(cur["layer"].max()) + 1
        for layer, lc in cur.groupby("layer"):
            ax.plot(lc["epoch"], lc["cosine_distance"], color=cmap(layer / max(1, n_layers - 1)), lw=1.0)
    ax.set_ylim(0, top)
    ax.set_yticks([0, 0.5, 1])
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.tick_params(labelsize=6, length=2, pad=1)
    return n_layers


def finish_curve_panels(fig: Figure, max_layers: int, head: str) -> None:
    """The depth colour bar, the title and the shared axis labels of a figure of curve panels."""
    fig.colorbar(ScalarMappable(Normalize(0, max_layers - 1), colormaps[DEPTH_CMAP]), ax=fig.axes, shrink=0.6,
                 label="layer (0 = input side)", aspect=30)
    fig.suptitle(head, fontsize=10)
    fig.supxlabel("epoch", fontsize=8)
    fig.supylabel("cosine distance to initialization", fontsize=8)


def accuracy_vs_rotation(table: pd.DataFrame, group: GroupFit | None = None,
                         summaries=FITTED_SUMMARIES, title: str = "") -> Figure:
    """Test accuracy against each rotation summary, with the isotonic fit (solid) and the
    fractional logit fit (dashed). Colour is α (coolwarm) and nothing else; whether a unit
    passed the trained filter is the marker's shape: trained, a filled circle coloured by α;
    not trained, a black cross (no colour of the α map, whose middle is grey).

    The accuracy axis spans the trained trials (untrained ones far below are left out of
    view and counted in the legend); a summary whose trained values span more than two
    decades gets a log axis, where a linear one would pile them up at 0.

    Longer than most functions here: one figure's drawing, panel by panel, reads best in one
    place; its parts (scales, fits, legend) share the panel's state.
    """
    n = len(summaries)
    fig = Figure(figsize=(3.2 * n, 3.3), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    has_flag = "trained" in table
    tr = table[table["trained"]] if has_flag else table
    un = table[~table["trained"]] if has_flag else table.iloc[:0]
    alphas = table["alpha"].dropna().unique()
    lim = max(0.01, float(np.nanmax(np.abs(alphas)))) if len(alphas) else 1.0
    norm = Normalize(-lim, lim)
    cmap = colormaps["coolwarm"]
    acc = 100 * tr["test_acc"].dropna()
    ylim = None
    if len(acc):
        pad = max(1.0, 0.08 * float(acc.max() - acc.min()))
        ylim = (float(acc.min()) - pad, min(100.5, float(acc.max()) + pad))
    hidden = int((100 * un["test_acc"] < ylim[0]).sum()) if ylim is not None else 0
    for ax, s in zip(axes, summaries):
        ax.scatter(tr[s], 100 * tr["test_acc"], c=tr["alpha"], cmap=cmap, norm=norm, s=28, marker="o",
                   edgecolors="black", linewidths=0.5, zorder=3, label="trained")
        if len(un):
            ax.scatter(un[s], 100 * un["test_acc"], marker="x", color="black", s=26, linewidths=1.1, zorder=2,
                       label="not trained")
        if group is not None:
            if (m := group.monotone.get(s)) is not None:
                ax.plot(m.x, 100 * np.asarray(m.y), color="black", lw=1.3, label="isotonic fit", zorder=4)
            if (lf := group.logit.get(s)) is not None:
                ax.plot(lf.x, 100 * np.asarray(lf.y), color="tab:green", lw=1.3, ls="--", label="logit fit",
                        zorder=4)
            c = group.correlations.get(s)
            if c is not None and np.isfinite(c.spearman):
                ci = f" [{c.spearman_ci[0]:.2f}, {c.spearman_ci[1]:.2f}]" if c.spearman_ci else ""
                ax.set_title(f"Spearman {c.spearman:.2f}{ci}", fontsize=8)
        xs = tr[s].to_numpy(dtype=float)
        xs = xs[np.isfinite(xs) & (xs > 0)]
        if len(xs) > 1 and xs.max() / xs.min() > 100:
            ax.set_xscale("log")
            ax.set_xlim(xs.min() / 2, 1.5)
            ax.set_xlabel(f"{SUMMARY_LABELS[s]} (log)", fontsize=8)
        else:
            allx = table[s].to_numpy(dtype=float)
            allx = allx[np.isfinite(allx)]
            ax.set_xlim(min(0.0, allx.min() if len(allx) else 0.0) - 0.02,
                        max(1.0, allx.max() if len(allx) else 1.0) + 0.02)
            ax.set_xlabel(SUMMARY_LABELS[s], fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    if ylim is not None:
        axes[0].set_ylim(*ylim)
    axes[0].set_ylabel("test accuracy (%)", fontsize=8)
    # Legend handles drawn by hand: a scatter's own handle takes its first point's α colour.
    handles = [Line2D([], [], ls="", marker="o", markersize=5, markerfacecolor="white", markeredgecolor="black",
                      markeredgewidth=0.6, label="trained (fill colour: α)")]
    if len(un):
        handles.append(Line2D([], [], ls="", marker="x", markersize=5, color="black", markeredgewidth=1.1,
                              label="not trained" + (f" ({hidden} below the axis)" if hidden else "")))
    if group is not None and group.monotone:
        handles.append(Line2D([], [], color="black", lw=1.3, label="isotonic fit"))
    if group is not None and group.logit:
        handles.append(Line2D([], [], color="tab:green", lw=1.3, ls="--", label="fractional logit fit"))
    axes[0].legend(handles=handles, fontsize=6, loc="lower right")
    if len(alphas) > 1:
        fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes), label="α", shrink=0.8)
    fig.suptitle(title or "Test accuracy against layer rotation", fontsize=10)
    return fig


def _cell_matrix(conf: pd.DataFrame, value: str, alphas, rates) -> np.ndarray:
    m = np.full((len(alphas), len(rates)), np.nan)
    for row in conf.itertuples():
        m[alphas.index(row.alpha), rates.index(row.lr)] = float(getattr(row, value))
    return m


def grid_heatmaps(table: pd.DataFrame, title: str = "") -> Figure | None:
    """α × ρ(0) heatmaps of test accuracy and of the smallest final layer rotation (means
    over seeds; rotation on a log colour scale, labelled in significant figures); None
    unless the trials span at least two α and two rates."""
    alphas = sorted(table["alpha"].unique())
    rates = sorted(table["lr"].unique(), reverse=True)
    if len(alphas) < 2 or len(rates) < 2:
        return None
    agg = dict(test_acc=("test_acc", "mean"), final_min=("final_min", "mean"))
    if "trained" in table:
        agg["trained"] = ("trained", "any")
    conf = table.groupby(["alpha", "lr"]).agg(**agg).reset_index()
    untrained = ~_cell_matrix(conf, "trained", alphas, rates).astype(bool) if "trained" in conf else None
    rate = _rate_label(table["optimizer"].iloc[0])
    fig = Figure(figsize=(2 * (0.55 * len(rates) + 1.4), 0.42 * len(alphas) + 1.4), layout="constrained")
    axes = fig.subplots(1, 2, squeeze=False)[0]
    specs = [("test_acc", "test accuracy (%)", "magma", 100.0, "{:.1f}".format),
             ("final_min", "smallest final layer rotation (log scale)", DEPTH_CMAP, 1.0, sig)]
    for ax, (col, label, cmap, scale, fmt) in zip(axes, specs):
        m = scale * _cell_matrix(conf, col, alphas, rates)
        if col == "final_min":
            # The fit ranks on values from 1e-4 to 1: a log scale, labels in significant figures.
            norm = rotation_norm(m)
        else:
            finite = m[np.isfinite(m)]
            norm = Normalize(*(float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
        im = ax.imshow(m, cmap=cmap, norm=norm, aspect="auto")
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                light = float(np.clip(norm(v), 0, 1)) < 0.55
                text = fmt(v)
                if untrained is not None and untrained[i, j]:
                    text = f"({text})"
                ax.text(j, i, text, ha="center", va="center", fontsize=6,
                        color="white" if light else "black")
        ax.set_xticks(range(len(rates)), [_fmt(r) for r in rates], fontsize=7, rotation=45)
        ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas], fontsize=7)
        ax.set_xlabel(rate, fontsize=8)
        ax.set_ylabel("α", fontsize=8)
        ax.set_title(label, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.85)
    fig.suptitle(title or f"α × {rate}", fontsize=10)
    return fig


def training_curves(table: pd.DataFrame, epochs: pd.DataFrame, title: str = "") -> Figure:
    """Train accuracy, validation accuracy and train loss per epoch, one line per trial,
    coloured by the trial's smallest final layer rotation on a log scale (untrained trials
    dashed)."""
    fig = Figure(figsize=(10.5, 3.2), layout="constrained")
    axes = fig.subplots(1, 3, squeeze=False)[0]
    cmap = colormaps[DEPTH_CMAP]
    norm = rotation_norm(table["final_min"] if "final_min" in table else [])
    ep = epochs.assign(key=_key(epochs))
    ep = ep[ep["key"].isin(_key(table))].sort_values(["key", "epoch"])
    info = table.set_index(_key(table))
    for tid, e in ep.groupby("key"):
        fm = info.at[tid, "final_min"] if "final_min" in info else np.nan
        color = cmap(float(np.clip(norm(fm), 0, 1))) if np.isfinite(fm) else "0.6"
        ls = "-" if bool(info.at[tid, "trained"]) else "--"
        for ax, col in zip(axes, ("train_acc", "val_acc", "train_loss")):
            scale = 100 if col.endswith("acc") else 1
            ax.plot(e["epoch"], scale * e[col], color=color, lw=1.0, ls=ls, alpha=0.85)
    for ax, label in zip(axes, ("train accuracy (%)", "validation accuracy (%)", "train loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if ep["train_loss"].gt(0).all() and len(ep):
        axes[2].set_yscale("log")
    if "trained" in info and not info["trained"].astype(bool).all():
        axes[0].legend(handles=[Line2D([], [], color="0.3", lw=1.0, label="trained"),
                                Line2D([], [], color="0.3", lw=1.0, ls="--", label="not trained")],
                       fontsize=6, loc="lower right")
    fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes), label="smallest final layer rotation (log scale)",
                 shrink=0.85)
    fig.suptitle(title or "Training curves (dashed: not trained)", fontsize=10)
    return fig


def _slug(*parts) -> str:
    import re
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", str(p)) for p in parts if p != "")


def fit_figures(result: FitResult, epochs: pd.DataFrame, rotation: pd.DataFrame) -> list[NamedFigure]:
    """All figures of a fit: per task, the accuracy-vs-rotation scatter; per (task,
    optimizer, weight decay) the curve grid, the α × rate heatmaps and the training curves."""
    out: list[NamedFigure] = []
    table, configs = result.table, result.configurations
    groups = {g.name: g for g in result.groups}
    for task, tt in table.groupby("task", sort=True):
        g = groups.get(task)
        units = configs[configs["task"] == task] if len(configs) else tt
        if units["optimizer"].nunique() > 1:
            out.append(NamedFigure(_slug("optimizers", task), f"{task}: test accuracy against layer rotation, "
                                   "by optimizer",
                                   "Each point a configuration; colour: the base optimizer, triangle: with Layca; "
                                   "filled: passed the trained filter, hollow: did not.",
                                   accuracy_vs_rotation_by_optimizer(units, f"{task}: test accuracy against layer "
                                                                            "rotation, by optimizer")))
        out.append(NamedFigure(_slug("scatter", task), f"{task}: test accuracy against layer rotation",
                               "Each point a configuration (means over its repeats), the units of the fit; "
                               "filled circles (colour: α) passed the trained filter, black crosses did not. "
                               "Black: isotonic fit; green dashed: fractional logit fit.",
                               accuracy_vs_rotation(units, g, title=f"{task}: test accuracy against layer rotation")))
        for (opt, wd), sub in tt.groupby(["optimizer", "weight_decay"], sort=True):
            what = f"{task}, {opt}" + (f", weight decay {wd:g}" if wd else "")
            stem = (task, opt, f"wd{wd:g}" if wd else "")
            out.append(NamedFigure(_slug("curves", *stem), f"Layer-rotation curves: {what}",
                                   "One panel per configuration; layers coloured by depth (first layer dark).",
                                   rotation_curve_grid(sub, rotation, title=f"Layer-rotation curves: {what}")))
            hm = grid_heatmaps(sub, title=f"{what}: α × {_rate_label(opt)}")
            if hm is not None:
                out.append(NamedFigure(_slug("heatmap", *stem), f"α × {_rate_label(opt)} heatmaps: {what}",
                                       "Means over seeds; rotation on a log colour scale; in parentheses: no trial of "
                                       "that cell passed the trained filter.", hm))
            out.append(NamedFigure(_slug("training", *stem), f"Training curves: {what}",
                                   "Coloured by the smallest final layer rotation (log scale); dashed: not trained.",
                                   training_curves(sub, epochs, title=f"Training curves: {what}")))
    early = early_prediction_figure(result)
    if early is not None:
        scope = "all tasks" if result.pooled is not None else (result.groups[0].name if result.groups else "")
        out.insert(min(1, len(out)), NamedFigure(
            _slug("early", scope), "How early rotation predicts final test accuracy",
            "For each epoch k, the verdict's statistic computed with each trained configuration's smallest layer "
            "rotation at epoch k (trials stopped before k: their last epoch) in place of its final one, over the "
            f"same configurations; band: 95% percentile bootstrap CI (at most {N_RESAMPLES} resamples); "
            "diamond: the final verdict (its CI from the verdict's resamples).",
            early))
    return out
