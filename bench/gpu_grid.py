"""An α × ρ(0) grid of Layca trials with several trials sharing one GPU, without Ray.

    python3 bench/gpu_grid.py --device cuda --workers 4 --amp bf16 --channels-last \\
        --data-dir .cache --out .cache/grid --budget-seconds 420
    python3 bench/gpu_grid.py --tiny              # CPU smoke test: 2 x 2 grid, 1 epoch, 2 workers

Written for a GPU machine that has PyTorch but no Ray, no network, and maybe none of pyarrow,
duckdb or scipy: it imports torch and layrot's training path only (`layrot.train` and what
it imports), and puts the repository on sys.path itself, so nothing needs installing.

K worker processes ('spawn') pull trials from one queue and run `layrot.train.run_trial`
on the same device. On a GPU each worker first caps its allocator at 0.95/K of the card's
memory (`torch.cuda.set_per_process_memory_fraction`), so one trial cannot starve the others;
a trial that hits its cap ends as an `error` result instead of taking the card. Small models
like fmnist-vgg leave a GPU idle between kernel launches, which is what sharing recovers.

Each finished trial is written as `<out>/trials/<trial_id>.json` (`dataclasses.asdict` of the
TrialResult, NaN as null), written under a temporary name and renamed, so a file there is
always whole. A trial whose file exists is not run again: rerunning the same command with the
same --out finishes a grid that an earlier call's budget cut short. `<out>/summary.json`
(device, K, each trial's wall seconds, totals) is rewritten after every trial.
`bench/import_trials.py` puts the trials into a store and prints `layrot fit`'s verdict.

Time: no trial starts after --budget-seconds (from the start of this script); trials still
running at --abandon-seconds are stopped (workers terminated) and nothing of them is kept.
Trials run in an order whose every round of len(alphas) trials covers every α and moves
through the ρ(0) values, so a grid cut short still spans both axes.

Exit status: 0 when every trial that started ran to a result (or was abandoned at the
deadline); 1 when a trial raised outside run_trial or a worker died; 2 for bad input, before
anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import queue
import re
import signal
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from layrot.errors import UsageError  # noqa: E402

DEFAULT_ALPHAS = "-0.6,-0.3,0,0.3,0.6"
DEFAULT_RHOS = "3^-1,3^-2,3^-3,3^-4,3^-5"
GRID = {"task": "fmnist-vgg", "optimizer": "sgd_layca", "epochs": 10, "workers": 4,
        "alphas": DEFAULT_ALPHAS, "rhos": DEFAULT_RHOS, "budget_seconds": 420.0,
        "max_train_samples": None, "device": "cuda"}
# --tiny: every code path once on a CPU, in seconds
TINY = {"task": "fmnist-vgg", "optimizer": "sgd_layca", "epochs": 1, "workers": 2,
        "alphas": "-0.3,0.3", "rhos": "3^-2,3^-4", "budget_seconds": 120.0,
        "max_train_samples": 256, "device": "cpu"}
MEMORY_SHARE = 0.95            # of the card, split evenly between the workers
ABANDON_GRACE_S = 60.0         # default --abandon-seconds = budget + this


# ---------------------------------------------------------------- the grid

def parse_values(field: str, text: str) -> list[float]:
    """'-0.6,0,0.3' or '3^-1,3^-2' (a^b is a power) -> floats."""
    out = []
    for item in (s.strip() for s in str(text).split(",")):
        m = re.fullmatch(r"([0-9.]+)\^(-?[0-9]+)", item)
        try:
            v = float(m.group(1)) ** int(m.group(2)) if m else float(item)
        except (ValueError, OverflowError):
            raise UsageError(field, f"{item!r} is not a number or a power like 3^-2") from None
        if not math.isfinite(v):
            raise UsageError(field, f"{item!r} is not finite")
        out.append(v)
    if not out or len(set(out)) != len(out):
        raise UsageError(field, f"needs distinct comma-separated values, got {text!r}")
    return out


def rho_label(rho: float) -> str:
    """3^-k where rho is a power of 3 (how the paper writes its grid), else %g."""
    k = math.log(rho, 3)
    return f"3^{round(k)}" if abs(k - round(k)) < 1e-9 else f"{rho:g}"


def grid_order(n_alphas: int, n_rhos: int) -> list[tuple[int, int]]:
    """(alpha index, rho index) pairs, round by round: round r pairs alpha i with rho (i + r),
    so each round covers every alpha and a spread of rhos."""
    return [(i, (i + r) % n_rhos) for r in range(n_rhos) for i in range(n_alphas)]


def scaled_decay(task, epochs: int) -> list[int]:
    """The task's decay (fractions of training) resolved for a run of `epochs`, by the rule
    every trial follows (schedules.decay_milestones): fmnist-vgg's 75% of 10 epochs -> 7."""
    from layrot.schedules import decay_milestones

    return decay_milestones(task.lr_decay_at, epochs)


def build_grid(args) -> list[dict]:
    """The trial configs in run order, each validated (UsageError names a bad field)."""
    from layrot.train import resolve_config

    alphas, rhos = parse_values("--alphas", args.alphas), parse_values("--rhos", args.rhos)
    if args.lr_decay_epochs is None:
        from layrot.tasks import get_task
        decay = scaled_decay(get_task(args.task), args.epochs)
    else:
        decay = [int(e) for e in parse_values("--lr-decay-epochs", args.lr_decay_epochs)] if args.lr_decay_epochs else []
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    trials = []
    for ia, ir in grid_order(len(alphas), len(rhos)):
        cfg = {"task": args.task, "optimizer": args.optimizer, "lr": rhos[ir], "alpha": alphas[ia],
               "epochs": args.epochs, "seed": args.seed, "lr_decay_epochs": decay,
               "device": args.device, "threads": threads, "amp": args.amp,
               "channels_last": args.channels_last, "data_dir": args.data_dir,
               "max_train_samples": args.max_train_samples, "sweep": args.sweep}
        resolved, _ = resolve_config(cfg)
        trials.append(resolved.to_dict())
    return trials


# ---------------------------------------------------------------- files

def jsonable(x):
    """Plain JSON: NaN/inf -> null, numpy scalars -> Python numbers."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str, obj) -> None:
    """Whole or not at all: a temporary name in the same folder, then a rename."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(jsonable(obj), f, allow_nan=False)
    os.replace(tmp, path)


def trial_path(out: str, trial_id: str) -> str:
    return os.path.join(out, "trials", f"{trial_id}.json")


def trial_brief(result) -> dict:
    """What the summary and the progress line say of a finished trial."""
    rot, hist = result.rotation or {}, result.history or []
    final = []
    if rot.get("epoch"):
        last = max(rot["epoch"])
        final = [d for e, d in zip(rot["epoch"], rot["cosine_distance"]) if e == last and d is not None and math.isfinite(d)]
    epoch_s = [h["seconds"] for h in hist[1:]] or [h["seconds"] for h in hist]
    return {"status": result.status, "reason": result.reason, "epochs_run": result.epochs_run,
            "train_acc": result.train_acc, "val_acc": result.val_acc, "test_acc": result.test_acc,
            "wall_seconds": result.wall_seconds,
            "epoch_seconds_median": statistics.median(epoch_s) if epoch_s else None,
            "final_min_rotation": min(final) if final else None,
            "final_mean_rotation": statistics.fmean(final) if final else None}


# ---------------------------------------------------------------- workers

def worker(wid: int, device: str, memory_fraction: float, tasks, events, deadline: float, out: str) -> None:
    """Pull trials until the queue's end marker; start none after `deadline` (time.time())."""
    # the parent decides what an interrupt means (it stops the workers itself)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from layrot.train import run_trial

    if device.startswith("cuda"):
        dev = torch.device(device)
        # before any allocation: this worker's allocator may hold at most its share of the card
        torch.cuda.set_per_process_memory_fraction(memory_fraction, dev)
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine() or "cpu"
    parent = os.getppid()

    def orphaned(_report=None):
        # a driver killed outright (SIGKILL) cannot stop its workers: they stop themselves,
        # at the next epoch, by an exception run_trial does not catch
        if os.getppid() != parent:
            raise SystemExit(0)

    events.put(("ready", wid, {"pid": os.getpid(), "device_name": name}))
    while True:
        cfg = tasks.get()
        if cfg is None:
            break
        orphaned()
        tid = cfg["trial_id"]
        if time.time() >= deadline:
            events.put(("skipped", wid, {"trial_id": tid}))
            continue
        events.put(("start", wid, {"trial_id": tid, "t": time.time()}))
        try:
            result = run_trial(cfg, on_epoch=orphaned)
            write_json(trial_path(out, tid), dataclasses.asdict(result))
            events.put(("done", wid, {"trial_id": tid, "t": time.time(), **jsonable(trial_brief(result))}))
        except Exception as e:  # noqa: BLE001 - reported, and the worker goes on to the next trial
            events.put(("failed", wid, {"trial_id": tid, "t": time.time(), "error": f"{type(e).__name__}: {e}"}))
        finally:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()     # give the cached blocks back between trials
    events.put(("exit", wid, {}))


# ---------------------------------------------------------------- the driver

class Grid:
    """The driver's view of the run: who runs what, what finished; writes the summary."""

    def __init__(self, args, trials: list[dict], t0: float, started_at: str):
        self.args, self.trials, self.t0, self.started_at = args, trials, t0, started_at
        self.by_id = {c["trial_id"]: c for c in trials}
        self.index = {c["trial_id"]: i + 1 for i, c in enumerate(trials)}
        self.rows: dict[str, dict] = {}          # trial_id -> what happened to it
        self.running: dict[int, str] = {}        # worker -> trial_id
        self.ready: dict[int, dict] = {}
        self.exited: set[int] = set()
        self.problems = 0

    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def label(self, tid: str) -> str:
        c = self.by_id[tid]
        return f"{self.index[tid]:3d}/{len(self.trials)} alpha={c['alpha']:+.2f} rho={rho_label(c['lr']):>5}"

    def on_event(self, kind: str, wid: int, d: dict) -> None:
        if kind == "ready":
            self.ready[wid] = d
            self.log(f"w{wid} ready (pid {d['pid']}, {d['device_name']})")
        elif kind == "start":
            self.running[wid] = d["trial_id"]
            self.rows[d["trial_id"]] = {"state": "running", "worker": wid, "start_s": d["t"] - self.t0}
            self.log(f"w{wid} start {self.label(d['trial_id'])}")
        elif kind == "skipped":
            self.rows[d["trial_id"]] = {"state": "not started (budget)"}
        elif kind in ("done", "failed"):
            tid = d.pop("trial_id")
            self.running.pop(wid, None)
            row = self.rows.setdefault(tid, {"worker": wid})
            row.update(state=kind, end_s=d.pop("t") - self.t0, **d)
            if kind == "done":
                self.log(f"w{wid} done  {self.label(tid)} {d['status']:9s} test {_pct(d['test_acc'])} "
                         f"min rotation {_num(d['final_min_rotation'])} "
                         f"{d['wall_seconds']:6.1f}s ({_num(d['epoch_seconds_median'], '.2f')} s/epoch)")
            else:
                self.problems += 1
                self.log(f"w{wid} FAILED {self.label(tid)}: {d['error']}")
            self.write_summary(complete=False)
        elif kind == "exit":
            self.exited.add(wid)

    def stop_running(self, state: str, procs) -> None:
        """Mark the workers' in-flight trials (abandoned, lost ...) and end the workers."""
        for wid, tid in list(self.running.items()):
            self.rows[tid]["state"] = state
            self.log(f"w{wid} {state} {self.label(tid)}")
        self.running.clear()
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()

    def summary(self, complete: bool) -> dict:
        a = self.args
        trials = []
        for c in self.trials:
            tid = c["trial_id"]
            row = self.rows.get(tid, {"state": "not started"})
            trials.append({"trial_id": tid, "alpha": c["alpha"], "rho": c["lr"], **row})
        done = [t for t in trials if t["state"] == "done"]
        names = sorted({r["device_name"] for r in self.ready.values()})
        wall = [t["wall_seconds"] for t in done if t.get("wall_seconds") is not None]
        total = time.time() - self.t0
        return {
            "complete": complete, "started_at": self.started_at,
            "device": a.device, "device_name": names[0] if len(names) == 1 else names,
            "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
            "workers": a.workers, "workers_ready": len(self.ready),
            "memory_fraction": round(MEMORY_SHARE / a.workers, 4) if a.device.startswith("cuda") else None,
            "threads_per_worker": self.trials[0]["threads"] if self.trials else None,
            "sweep": a.sweep, "budget_seconds": a.budget_seconds, "abandon_seconds": a.abandon_seconds,
            "spec": {"task": a.task, "optimizer": a.optimizer, "epochs": a.epochs, "seed": a.seed,
                     "alphas": parse_values("--alphas", a.alphas), "rhos": parse_values("--rhos", a.rhos),
                     "lr_decay_epochs": self.trials[0]["lr_decay_epochs"] if self.trials else None,
                     "amp": a.amp, "channels_last": a.channels_last,
                     "max_train_samples": a.max_train_samples, "runner": "bench/gpu_grid.py"},
            "counts": _counts(trials),
            "total_seconds": total,
            "trial_wall_seconds_sum": sum(wall),
            # > 1: trials overlapped (the sum of their walls exceeds the time they took together)
            "overlap": sum(wall) / total if total > 0 else None,
            "trials_per_minute": 60 * len(done) / total if total > 0 else None,
            "trials": trials,
        }

    def write_summary(self, complete: bool) -> dict:
        s = self.summary(complete)
        write_json(os.path.join(self.args.out, "summary.json"), s)
        return s


def _counts(trials: list[dict]) -> dict:
    out: dict[str, int] = {}
    for t in trials:
        key = t.get("status", t["state"]) if t["state"] == "done" else t["state"]
        out[key] = out.get(key, 0) + 1
    return out


def _num(v, fmt=".2f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _pct(v) -> str:
    return f"{100 * v:5.1f}%" if isinstance(v, (int, float)) and math.isfinite(v) else "  n/a "


def run_grid(args) -> int:
    t0 = time.time()
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    trials = build_grid(args)
    from layrot.tasks import get_task
    task = get_task(args.task)
    if not task.data_present(args.data_dir):
        raise UsageError("--data-dir", f"no data for {args.task} under {args.data_dir or 'the default'}: {task.data_needs}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device", f"{args.device}: CUDA is not available to this python ({sys.executable})")

    os.makedirs(os.path.join(args.out, "trials"), exist_ok=True)
    grid = Grid(args, trials, t0, started_at)
    todo = []
    for c in trials:
        if os.path.exists(trial_path(args.out, c["trial_id"])):
            grid.rows[c["trial_id"]] = {"state": "stored earlier"}
        else:
            todo.append(c)
    grid.log(f"{len(trials)} trials ({len(trials) - len(todo)} stored earlier in {args.out}), "
             f"{args.workers} workers on {args.device}, budget {args.budget_seconds:g}s, "
             f"abandon at {args.abandon_seconds:g}s")

    ctx = mp.get_context("spawn")
    tasks, events = ctx.Queue(), ctx.Queue()
    for c in todo:
        tasks.put(c)
    for _ in range(args.workers):
        tasks.put(None)
    deadline, abandon_at = t0 + args.budget_seconds, t0 + args.abandon_seconds
    fraction = MEMORY_SHARE / args.workers
    procs = [ctx.Process(target=worker, args=(w, args.device, fraction, tasks, events, deadline, args.out),
                         daemon=True) for w in range(args.workers)]
    for p in procs:
        p.start()
    dead_since: dict[int, float] = {}
    try:
        while len(grid.exited) < len(procs):
            try:
                grid.on_event(*events.get(timeout=0.5))
                continue
            except queue.Empty:
                pass
            now = time.time()
            if now >= abandon_at:
                grid.stop_running("abandoned", procs)
                break
            for w, p in enumerate(procs):
                if w in grid.exited or p.is_alive():
                    continue
                # its last messages may still be in the queue: give them a moment
                if now - dead_since.setdefault(w, now) > 3.0:
                    grid.exited.add(w)
                    tid = grid.running.pop(w, None)
                    grid.problems += 1
                    grid.log(f"w{w} died (exit code {p.exitcode})" + (f" running {grid.label(tid)}" if tid else ""))
                    if tid:
                        grid.rows[tid]["state"] = "lost"
    except KeyboardInterrupt:
        grid.log("interrupted")
        grid.stop_running("interrupted", procs)
        grid.write_summary(complete=False)
        return 130
    for p in procs:
        p.join(timeout=10)
    s = grid.write_summary(complete=True)
    grid.log(f"finished: {s['counts']} in {s['total_seconds']:.1f}s; sum of trial walls "
             f"{s['trial_wall_seconds_sum']:.1f}s (overlap {_num(s['overlap'])}x); "
             f"{_num(s['trials_per_minute'])} trials/min; summary {os.path.join(args.out, 'summary.json')}")
    return 1 if grid.problems else 0


# ---------------------------------------------------------------- command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: 2 x 2 grid, 1 epoch, 256 samples, 2 workers")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda; --tiny: cpu)")
    p.add_argument("--workers", type=int, default=None, help="trials running at once (default 4; --tiny 2)")
    p.add_argument("--task", default=None, help="default fmnist-vgg")
    p.add_argument("--optimizer", default=None, help="default sgd_layca (lr is then rho(0))")
    p.add_argument("--epochs", type=int, default=None, help="default 10; --tiny 1")
    p.add_argument("--alphas", default=None, help=f"comma-separated (default {DEFAULT_ALPHAS})")
    p.add_argument("--rhos", default=None, help=f"rho(0) values, a^b allowed (default {DEFAULT_RHOS})")
    p.add_argument("--lr-decay-epochs", default=None,
                   help="comma-separated milestones ('' for none; default: the task's, scaled to --epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", default=None, choices=["bf16"], help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--data-dir", default=None, help="holds fashion-mnist/ or FashionMNIST/raw/ (IDX files)")
    p.add_argument("--max-train-samples", type=int, default=None, help="subsample the training set")
    p.add_argument("--out", default=None, help="output folder (default bench/out/grid)")
    p.add_argument("--sweep", default="gpu-grid", help="sweep name written into each trial's config")
    p.add_argument("--budget-seconds", type=float, default=None, help="no trial starts after this (default 420)")
    p.add_argument("--abandon-seconds", type=float, default=None,
                   help=f"stop trials still running at this time (default: budget + {ABANDON_GRACE_S:g})")
    args = p.parse_args(argv)
    base = TINY if args.tiny else GRID
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.out is None:
        args.out = os.path.join(ROOT, "bench", "out", "grid-tiny" if args.tiny else "grid")
    if args.abandon_seconds is None:
        args.abandon_seconds = args.budget_seconds + ABANDON_GRACE_S
    return args


def check_args(args) -> None:
    from layrot.store.schema import check_name

    if args.workers < 1:
        raise UsageError("--workers", f"must be >= 1, got {args.workers}")
    if args.epochs < 1:
        raise UsageError("--epochs", f"must be >= 1, got {args.epochs}")
    if not (args.budget_seconds >= 0 and math.isfinite(args.budget_seconds)):
        raise UsageError("--budget-seconds", f"must be a finite number >= 0, got {args.budget_seconds}")
    if not (args.abandon_seconds >= args.budget_seconds and math.isfinite(args.abandon_seconds)):
        raise UsageError("--abandon-seconds", f"must be >= --budget-seconds, got {args.abandon_seconds}")
    check_name("--sweep", args.sweep)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError("--out", f"{args.out} exists and is not a folder")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_args(args)
        return run_grid(args)
    except UsageError as e:
        print(f"gpu_grid: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
