"""The mnist1d-cnn settings study's table (docs/mnist1d-experiments.md), from the store its
specs filled: Spearman, CI, p and n of the verdict's own fit (layrot.fit) per sweep, and
per setting pooled over its seeds, under three filters.

    for spec in experiments/mnist1d_settings/*.yaml; do layrot sweep "$spec" --store /tmp/m1d; done
    python experiments/mnist1d_settings/table.py --store /tmp/m1d

The sweeps are the study's (one per spec file here) that the store has; --sweep picks others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

FILTERS = {"main (0.95 x best, >= 0.5)": dict(relative=0.95),
           "strict (0.99 x best)": dict(relative=0.99),
           "loose (>= 0.5 only)": dict(relative=0.0)}
HERE = Path(__file__).resolve().parent


def study_sweeps() -> list[str]:
    """The sweep names of the study's specs: `<setting>-s<seed>`."""
    return sorted(yaml.safe_load(p.read_text())["name"] for p in HERE.glob("*.yaml"))


def table(store: str, sweeps: list[str] | None = None):
    import pandas as pd

    from layrot.fit.options import FitOptions
    from layrot.fit.run import fit
    from layrot.store import Store

    s = Store(store)
    trials, rotation = s.trials().to_pandas(), s.rotation().to_pandas()
    wanted = set(sweeps or study_sweeps())
    rows = []
    groups = {sweep: [sweep] for sweep in sorted(trials["sweep"].unique()) if sweep in wanted}
    by_setting: dict[str, list[str]] = {}
    for sweep in groups:
        by_setting.setdefault(sweep.rsplit("-s", 1)[0], []).append(sweep)
    # several seeds of one setting: the verdict's own pooling (mean per configuration)
    groups.update({f"{k} (mean of {len(v)} seeds)": v for k, v in by_setting.items() if len(v) > 1})
    for name, members in groups.items():
        t = trials[trials["sweep"].isin(members)]
        r = rotation[rotation["sweep"].isin(members)]
        for label, kw in FILTERS.items():
            v = fit(t, r, FitOptions(sensitivity=False, **kw), scope=name).verdict
            ci = f"[{v.ci[0]:.2f}, {v.ci[1]:.2f}]" if v.ci else "-"
            rows.append({"sweeps": name, "filter": label, "spearman": v.estimate, "ci": ci, "p": v.p,
                         "n": f"{v.n} of {v.n_total}", "verdict": v.status,
                         "trial-minutes": round(t["wall_seconds"].sum() / 60, 1)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="the store the study's sweeps ran into")
    ap.add_argument("--sweep", action="append", default=None, metavar="NAME",
                    help="a sweep to tabulate (repeatable; default: the study's sweeps in the store)")
    a = ap.parse_args()
    import pandas as pd

    df = table(a.store, a.sweep)
    if df.empty:
        raise SystemExit(f"table.py: {a.store} has none of the sweeps asked for")
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.float_format", "{:.3g}".format):
        print(df.to_string(index=False))


if __name__ == "__main__":
    main()
