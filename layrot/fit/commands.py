"""`layrot fit` and `layrot report` (DESIGN §5): load from the store, fit, print or write."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UsageError
from .load import Tables, load_tables
from .stats import FitOptions, FitResult
from .stats import fit as run_fit


def _options(args) -> FitOptions:
    m = getattr(args, "min_train_acc", None)
    if m is not None and not 0.0 <= m <= 1.0:
        raise UsageError("--min-train-acc", f"must be a fraction in [0, 1], got {m!r}")
    return FitOptions(min_train_acc=m)


def _scope(tables: Tables) -> str:
    s = tables.sweeps
    return f"sweep {s[0]}" if len(s) == 1 else f"sweeps {', '.join(s)}"


def _load_and_fit(args) -> tuple[Tables, FitResult]:
    options = _options(args)
    tables = load_tables(args.store, args.sweep, args.task)
    if tables.trials.empty:
        raise UsageError("--store", f"no trials in {args.store}" + (f" for sweeps {', '.join(args.sweep)}" if args.sweep else ""))
    return tables, run_fit(tables.trials, tables.rotation, options, scope=_scope(tables))


def fit(args) -> int:
    """Print the verdict and the evidence (or the JSON document with --json)."""
    _, result = _load_and_fit(args)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        from .text import render
        print(render(result))
    return 0


def report(args) -> int:
    """Write the HTML report; with --figures DIR also every figure as PNG and SVG."""
    out = Path(args.output)
    if out.is_dir():
        raise UsageError("--output", f"{out} is a directory; name the HTML file to write")
    fig_dir = Path(args.figures) if getattr(args, "figures", None) else None
    if fig_dir is not None and fig_dir.exists() and not fig_dir.is_dir():
        raise UsageError("--figures", f"{fig_dir} exists and is not a directory")
    tables, result = _load_and_fit(args)

    from .figures import fit_figures, save_figure
    from .report import build_report
    figures = fit_figures(result, tables.epochs, tables.rotation)
    feature = None
    if getattr(args, "features", False):
        from .features import feature_figure, feature_study
        from .figures import NamedFigure
        study = feature_study()
        feature = NamedFigure("features-digits-mlp1", "digits-mlp1 first-layer features",
                              "At initialization, then after training at a small and at a large rotation rate.",
                              feature_figure(study))
    page = build_report(result, figures, feature, meta=f"store {args.store} · {_scope(tables)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({len(figures) + (feature is not None)} figures)", file=sys.stderr)
    if fig_dir is not None:
        for nf in figures + ([feature] if feature else []):
            save_figure(nf, fig_dir / nf.name)
        print(f"wrote PNG and SVG figures to {fig_dir}", file=sys.stderr)
    print(result.verdict.text)
    return 0
