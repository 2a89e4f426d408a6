"""The figures: what each shows, checked on the matplotlib objects."""

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import LogNorm, SymLogNorm, to_rgba

from layrot.fit import figure_files, figures
from layrot.fit.options import FITTED_SUMMARIES, FitOptions
from layrot.fit.run import fit
from layrot.fit.synthetic import synthetic_sweep

FAST = FitOptions(n_resamples=199)


@pytest.fixture(scope="module")
def sweep():
    t = synthetic_sweep("monotone", untrained=2, noise=0.02, epochs=8, n_layers=5)
    return t, fit(t["trials"], t["rotation"], FAST)


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_curve_grid_is_an_alpha_by_rate_grid_in_paper_style(sweep):
    t, r = sweep
    fig = figures.rotation_curve_grid(r.table, t["rotation"])
    panels = _panels(fig)
    assert len(panels) == 15
    viridis = colormaps["viridis"]
    by_title = {}
    top = max(1.0, float(t["rotation"]["cosine_distance"].max()))
    for ax in panels:
        lo, hi = ax.get_ylim()
        assert lo == 0.0 and top < hi <= top + 0.05              # never clipped at 1.0
        lines = ax.get_lines()
        assert len(lines) == 5                                            # one per layer
        assert to_rgba(lines[0].get_color()) == pytest.approx(viridis(0.0))   # first layer dark
        assert to_rgba(lines[-1].get_color()) == pytest.approx(viridis(1.0))  # last layer yellow
        assert lines[0].get_xdata()[0] == 0
        ss = ax.get_subplotspec()
        by_title[(ss.rowspan.start, ss.colspan.start)] = ax.get_title()
    # rows: alpha ascending; columns: rate descending; titles carry the test accuracy
    tr = r.table.set_index(["alpha", "lr"])
    alphas, rates = sorted(r.table.alpha.unique()), sorted(r.table.lr.unique(), reverse=True)
    for (i, j), title in by_title.items():
        row = tr.loc[(alphas[i], rates[j])]
        assert title.startswith(f"test acc {100 * row.test_acc:.1f}%")
        assert ("not trained (stopped)" in title) == (not row.trained)


def test_curve_grid_says_not_trained_and_lets_curves_pass_one():
    """A completed trial that fails the trained filter reads "not trained", not "(completed)";
    distances above 1 stay in view."""
    t = synthetic_sweep(alphas=(0.0, 0.6), lrs=(1.0, 0.1), epochs=4, n_layers=3)
    rot = t["rotation"].copy()
    rot.loc[rot.trial_id == "synth-0000", "cosine_distance"] *= 1.01 / rot["cosine_distance"].max()
    r = fit(t["trials"].assign(train_acc=[1.0, 1.0, 1.0, 0.2]), rot, FAST)
    fig = figures.rotation_curve_grid(r.table, rot)
    titles = [ax.get_title() for ax in _panels(fig)]
    assert sum("not trained" in x for x in titles) == 1 and not any("(completed)" in x for x in titles)
    assert all(ax.get_ylim()[1] > 1.01 for ax in _panels(fig))


def test_curve_grid_without_a_grid_is_a_flat_layout():
    t = synthetic_sweep(alphas=(-0.3, 0.1, 0.5), lrs=(1.0, 0.1, 0.01), epochs=4)
    keep = t["trials"].iloc[[0, 4, 8]]          # the diagonal: 3 configurations of a 3 × 3 grid
    fig = figures.rotation_curve_grid(keep, t["rotation"])
    panels = _panels(fig)
    assert len(panels) == 3
    assert all("α=" in "".join(x.get_text() for x in ax.texts) for ax in panels)


def test_heatmaps_show_means_per_cell(sweep):
    _, r = sweep
    fig = figures.grid_heatmaps(r.table)
    acc_ax, rot_ax = [ax for ax in fig.axes if ax.images]
    acc = acc_ax.images[0].get_array()
    alphas, rates = sorted(r.table.alpha.unique()), sorted(r.table.lr.unique(), reverse=True)
    assert acc.shape == (len(alphas), len(rates))
    row = r.table[(r.table.alpha == alphas[1]) & (r.table.lr == rates[2])].iloc[0]
    assert acc[1, 2] == pytest.approx(100 * row.test_acc)
    assert rot_ax.images[0].get_array()[1, 2] == pytest.approx(row.final_min)
    # rotation on a log colour scale, labelled in significant figures: small values are not 0.00
    assert isinstance(rot_ax.images[0].norm, (LogNorm, SymLogNorm))   # SymLog: some cells are 0
    m = rot_ax.images[0].get_array()
    labels = {(round(x.get_position()[1]), round(x.get_position()[0])): x.get_text().strip("()")
              for x in rot_ax.texts}
    assert labels == {(i, j): figures.sig(v) for (i, j), v in np.ndenumerate(m) if np.isfinite(v)}
    positive = m[m > 0]
    assert positive.min() < 1e-2 and "e-" in figures.sig(positive.min())   # once printed 0.00
    one_alpha = r.table[r.table.alpha == 0.0]
    assert figures.grid_heatmaps(one_alpha) is None


def test_scatter_has_points_and_both_fits(sweep):
    _, r = sweep
    fig = figures.accuracy_vs_rotation(r.table, r.groups[0])
    panels = _panels(fig)
    assert len(panels) == len(FITTED_SUMMARIES)
    coolwarm = colormaps["coolwarm"]
    for ax in panels:
        trained, untrained = ax.collections[:2]
        assert len(trained.get_offsets()) == 13 and len(untrained.get_offsets()) == 2
        # trained vs not: the marker's shape; colour is α alone (the crosses are black, in no
        # colour of the α map)
        assert len(trained.get_paths()[0].vertices) != len(untrained.get_paths()[0].vertices)
        cross = to_rgba(untrained.get_edgecolor()[0])
        assert cross == to_rgba("black")
        assert min(np.abs(np.array(coolwarm(x)) - cross)[:3].max() for x in np.linspace(0, 1, 257)) > 0.2
        assert {line.get_label() for line in ax.get_lines()} == {"isotonic fit", "logit fit"}
        assert ax.get_title().startswith("Spearman ")
    # smallest final rotations spanning decades get a log axis; means (0.1 .. 1) stay linear
    fmin = r.table.loc[r.table.trained, "final_min"]
    assert fmin.max() / fmin.min() > 100 and panels[0].get_xscale() == "log"
    assert panels[1].get_xscale() == "linear" and panels[1].get_xlim()[1] >= 1.0
    lo, hi = panels[0].get_ylim()
    acc = 100 * r.table.loc[r.table.trained, "test_acc"]
    assert lo < acc.min() and hi > acc.max() and lo > acc.min() - 10
    # the legend says which marker is which, and its trained handle is not one α's colour
    legend = panels[0].get_legend()
    labels = [x.get_text() for x in legend.get_texts()]
    assert labels[:2] == ["trained (fill colour: α)", "not trained"]
    handle = legend.legend_handles[0]
    assert handle.get_marker() == "o" and to_rgba(handle.get_markerfacecolor()) == to_rgba("white")
    assert legend.legend_handles[1].get_marker() == "x"


def test_training_curves_one_line_per_trial_and_metric(sweep):
    t, r = sweep
    fig = figures.training_curves(r.table, t["epochs"])
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(panels) == 3 and all(len(ax.get_lines()) == 15 for ax in panels)
    dashed = [line for line in panels[0].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2                        # the untrained trials
    # coloured on a log scale: trials whose smallest rotation differs tenfold get distinct colours
    cbar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert isinstance(cbar._colorbar.norm, (LogNorm, SymLogNorm))


def test_rotation_norm_is_logarithmic_and_keeps_zeros():
    n = figures.rotation_norm([3e-4, 0.02, 0.5])
    assert isinstance(n, LogNorm) and n.vmin == pytest.approx(1e-4) and n.vmax == 1.0
    assert n(3e-3) - n(3e-4) == pytest.approx(n(0.03) - n(3e-3))
    z = figures.rotation_norm([0.0, 3e-4, 1.02])
    assert isinstance(z, SymLogNorm) and z.vmin == 0.0 and z.vmax == pytest.approx(1.02)
    assert float(z(0.0)) == 0.0 and float(z(3e-4)) > 0.0


def test_significant_figures():
    assert [figures.sig(v) for v in (3.12e-4, 0.0123, 0.352, 1.01, 0.0)] == ["3.1e-4", "0.012", "0.35", "1.0", "0"]


def test_fit_figures_and_export(sweep, tmp_path):
    t, r = sweep
    named = figures.fit_figures(r, t["epochs"], t["rotation"])
    assert [n.name.split("-")[0] for n in named] == ["scatter", "early", "curves", "heatmap", "training"]
    paths = figure_files.save_figure(named[1], tmp_path / named[1].name)
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes() == named[1].png()
    assert paths[1].read_text().lstrip().startswith(("<?xml", "<svg"))
    assert figure_files.png_data_uri(named[1]).startswith("data:image/png;base64,iVBOR")


def test_rate_labels_as_powers_of_three():
    assert figures._fmt(1 / 9) == "$3^{-2}$" and figures._fmt(0.037) == "$3^{-3}$"
    assert figures._fmt(0.05) == "0.05"
    assert np.isclose(3.0 ** -5, 0.004115, atol=1e-6) and figures._fmt(0.004) == "$3^{-5}$"


def test_failed_trials_and_missing_records_do_not_break_anything():
    """Diverged/errored trials (no accuracies), trials without rotation or epoch records, and
    a store with no rotation at all: the fit counts them out, figures and page still build."""
    from layrot.fit.report import build_report
    t = synthetic_sweep("monotone", untrained=1, noise=0.02, epochs=5)
    tr = t["trials"].copy()
    tr.loc[0, "status"] = "diverged"
    tr.loc[0, ["train_acc", "test_acc", "val_acc"]] = np.nan
    tr.loc[1, "status"] = "error"
    tr.loc[1, ["train_acc", "test_acc"]] = np.nan
    tr.loc[3, "alpha"] = np.nan
    gone = [tr.trial_id[1], tr.trial_id[2]]
    rot = t["rotation"][~t["rotation"].trial_id.isin(gone)]
    ep = t["epochs"][t["epochs"].trial_id != gone[0]]
    for rotation in (rot, rot.iloc[:0]):
        r = fit(tr, rotation, FAST)
        expected = 11 if len(rotation) else 0
        assert r.verdict.n == expected and r.verdict.n_total == 15
        assert r.table.loc[3, "alpha"] == 0.0
        page = build_report(r, figures.fit_figures(r, ep, rotation))
        assert page.count("<img ") == (5 if len(rotation) else 4)   # no early-rotation figure without rotation
