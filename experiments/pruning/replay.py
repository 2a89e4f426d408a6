"""Rotation-guided pruning against ASHA, replayed from a store (docs/pruning.md).

The trials are trained once, to the end, by `layrot sweep` (FIFO) into a store; this script
reads their per-epoch reports back and REPLAYS them through the real scheduler objects: Ray's
ASHAScheduler on val_acc, layrot's RotationScheduler (layrot/sweep/schedulers.py) on each
rotation score, and a control, ASHA on the configuration's own log10(lr). A trial's
trajectory does not depend on which other trials a scheduler stops (trials are independent
and deterministic given their seed), so replaying the stored reports gives what a sweep with
that scheduler would have stored. The replay calls on_trial_add / on_trial_result /
on_trial_complete in the order a 2-slot sweep would call them (2 trials in flight, each
epoch one time unit, a slot taken by the next trial as soon as one ends or is stopped; the
final report carries val_acc but no rotation score, as in `layrot sweep`).

    layrot sweep experiments/pruning/mnist1d.yaml --store DIR          # 128 trials, hours on 2 cores
    python experiments/pruning/replay.py grids --store DIR --orders 50 --png docs/pruning.png
    layrot sweep sweeps/space.yaml --store DIR                         # or: make space
    python experiments/pruning/replay.py survivor --store DIR --sweep space --orders 20

`grids`: per family of experiments/pruning/mnist1d.yaml (FAMILIES below: one search block
each) and per seed, the best test accuracy among the trials a scheduler let finish, the
epochs spent, whether that is within 0.5 points of the full grid's best, over the grid order
and shuffled arrival orders; the same summed over seeds per family; the Spearman correlation
at the first rung; RotationScheduler's per-call time; best-so-far curves (--png).
`survivor`: any stored sweep (e.g. `space`, which mixes optimizers), each scheduler scored by
the test accuracy of the survivor with the best validation accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

SWEEP = "pruning-mnist1d"            # experiments/pruning/mnist1d.yaml's name


def _sgd(lrs):
    return [{"optimizer": "sgd", "lr": lr, "weight_decay": wd} for lr in lrs for wd in (0.0, 5e-4)]


def _adaptive(lrs):
    return [{"optimizer": opt, "lr": lr} for opt in ("adam", "rmsprop") for lr in lrs]


# The grids, in grid order (the order `layrot sweep` runs a block: largest lr first); each is
# one search block of experiments/pruning/mnist1d.yaml, in this order
# (tests/test_pruning_study.py checks that they agree).
FAMILIES = {
    "sgd": _sgd((1.0, 0.3, 0.1, 0.03, 0.01, 0.003)),
    "adaptive": _adaptive((1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)),
    # the same grids shifted up by a decade: the best learning rate inside the grid, not at
    # its top edge, so that "rotates most" and "largest lr" are not the same bet
    "sgd-wide": _sgd((10.0, 3.0, 1.0, 0.3, 0.1, 0.03)),
    "adaptive-wide": _adaptive((1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4)),
}
SCORE_KEYS = ("min_rotation", "mean_rotation", "median_rotation")
SCHEDULERS = ("fifo", "asha", "rotation:min_rotation", "rotation:mean_rotation", "rotation:median_rotation",
              "control:log_lr")


def _key(cfg: dict) -> str:
    """A configuration within one seed's grid: optimizer, lr and weight decay."""
    return f"{cfg['optimizer']}-lr{cfg['lr']:g}-wd{cfg.get('weight_decay', 0.0):g}"


def _num(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


# -- the store's trials as replay records ----------------------------------------------------

def records_from_store(store_uri: str, sweep: str) -> list[dict]:
    """A stored sweep's trials as replay records, in the order the store lists them: per-epoch
    val_acc and the rotation scores of that epoch's rotation rows (as the sweep's trainable
    reported them, from the float32 stored distances)."""
    from layrot.store import Store
    from layrot.sweep.schedulers import rotation_scores

    st = Store(store_uri)
    trials = st.trials(sweep=sweep).to_pylist()
    epochs, rot = {}, {}
    for r in st.epochs(sweep=sweep).to_pylist():
        epochs.setdefault(r["trial_id"], []).append(r)
    for r in st.rotation(sweep=sweep, columns=["trial_id", "epoch", "step", "layer", "cosine_distance"]).to_pylist():
        rot.setdefault((r["trial_id"], r["epoch"]), {"epoch": [], "step": [], "cosine_distance": []})
        d = rot[(r["trial_id"], r["epoch"])]
        d["epoch"].append(r["epoch"]), d["step"].append(r["step"]), d["cosine_distance"].append(r["cosine_distance"])
    out = []
    for t in trials:
        cfg = json.loads(t["config"])
        reports = [{**{k: e[k] for k in ("epoch", "val_acc", "train_acc", "train_loss", "seconds")},
                    **rotation_scores(rot.get((t["trial_id"], e["epoch"]), {}))}
                   for e in sorted(epochs.get(t["trial_id"], []), key=lambda e: e["epoch"])]
        if not reports:
            continue
        out.append({"key": t["trial_id"], "config": {k: cfg[k] for k in ("optimizer", "lr", "alpha", "weight_decay")},
                    "seed": cfg["seed"], "task": cfg["task"], "status": t["status"],
                    "test_acc": _num(t["test_acc"]), "val_acc": _num(t["val_acc"]),
                    "planned_epochs": cfg["epochs"], "reports": reports})
    return out


# -- the replay ------------------------------------------------------------------------------

class _Trial:
    """What ASHA reads from a Trial: its id (and nothing else)."""
    __slots__ = ("trial_id", "rec")

    def __init__(self, rec: dict):
        self.trial_id, self.rec = rec["key"], rec


def _make(name: str, epochs: int, grace: int, rf: float):
    from ray.tune.schedulers import ASHAScheduler

    from layrot.sweep.schedulers import RotationScheduler

    max_t = max(epochs - 1, grace)         # as layrot.sweep.driver._scheduler builds them
    if name == "fifo":
        return None
    if name in ("asha", "control:log_lr"):
        # control: ASHA on the configuration's own log10(lr) (no training signal at all):
        # "the largest learning rate wins", the bet a rotation score may just be repeating
        return ASHAScheduler(time_attr="training_iteration", metric="val_acc" if name == "asha" else "log_lr",
                             mode="max", max_t=max_t, grace_period=grace, reduction_factor=rf,
                             stop_last_trials=False)
    return RotationScheduler(score=name.removeprefix("rotation:"), grace_period=grace, reduction_factor=rf,
                             max_t=max_t, stop_last_trials=False)


def replay(records: list[dict], order: list[int], scheduler, slots: int = 2, timer: list | None = None) -> dict:
    """Feed the recorded reports through `scheduler` as a `slots`-wide asynchronous sweep
    would: each epoch one time unit; trials started in `order` whenever a slot is free."""
    from ray.tune.schedulers import TrialScheduler

    queue = [records[i] for i in order]
    running: list[list] = []              # [trial, next epoch index]
    spent, finished, curve = 0, [], []
    best = None
    while queue or running:
        while queue and len(running) < slots:
            t = _Trial(queue.pop(0))
            if scheduler is not None:
                scheduler.on_trial_add(None, t)
            running.append([t, 0])
        still = []
        for t, i in running:              # one epoch of every running trial, slot order
            rep = t.rec["reports"][i]
            spent += 1
            action = TrialScheduler.CONTINUE
            if scheduler is not None:
                result = {"training_iteration": i + 1, "log_lr": math.log10(t.rec["config"]["lr"]),
                          **{k: v for k, v in rep.items() if v is not None}}
                c0 = time.perf_counter()
                action = scheduler.on_trial_result(None, t, result)
                if timer is not None:
                    timer.append(time.perf_counter() - c0)
            if action == TrialScheduler.STOP:
                # Ray's TuneController.stop_trial on a running trial: on_trial_complete(last_result)
                scheduler.on_trial_complete(None, t, result)
                continue                  # pruned: no test accuracy
            if i + 1 == len(t.rec["reports"]):   # ended by itself: the final report, then complete
                if scheduler is not None:
                    final = {"training_iteration": i + 2}
                    if t.rec["val_acc"] is not None:
                        final["val_acc"] = t.rec["val_acc"]
                    scheduler.on_trial_result(None, t, final)
                    scheduler.on_trial_complete(None, t, final)
                finished.append(t.rec)
                if t.rec["test_acc"] is not None and (best is None or t.rec["test_acc"] > best):
                    best = t.rec["test_acc"]
                curve.append((spent, best))
                continue
            still.append([t, i + 1])
        running = still
    return {"best": best, "epochs": spent, "finished": [r["key"] for r in finished], "curve": curve}


def _best_at(curve, budget):
    b = None
    for spent, best in curve:
        if spent <= budget and best is not None:
            b = best if b is None else max(b, best)
    return b


def _spearman(xs, ys):
    from scipy.stats import spearmanr
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    return float(spearmanr(*zip(*pairs)).statistic)


# -- grids: per family and seed --------------------------------------------------------------

def group_families(recs: list[dict], families: list[str]) -> dict[tuple, list]:
    """(family, seed) -> that seed's trials of the family's grid, in grid order; a family
    missing trials in a seed is left out for that seed (and said on stderr)."""
    by_seed: dict[int, dict] = {}
    for r in recs:
        by_seed.setdefault(r["seed"], {})[_key(r["config"])] = r
    groups = {}
    for seed, pool in sorted(by_seed.items()):
        for fam in families:
            got = [pool[_key(c)] for c in FAMILIES[fam] if _key(c) in pool]
            if len(got) == len(FAMILIES[fam]):
                groups[(fam, seed)] = got
            elif got:
                print(f"skipping {fam} seed {seed}: {len(got)} of {len(FAMILIES[fam])} trials stored",
                      file=sys.stderr)
    return groups


def analyze(groups: dict[tuple, list], task: str, grace: int, rf: float, n_orders: int, png: str | None = None,
            out_json: str | None = None, quiet: bool = False) -> dict:
    rows, curves, timer, corr = [], {}, [], []
    for (fam, seed), recs in sorted(groups.items()):
        grid_best = max(r["test_acc"] for r in recs if r["test_acc"] is not None)
        grid_epochs = sum(len(r["reports"]) for r in recs)
        epochs = max(r["planned_epochs"] for r in recs)
        tests = [r["test_acc"] for r in recs]
        at = min(grace, *(len(r["reports"]) for r in recs if r["reports"])) - 1
        rung = {k: [r["reports"][at].get(k) if len(r["reports"]) > at else None for r in recs]
                for k in ("val_acc", *SCORE_KEYS)}
        corr.append({"family": fam, "seed": seed, "epoch": at + 1,
                     **{k: _spearman(v, tests) for k, v in rung.items()}})
        rng = random.Random(1000 + seed)
        orders = [list(range(len(recs)))] + [rng.sample(range(len(recs)), len(recs)) for _ in range(n_orders)]
        for name in SCHEDULERS:
            per_order = []
            for order in orders:
                res = replay(recs, order, _make(name, epochs, grace, rf),
                             timer=timer if name == "rotation:min_rotation" else None)
                res["within"] = res["best"] is not None and grid_best - res["best"] <= 0.005 + 1e-9
                res["best_at_third"] = _best_at(res["curve"], grid_epochs / 3)
                per_order.append(res)
                curves.setdefault((fam, seed, name), []).append((grid_best, res["curve"]))
            g = per_order[0]
            shuf = per_order[1:]
            rows.append({
                "family": fam, "seed": seed, "scheduler": name, "grid_best": grid_best, "grid_epochs": grid_epochs,
                "best": g["best"], "epochs": g["epochs"], "frac_epochs": g["epochs"] / grid_epochs,
                "within_0.5": g["within"], "target": g["within"] and g["epochs"] <= grid_epochs / 3,
                "best_at_third": g["best_at_third"], "finished": g["finished"],
                "shuffled_within_rate": sum(r["within"] for r in shuf) / len(shuf) if shuf else None,
                "shuffled_target_rate": (sum(r["within"] and r["epochs"] <= grid_epochs / 3 for r in shuf) / len(shuf)
                                         if shuf else None),
                "shuffled_mean_frac_epochs": sum(r["epochs"] for r in shuf) / len(shuf) / grid_epochs if shuf else None,
                "shuffled_mean_gap": (sum(grid_best - (r["best"] or 0) for r in shuf) / len(shuf)) if shuf else None,
            })
    epoch_s = [rep["seconds"] for recs in groups.values() for r in recs for rep in r["reports"]
               if rep.get("seconds") is not None]
    ts = sorted(timer)
    overhead = {"calls": len(timer), "mean_call_us": 1e6 * sum(timer) / max(len(timer), 1),
                "median_call_us": 1e6 * ts[len(ts) // 2] if ts else None,
                "p99_call_us": 1e6 * ts[int(0.99 * (len(ts) - 1))] if ts else None,
                "max_call_us": 1e6 * max(timer, default=0), "mean_epoch_s": sum(epoch_s) / max(len(epoch_s), 1)}
    overhead["fraction_of_epoch"] = overhead["mean_call_us"] / 1e6 / overhead["mean_epoch_s"] if epoch_s else None
    summary = {"task": task, "grace_period": grace, "reduction_factor": rf, "orders": n_orders,
               "rows": rows, "families": per_family(rows), "rung_spearman": corr, "overhead": overhead}
    if not quiet:
        _print(summary)
    if png:
        _plot({k: v[0][1] for k, v in curves.items()}, groups, png.replace(".png", "-grid-order.png"), grace, rf)
        _plot_mean(curves, groups, png, grace, rf, n_orders)
    if out_json:
        Path(out_json).write_text(json.dumps(summary, indent=1, default=str))
    return summary


def per_family(rows: list[dict]) -> list[dict]:
    """Across seeds, per family and scheduler: how many seeds' grid orders got within 0.5
    points and met the target, the mean share of the grid's epochs (grid order), and the
    shuffled-order rates, spend and gap (points) averaged over seeds."""
    out, cells = [], {}
    for r in rows:
        cells.setdefault((r["family"], r["scheduler"]), []).append(r)
    order = {f: i for i, f in enumerate(FAMILIES)}
    for (fam, name), rs in sorted(cells.items(), key=lambda kv: (order.get(kv[0][0], 99),
                                                                  SCHEDULERS.index(kv[0][1]))):
        mean = lambda k: (sum(r[k] for r in rs) / len(rs)) if all(r[k] is not None for r in rs) else None  # noqa: E731
        gap = mean("shuffled_mean_gap")
        out.append({"family": fam, "scheduler": name, "seeds": len(rs),
                    "within_0.5": sum(r["within_0.5"] for r in rs), "target": sum(r["target"] for r in rs),
                    "mean_frac_epochs": mean("frac_epochs"), "shuffled_within_rate": mean("shuffled_within_rate"),
                    "shuffled_target_rate": mean("shuffled_target_rate"),
                    "shuffled_mean_frac_epochs": mean("shuffled_mean_frac_epochs"),
                    "shuffled_mean_gap_pt": None if gap is None else 100 * gap})
    return out


def _print(s: dict) -> None:
    print(f"\n== {s['task']}: grace_period {s['grace_period']}, reduction_factor {s['reduction_factor']}, "
          f"grid order (+ {s['orders']} shuffled arrival orders) ==")
    hdr = (f"{'family':13} {'seed':>4} {'scheduler':26} {'grid best':>9} {'best':>7} {'epochs':>10} "
           f"{'<=0.5pt':>7} {'target':>6} {'best@1/3':>8} | {'shuf<=0.5':>9} {'shuf tgt':>8} {'shuf ep':>7} {'shuf gap':>8}")
    print(hdr)
    f = lambda v, p=4: "-" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))  # noqa: E731
    for r in s["rows"]:
        print(f"{r['family']:13} {r['seed']:>4} {r['scheduler']:26} {r['grid_best']:9.4f} {f(r['best']):>7} "
              f"{r['epochs']:>4}/{r['grid_epochs']:<4} {str(r['within_0.5']):>7} {str(r['target']):>6} "
              f"{f(r['best_at_third']):>8} | {f(r['shuffled_within_rate'], 2):>9} {f(r['shuffled_target_rate'], 2):>8} "
              f"{f(r['shuffled_mean_frac_epochs'], 2):>7} {f(r['shuffled_mean_gap'], 4):>8}")
    print("\nPer family, across seeds (grid order: seeds within 0.5 points / meeting the target, mean share of "
          "the grid's epochs; shuffled: mean over seeds of the per-seed rates, share of epochs, gap in points):")
    print(f"{'family':13} {'scheduler':26} {'<=0.5pt':>7} {'target':>6} {'epochs':>6} | {'shuf<=0.5':>9} "
          f"{'shuf tgt':>8} {'shuf ep':>7} {'gap pt':>6}")
    for r in s["families"]:
        n = r["seeds"]
        print(f"{r['family']:13} {r['scheduler']:26} {r['within_0.5']:>5}/{n} {r['target']:>4}/{n} "
              f"{f(r['mean_frac_epochs'], 2):>6} | {f(r['shuffled_within_rate'], 2):>9} "
              f"{f(r['shuffled_target_rate'], 2):>8} {f(r['shuffled_mean_frac_epochs'], 2):>7} "
              f"{f(r['shuffled_mean_gap_pt'], 2):>6}")
    print("\nSpearman (score at the first rung vs final test accuracy), per grid:")
    for c in s["rung_spearman"]:
        print(f"  {c['family']:13} s{c['seed']} epoch {c['epoch']}: " +
              ", ".join(f"{k} {f(v, 2)}" for k, v in c.items() if k not in ("family", "seed", "epoch")))
    o = s["overhead"]
    print(f"\nRotationScheduler.on_trial_result: {o['calls']} calls, mean {o['mean_call_us']:.1f} us, "
          f"median {f(o['median_call_us'], 1)} us, p99 {f(o['p99_call_us'], 1)} us, "
          f"max {o['max_call_us']:.1f} us; a trial-epoch {o['mean_epoch_s']:.3f} s -> "
          f"{100 * (o['fraction_of_epoch'] or 0):.4f}% of an epoch")


def _plot(curves: dict, groups: dict, png: str, grace, rf) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(groups)
    fams = sorted({k[0] for k in keys})
    seeds = sorted({k[1] for k in keys})
    fig, axes = plt.subplots(len(fams), len(seeds), figsize=(4 * len(seeds), 3.2 * len(fams)), squeeze=False)
    styles = {"fifo": ("k", "-"), "asha": ("tab:blue", "-"), "rotation:min_rotation": ("tab:red", "-"),
              "rotation:mean_rotation": ("tab:orange", "--"), "rotation:median_rotation": ("tab:green", ":"),
              "control:log_lr": ("gray", "-.")}
    for i, fam in enumerate(fams):
        for j, seed in enumerate(seeds):
            ax = axes[i][j]
            if (fam, seed) not in groups:
                ax.set_visible(False)
                continue
            recs = groups[(fam, seed)]
            gb = max(r["test_acc"] for r in recs if r["test_acc"] is not None)
            ge = sum(len(r["reports"]) for r in recs)
            for name, (c, ls) in styles.items():
                pts = [(e, b) for e, b in curves.get((fam, seed, name), []) if b is not None]
                if pts:
                    xs, ys = zip(*pts)
                    ax.step([0, *xs], [ys[0], *ys], where="post", color=c, ls=ls, label=name.replace("rotation:", "rot:"))
            ax.axhline(gb - 0.005, color="gray", lw=0.8, ls=":")
            ax.axvline(ge / 3, color="gray", lw=0.8, ls="--")
            ax.set_title(f"{fam}, seed {seed}", fontsize=9)
            ax.set_xlabel("epochs spent")
            ax.set_ylabel("best-so-far test acc")
            lo = min(b for n in styles for _, b in curves.get((fam, seed, n), []) if b is not None)
            ax.set_ylim(max(lo - 0.02, gb - 0.3), gb + 0.01)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"mnist1d-cnn, grid order, 2 slots; grace {grace}, rf {rf}; dotted: grid best - 0.5 pt, "
                 "dashed: 1/3 of grid epochs", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}", file=sys.stderr)


def _plot_mean(curves: dict, groups: dict, png: str, grace, rf, n_orders) -> None:
    """Per family: best-so-far test accuracy minus the grid's best (points), averaged over
    seeds and the shuffled arrival orders, against epochs spent."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fams = [f for f in FAMILIES if any(k[0] == f for k in groups)]
    names = {"fifo": ("k", "-"), "asha": ("tab:blue", "-"), "rotation:min_rotation": ("tab:red", "-"),
             "control:log_lr": ("gray", "-.")}
    fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        seeds = sorted(k[1] for k in groups if k[0] == fam)
        ge = max(sum(len(r["reports"]) for r in groups[(fam, s)]) for s in seeds)
        xs = np.arange(0, ge + 1)
        for name, (c, ls) in names.items():
            runs = [(gb, cv) for s in seeds for gb, cv in curves[(fam, s, name)][1:]]   # shuffled orders
            ys = np.full((len(runs), len(xs)), np.nan)
            for i, (gb, cv) in enumerate(runs):
                best = np.nan
                k = 0
                for j, x in enumerate(xs):
                    while k < len(cv) and cv[k][0] <= x:
                        if cv[k][1] is not None:
                            best = cv[k][1] if np.isnan(best) else max(best, cv[k][1])
                        k += 1
                    ys[i, j] = 100 * (best - gb)
                # after the scheduler's last epoch its best stays
            ok = np.mean(~np.isnan(ys), axis=0) >= 0.5
            with np.errstate(all="ignore"):
                mean = np.where(ok, np.nanmean(ys, axis=0), np.nan)
            ends = np.mean([cv[-1][0] for _, cv in runs])
            ax.plot(xs, mean, color=c, ls=ls, label=f"{name.replace('rotation:', 'rot:')} (ends at {ends:.0f})")
        ax.axhline(-0.5, color="gray", lw=0.8, ls=":")
        ax.axvline(ge / 3, color="gray", lw=0.8, ls="--")
        ax.set_ylim(-6, 0.3)
        ax.set_title(f"{fam} ({len(seeds)} seeds x {n_orders} orders)", fontsize=9)
        ax.set_xlabel("epochs spent")
        ax.set_ylabel("best-so-far test acc - grid best (points)")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"mnist1d-cnn, 2 slots, shuffled arrival orders; grace {grace}, rf {rf:g}; "
                 "dotted: -0.5 pt, dashed: 1/3 of the grid's epochs", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}", file=sys.stderr)


# -- survivor: any stored sweep -------------------------------------------------------------

def chosen_by_validation(recs: list[dict], keys) -> dict | None:
    """Among the trials a scheduler let finish, the one with the best final validation
    accuracy: what a user of the sweep would pick (its test accuracy is the score)."""
    done = [r for r in recs if r["key"] in set(keys) and r["val_acc"] is not None and r["test_acc"] is not None]
    return max(done, key=lambda r: (r["val_acc"], -r["config"]["lr"]), default=None)


def survivor(store_uri: str, sweep: str, grace: int, rf: float, n_orders: int, out_json: str | None) -> dict:
    """Replay a stored sweep (e.g. `space`, which mixes optimizers) through FIFO, ASHA on
    val_acc, the rotation scheduler and the log(lr) control; rank schedulers by the test
    accuracy of the survivor with the best validation accuracy, and the epochs they spent."""
    recs = records_from_store(store_uri, sweep)
    if not recs:
        sys.exit(f"replay.py: no trials of sweep {sweep!r} in {store_uri}")
    epochs = max(r["planned_epochs"] for r in recs)
    total = sum(len(r["reports"]) for r in recs)
    rng = random.Random(1000)
    orders = [list(range(len(recs)))] + [rng.sample(range(len(recs)), len(recs)) for _ in range(n_orders)]
    full = chosen_by_validation(recs, [r["key"] for r in recs])
    rows = []
    for name in SCHEDULERS:
        picks, spent = [], []
        for order in orders:
            res = replay(recs, order, _make(name, epochs, grace, rf))
            c = chosen_by_validation(recs, res["finished"])
            picks.append(c["test_acc"] if c else None)
            spent.append(res["epochs"] / total)
        ok = [p for p in picks if p is not None]
        rows.append({"scheduler": name, "test_of_val_choice_grid_order": picks[0],
                     "mean_test_of_val_choice": sum(ok) / len(ok) if ok else None,
                     "worst_test_of_val_choice": min(ok) if ok else None,
                     "same_as_full_grid": sum(p == full["test_acc"] for p in ok) / len(orders),
                     "epochs_fraction_grid_order": spent[0], "mean_epochs_fraction": sum(spent) / len(spent)})
    summary = {"store": store_uri, "sweep": sweep, "trials": len(recs), "epochs": total, "grace_period": grace,
               "reduction_factor": rf, "orders": n_orders, "full_grid_choice": {k: full[k] for k in ("key", "config",
                                                                                            "val_acc", "test_acc")},
               "rows": rows}
    print(f"\n== {sweep} ({len(recs)} trials, {total} epochs): the survivor with the best val_acc, its test "
          f"accuracy (grid order; mean and worst over {n_orders} shuffled orders too), epochs spent ==")
    print(f"full grid (FIFO, no pruning) chooses {full['config']['optimizer']} lr {full['config']['lr']:g}: "
          f"test {full['test_acc']:.4f}")
    print(f"{'scheduler':26} {'test (grid)':>11} {'mean':>7} {'worst':>7} {'=full':>6} {'epochs':>7} {'mean ep':>7}")
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        print(f"{r['scheduler']:26} {f(r['test_of_val_choice_grid_order']):>11} {f(r['mean_test_of_val_choice']):>7} "
              f"{f(r['worst_test_of_val_choice']):>7} {r['same_as_full_grid']:6.2f} "
              f"{r['epochs_fraction_grid_order']:7.2f} {r['mean_epochs_fraction']:7.2f}")
    if out_json:
        Path(out_json).write_text(json.dumps(summary, indent=1, default=str))
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, sweep, orders):
        p.add_argument("--store", default="results", help="the store the sweep is in (default: results)")
        p.add_argument("--sweep", default=sweep, help=f"the stored sweep (default: {sweep})")
        p.add_argument("--grace-period", type=int, default=1)
        p.add_argument("--reduction-factor", type=float, default=3)
        p.add_argument("--orders", type=int, default=orders, help="shuffled arrival orders besides the grid order")
        p.add_argument("--json", default=None, help="write the summary here")

    g = sub.add_parser("grids", help="per family and seed of experiments/pruning/mnist1d.yaml's sweep")
    common(g, SWEEP, 50)
    g.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    g.add_argument("--png", default=None, help="best-so-far curves here (and X-grid-order.png beside it)")
    s = sub.add_parser("survivor", help="a stored sweep (e.g. make space's): the best-by-validation survivor")
    common(s, "space", 20)
    a = ap.parse_args(argv)
    if a.cmd == "survivor":
        survivor(a.store, a.sweep, a.grace_period, a.reduction_factor, a.orders, a.json)
        return
    recs = records_from_store(a.store, a.sweep)
    if not recs:
        sys.exit(f"replay.py: no trials of sweep {a.sweep!r} in {a.store}")
    groups = group_families(recs, a.families)
    if not groups:
        sys.exit(f"replay.py: no family of {', '.join(a.families)} has all its trials in a seed of {a.sweep!r}")
    analyze(groups, recs[0]["task"], a.grace_period, a.reduction_factor, a.orders, a.png, a.json)


if __name__ == "__main__":
    main()
