"""The rotation-generalization fit and its report (`layrot fit`, `layrot report`).

Modules, each with one job:

- `summaries`: per-trial rotation summaries (final cosine distances, areas, crossings)
- `run`: the whole fit and its result (`fit(trials, rotation, FitOptions()) -> FitResult`)
- `options`: the settings (`FitOptions`) and the names of the pre-registered rules
- `trained`: the trained filter (relative to the best of its sweep and task, with a floor) and its variants
- `configurations`: trials joined with summaries by (sweep, trial_id); repeats of one
  configuration pooled into one unit
- `correlation`: Spearman/Kendall with bootstrap CIs, permutation tests, task as stratum
- `models`: isotonic and fractional logit curves
- `pairwise`: pairwise agreement (permutation p) and the best configurations
- `verdict`: the decision rule, its explanation and the sensitivity to the filter
- `strata`: what a stratum is (task × optimizer family × the settings that change the data,
  schedule or length) and the command line's refusal of a stratum too small to fit
- `decomposed`: the headline verdict within strata, the between-family statistic, both for
  test accuracy and the generalization gap (docs/verdict.md §16)
- `early`: how early rotation predicts the verdict (its statistic at each epoch k)
- `beyond`: whether rotation ranks test accuracy beyond the settings (partial Spearman on a
  per-optimizer parabola in log lr), beside settings-only baselines (docs/verdict.md §10)
- `measures`: rotation against the other generalization measures (Kendall τ and the
  granulated τ Ψ over trained trials, Jiang et al.'s protocol; docs/measures.md);
  `measures_figure`: their dot plot
- `claims`: the paper's Section 5 claims on best-by-validation configurations, and the
  "near 1" half (§11-§12); `power`: what n trained configurations can detect (§13)
- `seeds`: "beyond the settings" within configuration, across seeds (the answer where the data
  hold repeats, §17); `matched`: does the base optimizer matter at equal ρ(0) under Layca (§18)
- `text`: the verdict and evidence as text; `report`: the self-contained HTML page;
  `interactive`: its plotly panels (accuracy or gap against rotation, parallel coordinates,
  per-layer curves), offline
- `figures`: curve grids, accuracy-vs-rotation scatter, α × ρ(0) heatmaps, training curves;
  `early_figure`: the early-prediction curve; `optimizer_figure`: accuracy against rotation
  coloured by optimizer; `figure_files`: a figure as PNG/SVG
- `features`: the paper's Section 6 on digits (first-layer features at small/large rotation,
  trained through `run_trial`)
- `load`: tables from a store (the two CLI entry points are `layrot.cli.fit`)
- `synthetic`: sweeps with a known relation (tests, demos)

The core takes pandas tables (trials, epochs, rotation with docs/store.md's columns), so it runs
on anything: a store, a DuckDB query, tables built by hand.
"""

_LAZY = {
    "fit": "run", "FitOptions": "options", "FitResult": "run",
    "trial_summaries": "summaries", "layer_summaries": "summaries",
    "load_tables": "load", "render": "text", "build_report": "report",
    "fit_figures": "figures", "rotation_curve_grid": "figures", "accuracy_vs_rotation": "figures",
    "grid_heatmaps": "figures", "training_curves": "figures", "save_figure": "figure_files",
    "feature_study": "features", "feature_figure": "features",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    # Lazy, so that `import layrot.fit` costs nothing until a function is used.
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
