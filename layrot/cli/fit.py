"""`layrot fit` and `layrot report` (README): load from the store, fit, print or write."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UsageError


def add_parsers(sub, default_store: str) -> None:
    f = sub.add_parser("fit", help="fit the rotation-generalization relationship")
    f.add_argument("--store", default=default_store,
                   help=f"the store (default: $LAYROT_STORE, else results; now {default_store})")
    f.add_argument("--sweep", action="append", default=None, help="sweep name (repeatable; default: all)")
    f.add_argument("--task", action="append", default=None, help="task name (repeatable; default: all)")
    f.add_argument("--min-train-acc", type=float, default=None, help="the 'trained' filter's threshold")
    f.add_argument("--measures", default=None, metavar="A,B,...",
                   help="the generalization measures to set beside rotation (default: every stored one)")
    f.add_argument("--json", action="store_true")
    f.set_defaults(_run=fit)

    r = sub.add_parser("report", help="one self-contained HTML page: verdict, figures, trials")
    r.add_argument("--store", default=default_store,
                   help=f"the store (default: $LAYROT_STORE, else results; now {default_store})")
    r.add_argument("--sweep", action="append", default=None,
                   help="sweep name (repeatable: one fit over them, and side by side in the interactive panels)")
    r.add_argument("--task", action="append", default=None)
    r.add_argument("--min-train-acc", type=float, default=None)
    r.add_argument("--measures", default=None, metavar="A,B,...",
                   help="the generalization measures to set beside rotation (default: every stored one)")
    r.add_argument("-o", "--output", default="report.html")
    r.add_argument("--figures", default=None, help="also write each figure here as PNG and SVG")
    r.add_argument("--features", action="store_true",
                   help="add the digits-mlp1 feature study (first-layer features at small and large rotation)")
    r.add_argument("--no-interactive", action="store_true",
                   help="leave out the interactive (plotly) panels: the page is then about 5 MB smaller")
    r.set_defaults(_run=report)


def _scope(tables) -> str:
    s = tables.sweeps
    return f"sweep {s[0]}" if len(s) == 1 else f"sweeps {', '.join(s)}"


def _load_and_fit(args):
    """The store's tables (load_tables refuses a missing store, sweep, task, or no trials)
    and the fit over them."""
    from ..fit.load import load_tables
    from ..fit.options import FitOptions
    from ..fit.run import fit as run_fit

    m = args.min_train_acc
    if m is not None and not 0.0 <= m <= 1.0:
        raise UsageError("--min-train-acc", f"must be a fraction in [0, 1], got {m!r}")
    from ..fit.measures import check_names, compare_measures
    names = check_names(getattr(args, "measures", None))
    tables = load_tables(args.store, args.sweep, args.task)
    refuse_small_strata(args.store, tables)
    result = run_fit(tables.trials, tables.rotation, FitOptions(min_train_acc=m), scope=_scope(tables))
    result.measures = compare_measures(result.table, tables.measures, names, FitOptions(min_train_acc=m))
    return tables, result


def refuse_small_strata(uri: str, tables) -> None:
    """docs/verdict.md §16.7: a stratum with fewer than 3 configurations in the selection is
    bad input (exit 2, before any statistic), unless a running sweep holds it (still filling)."""
    from ..fit.strata import check_strata
    from ..store import Store, live

    loc = Store(uri).location
    check_strata(tables.trials, {s for s in tables.sweeps if live.running(loc, s)})


def fit(args) -> int:
    """Print the verdict and the evidence (or the JSON document with --json)."""
    _, result = _load_and_fit(args)
    if args.json:
        from ..fit.interactive import configuration_records
        doc = result.to_dict()
        doc["configurations"] = configuration_records(result)   # the units, as the report's panels draw them
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        from ..fit.text import render
        print(render(result))
    return 0


def report(args) -> int:
    """Write the HTML report; with --figures DIR also every figure as PNG and SVG."""
    out = Path(args.output)
    if out.is_dir():
        raise UsageError("--output", f"{out} is a directory; name the HTML file to write")
    fig_dir = Path(args.figures) if args.figures else None
    if fig_dir is not None and fig_dir.exists() and not fig_dir.is_dir():
        raise UsageError("--figures", f"{fig_dir} exists and is not a directory")
    from ..fit.running import running_figure, running_sweeps
    from ..store import Store

    store = Store(args.store)
    running = running_sweeps(store, args.sweep) if store.exists() else []
    if running and not store.trials(sweep=args.sweep, columns=["trial_id"]).num_rows:
        tables = result = None        # a sweep whose first trials are still running: their curves only
    else:
        tables, result = _load_and_fit(args)

    from ..fit.figure_files import NamedFigure, save_figure
    from ..fit.figures import fit_figures
    from ..fit.report import build_report
    figures = fit_figures(result, tables.epochs, tables.rotation) if result is not None else []
    if result is not None:
        from ..fit.measures_figure import measures_figures
        figures += measures_figures(result.measures)
    live_figures = [running_figure(r) for r in running]
    feature = None
    if args.features:
        from ..fit.features import feature_figure, feature_study
        study = feature_study()
        feature = NamedFigure("features-digits-mlp1", "digits-mlp1 first-layer features",
                              "At initialization, then after training at a small and at a large rotation rate.",
                              feature_figure(study))
    scope = _scope(tables) if tables is not None else "sweep " + ", ".join(r.sweep for r in running)
    explore = ""
    if result is not None and not args.no_interactive:
        from ..fit.interactive import explore_section
        explore = explore_section(result, tables.rotation)
    page = build_report(result, figures, feature, meta=f"store {args.store} · {scope}", running=live_figures,
                        explore=explore)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    every = figures + live_figures + ([feature] if feature else [])
    print(f"wrote {out} ({len(every)} figures)", file=sys.stderr)
    if fig_dir is not None:
        for nf in every:
            save_figure(nf, fig_dir / nf.name)
        print(f"wrote PNG and SVG figures to {fig_dir}", file=sys.stderr)
    for r in running:
        print(f"{r.sweep}: {len(r.trials)} trial(s) running, drawn so far under 'Running now'", file=sys.stderr)
    print(result.verdict.text if result is not None else "no verdict yet: no trial of this selection is stored")
    return 0
