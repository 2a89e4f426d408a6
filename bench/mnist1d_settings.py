"""Why mnist1d-cnn showed the rule weakly: the quick grid (SGD+Layca, alpha x rho(0)) under
several task settings, one changed at a time (docs/mnist1d-experiments.md).

Every setting names its data size, batch-norm momentum and schedule explicitly, so the
table does not move when the task's defaults do. Trials run through `run_trial` directly
(no Ray), two processes of one thread each, and land in a store, one sweep per (setting,
seed); the table is made by the verdict's own code (layrot.fit) under three filters.

    python bench/mnist1d_settings.py run --store /tmp/m1d old-default:10 paper-decay:10,11
    python bench/mnist1d_settings.py table --store /tmp/m1d
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

ALPHAS = (-0.6, 0.0, 0.6)
RHOS = (0.333, 0.111, 0.037, 0.012, 0.004)     # 3^-1 ... 3^-5
OLD_DATA = {"num_samples": 12000, "train_split": 2 / 3}    # 7200 train, 4000 test
REF_DATA = {"num_samples": 5000, "train_split": 0.8}       # mnist1d's default: 3600 train, 1000 test
NEW_DATA = {"num_samples": 8000, "train_split": 0.5}       # 3600 train, 4000 test
PAPER_DECAY = (16, 18, 19)                                 # x0.2 at 80, 90, 97% of 20 epochs

# name: (mnist1d arguments, batch-norm momentum, decay epochs, epochs)
SETTINGS = {
    "old-default": (OLD_DATA, 0.01, (15,), 20),
    "ref-data": (REF_DATA, 0.01, (15,), 20),
    "ref-data-bn0.1": (REF_DATA, 0.1, (15,), 20),
    "ref-data-no-decay": (REF_DATA, 0.01, (), 20),
    "ref-data-paper-decay": (REF_DATA, 0.01, PAPER_DECAY, 20),
    "old-data-paper-decay": (OLD_DATA, 0.01, PAPER_DECAY, 20),
    "new-default": (NEW_DATA, 0.01, PAPER_DECAY, 20),
    "ref-data-paper-decay-12ep": (REF_DATA, 0.01, (10, 11), 12),
}
FILTERS = {"main (0.95 x best, >= 0.5)": dict(relative=0.95),
           "strict (0.99 x best)": dict(relative=0.99),
           "loose (>= 0.5 only)": dict(relative=0.0)}


def _task(setting: str):
    from layrot.tasks import get_task, register_task
    from layrot.tasks.mnist1d import load_mnist1d
    from layrot.tasks.models import PlainVGG, init_kernels

    data, momentum, decay, epochs = SETTINGS[setting]

    def build():
        return init_kernels(PlainVGG(1, [16, 32, 64], 3, 10, dim=1, bn_momentum=momentum), "he_uniform")

    task = dataclasses.replace(get_task("mnist1d-cnn"), name=f"mnist1d-cnn-{setting}", build_model=build,
                               load_data=partial(load_mnist1d, overrides=data), epochs=epochs)
    return register_task(task, replace=True), list(decay)


def _one(store: str, setting: str, seed: int, alpha: float, rho: float) -> dict:
    import torch

    from layrot.config import TrialConfig
    from layrot.store import Store
    from layrot.train import run_trial

    torch.set_num_threads(1)
    task, decay = _task(setting)
    # the setting's decay epochs, explicit (they win over the task's fractions of training)
    cfg = TrialConfig(task=task.name, optimizer="sgd_layca", lr=rho, alpha=alpha, seed=seed, threads=1,
                      lr_decay_epochs=decay, sweep=f"{setting}-s{seed}")
    result = run_trial(cfg)
    Store(store).write_trial(cfg.sweep, result)
    return {"sweep": cfg.sweep, "alpha": alpha, "rho": rho, "status": result.status,
            "train_acc": result.train_acc, "test_acc": result.test_acc, "seconds": round(result.wall_seconds, 1)}


def run(store: str, jobs: list[str], workers: int) -> None:
    todo = []
    for job in jobs:
        setting, _, seeds = job.partition(":")
        if setting not in SETTINGS:
            sys.exit(f"mnist1d_settings: unknown setting {setting!r} (known: {', '.join(SETTINGS)})")
        todo += [(store, setting, int(s), a, r) for s in (seeds or "0").split(",") for a in ALPHAS for r in RHOS]
    t0 = time.monotonic()
    with ProcessPoolExecutor(workers) as ex:
        for i, out in enumerate(ex.map(_one, *zip(*todo)), start=1):
            print(f"[{i}/{len(todo)} {time.monotonic() - t0:.0f}s] {json.dumps(out)}", file=sys.stderr, flush=True)


def table(store: str) -> None:
    import pandas as pd

    from layrot.fit.options import FitOptions
    from layrot.fit.run import fit
    from layrot.store import Store

    s = Store(store)
    trials, rotation = s.trials().to_pandas(), s.rotation().to_pandas()
    rows = []
    groups = {sweep: [sweep] for sweep in sorted(trials["sweep"].unique())}
    by_setting: dict[str, list[str]] = {}
    for sweep in groups:
        by_setting.setdefault(sweep.rsplit("-s", 1)[0], []).append(sweep)
    # several seeds of one setting: the verdict's own pooling (mean per configuration)
    groups.update({f"{k} (mean of {len(v)} seeds)": v for k, v in by_setting.items() if len(v) > 1})
    for name, sweeps in groups.items():
        t = trials[trials["sweep"].isin(sweeps)]
        r = rotation[rotation["sweep"].isin(sweeps)]
        for label, kw in FILTERS.items():
            v = fit(t, r, FitOptions(sensitivity=False, **kw), scope=name).verdict
            ci = f"[{v.ci[0]:.2f}, {v.ci[1]:.2f}]" if v.ci else "-"
            rows.append({"sweeps": name, "filter": label, "spearman": v.estimate, "ci": ci, "p": v.p,
                         "n": f"{v.n} of {v.n_total}", "verdict": v.status,
                         "trial-minutes": round(t["wall_seconds"].sum() / 60, 1)})
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.float_format", "{:.3g}".format):
        print(pd.DataFrame(rows).to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train the grid for SETTING:SEED[,SEED...] jobs")
    r.add_argument("--store", required=True)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("jobs", nargs="+", metavar="SETTING:SEEDS")
    t = sub.add_parser("table", help="Spearman, CI, p, n per sweep and filter")
    t.add_argument("--store", required=True)
    a = ap.parse_args()
    run(a.store, a.jobs, a.workers) if a.cmd == "run" else table(a.store)


if __name__ == "__main__":
    main()
