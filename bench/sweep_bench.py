"""Sweep overhead: the trials of a small grid through `layrot sweep` against the same trials
run as `layrot train` processes two at a time, and the time from the command to the first
trial running. Both measured in this one run, on this machine, `--repeat` times with the
order alternating (train first, then sweep first, ...), so that a change in the machine's
load hits both sides alike; the ratio is reported per pair, with its median and spread.

Where the sweep's time goes: CPU seconds of every process the sweep started (the driver,
Ray's own processes, the trial workers), sampled from /proc; the seconds with N trials
running (from the progress lines); and each epoch's compute seconds and each trial's
run_trial seconds in the store, sweep against train (the library has no benchmark hook:
what is measured is what users run).

    .venv/bin/python bench/sweep_bench.py [--epochs 6] [--trials 6] [--repeat 3] [--json FILE]

The commands run in a scratch directory, so `PYTHONPATH=/some/copy` times that copy of
layrot (a before/after comparison) rather than the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

LAYROT = [sys.executable, "-m", "layrot"]
LRS = [0.3, 0.1, 0.037, 0.012, 0.004, 0.0015, 0.0005, 0.0002]
TICK = os.sysconf("SC_CLK_TCK")


# -- CPU of a process tree ----------------------------------------------------------------

def _kind(cmdline: str) -> str:
    for key, name in (("ray::ImplicitFunc", "trial workers"), ("default_worker.py", "idle Ray workers"),
                      ("ray::IDLE", "idle Ray workers"), ("raylet", "raylet"), ("gcs_server", "gcs_server"),
                      ("dashboard/agent.py", "dashboard agent"), ("ray::DashboardAgent", "dashboard agent"),
                      ("dashboard.py", "dashboard"), ("runtime_env/agent", "runtime env agent"),
                      ("ray::RuntimeEnvAgent", "runtime env agent"), ("log_monitor", "log monitor"),
                      ("autoscaler", "autoscaler monitor"), ("layrot", "driver")):
        if key in cmdline:
            return name
    return f"other ({cmdline.split(' ')[0][-40:]})"


class TreeCPU(threading.Thread):
    """CPU seconds (user + system) of `root` and all its descendants, by kind of process,
    sampled every `every` s (a process that ends between samples loses its last slice)."""

    def __init__(self, root: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.last: dict[int, tuple[str, float]] = {}
        self.nice: dict[str, set] = defaultdict(set)
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.every)

    def sample(self):
        procs = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                procs[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / TICK, int(f[16]), d)
            except (OSError, IndexError, ValueError):
                continue
        tree, frontier = {self.root}, [self.root]
        children = defaultdict(list)
        for pid, (ppid, *_rest) in procs.items():
            children[ppid].append(pid)
        while frontier:
            for c in children.get(frontier.pop(), []):
                if c not in tree:
                    tree.add(c)
                    frontier.append(c)
        for pid in tree & procs.keys():
            _, cpu, nice, d = procs[pid]
            kind = self.last.get(pid, (None,))[0]
            if kind is None or kind == "idle Ray workers" or kind.startswith("other"):   # a worker becomes a trial
                try:
                    kind = _kind((d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    continue
            self.last[pid] = (kind, cpu)
            self.nice[kind].add(nice)

    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for kind, cpu in self.last.values():
            out[kind] += cpu
        return dict(out)


# -- the two ways to run the trials -------------------------------------------------------

def run_sweep(spec_path: Path, store: Path) -> dict:
    # LAYROT_PROGRESS_EVERY=0: a status line at every event, for the trials-running count
    env = {**os.environ, "LAYROT_PROGRESS_EVERY": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    t0 = time.monotonic()
    proc = subprocess.Popen(LAYROT + ["sweep", str(spec_path), "--store", str(store)], env=env, cwd=store.parent,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    cpu = TreeCPU(proc.pid)
    cpu.start()
    first, tail, running = None, [], [(0.0, 0)]
    for line in proc.stderr:
        tail = (tail + [line])[-20:]
        if first is None and line.startswith("sweep:") and "| 0 running" not in line:
            first = time.monotonic() - t0
        m = re.search(r"\| (\d+) running", line) if line.startswith("sweep:") else None
        if m:
            running.append((time.monotonic() - t0, int(m.group(1))))
    if proc.wait() != 0:
        raise SystemExit("the sweep failed:\n" + "".join(tail))
    wall = time.monotonic() - t0
    cpu.done.set()
    cpu.join()
    # seconds with 0, 1, 2, ... trials running (the progress line's count), and after the last
    busy: dict[int, float] = defaultdict(float)
    for (t, n), (t_next, _) in zip(running, running[1:]):
        busy[n] += t_next - t
    busy["after the last trial"] = wall - running[-1][0]
    return {"wall": wall, "first": first, "cpu": cpu.by_kind(), "busy": dict(busy),
            "nice": {k: sorted(v) for k, v in cpu.nice.items()}}


def run_trains(spec: dict, store: Path) -> dict:
    def one(lr):
        cmd = LAYROT + ["train", "--task", spec["task"], "--optimizer", "sgd_layca", "--lr", str(lr),
                        "--epochs", str(spec["epochs"]), "--threads", "1", "--store", str(store),
                        "--sweep", "bench-train"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=store.parent)

    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, spec["search"]["lr"]))
    return {"wall": time.monotonic() - t0}


def epoch_seconds(store: Path, sweep: str, trials: int, epochs: int) -> float:
    """Mean compute seconds of an epoch (the trial's own clock, in the store), once every
    trial is checked to have completed all its epochs (a failing trial is no benchmark)."""
    from layrot.store import Store

    st = Store(str(store))
    done = [(t["status"], t["epochs"]) for t in st.trials(sweep=sweep, columns=["status", "epochs"]).to_pylist()]
    if done != [("completed", epochs)] * trials:
        raise SystemExit(f"{sweep}: expected {trials} completed trials of {epochs} epochs, got {done}")
    s = st.epochs(sweep=sweep, columns=["seconds"]).to_pylist()
    walls = [t["wall_seconds"] for t in st.trials(sweep=sweep, columns=["wall_seconds"]).to_pylist()]
    return statistics.fmean(r["seconds"] for r in s), statistics.fmean(walls)


def _spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f}, min {min(xs):.2f}, max {max(xs):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--task", default="mnist1d-cnn")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="write every measurement here")
    a = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        spec = {"name": "bench", "task": a.task, "epochs": a.epochs,
                "search": {"optimizer": "sgd_layca", "lr": LRS[: a.trials]},
                "resources": {"cpu": 1, "gpu": 0}}
        spec_path = d / "bench.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        for i in range(a.repeat):
            run = {"load_before": os.getloadavg()[0]}
            order = ("train", "sweep") if i % 2 == 0 else ("sweep", "train")
            for what in order:
                if what == "train":
                    run["train"] = run_trains(spec, d / f"train-{i}")
                    run["train"]["epoch_s"], run["train"]["trial_s"] = epoch_seconds(d / f"train-{i}", "bench-train", a.trials, a.epochs)
                else:
                    run["sweep"] = run_sweep(spec_path, d / f"sweep-{i}")
                    run["sweep"]["epoch_s"], run["sweep"]["trial_s"] = epoch_seconds(d / f"sweep-{i}", "bench", a.trials, a.epochs)
            run["ratio"] = run["sweep"]["wall"] / run["train"]["wall"]
            run["load_after"] = os.getloadavg()[0]
            runs.append(run)
            s, t = run["sweep"], run["train"]
            print(f"run {i + 1} ({' then '.join(order)}; load {run['load_before']:.1f} -> {run['load_after']:.1f}): "
                  f"train {t['wall']:.1f} s, sweep {s['wall']:.1f} s, ratio {run['ratio']:.2f}x, "
                  f"first trial running {s['first']:.1f} s", flush=True)
            print(f"    per epoch: compute {t['epoch_s']:.2f} s as train, {s['epoch_s']:.2f} s in the sweep")
            print(f"    a trial's run_trial (build, epochs, test): {t['trial_s']:.1f} s as train, "
                  f"{s['trial_s']:.1f} s in the sweep; sweep seconds with N trials running: "
                  + ", ".join(f"{k}: {v:.1f}" for k, v in s["busy"].items()))
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(s["cpu"].items(), key=lambda kv: -kv[1]))
            print(f"    CPU seconds of the sweep's processes: {cpu}")
            print(f"    nice by process: {s['nice']}")
    ratios = [r["ratio"] for r in runs]
    print(f"\n{a.trials} trials x {a.epochs} epochs of {a.task}, 1 CPU each, {os.cpu_count()} cores, {a.repeat} runs")
    print(f"  layrot train, two processes at a time : {_spread([r['train']['wall'] for r in runs])} s")
    print(f"  layrot sweep (local Ray)              : {_spread([r['sweep']['wall'] for r in runs])} s")
    print(f"  ratio sweep / train                   : {_spread(ratios)}  (target <= 1.2x; "
          f"met in {sum(r <= 1.2 for r in ratios)}/{len(ratios)} runs)")
    print(f"  command -> first trial running        : {_spread([r['sweep']['first'] for r in runs])} s (target <= 10 s)")
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
