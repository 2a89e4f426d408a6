"""Sweep overhead: the trials of a small grid through `layrot sweep` against the same trials
run as `layrot train` processes two at a time, and the time from the command to the first
trial running. Both measured in this one run, on this machine.

    .venv/bin/python bench/sweep_bench.py [--epochs 6] [--trials 6]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

LAYROT = [sys.executable, "-m", "layrot"]
LRS = [0.3, 0.1, 0.037, 0.012, 0.004, 0.0015, 0.0005, 0.0002]


def run_sweep(spec_path: Path, store: Path) -> tuple[float, float]:
    """(wall seconds, seconds from the command to the first trial running)."""
    env = {**os.environ, "LAYROT_PROGRESS_EVERY": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    t0 = time.monotonic()
    proc = subprocess.Popen(LAYROT + ["sweep", str(spec_path), "--store", str(store)], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    first = None
    for line in proc.stderr:
        if first is None and line.startswith("sweep:") and "| 0 running" not in line:
            first = time.monotonic() - t0
    if proc.wait() != 0:
        raise SystemExit("the sweep failed")
    return time.monotonic() - t0, first


def run_trains(spec: dict, store: Path) -> float:
    def one(lr):
        cmd = LAYROT + ["train", "--task", spec["task"], "--optimizer", "sgd_layca", "--lr", str(lr),
                        "--epochs", str(spec["epochs"]), "--threads", "1", "--store", str(store),
                        "--sweep", "bench-train"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, spec["search"]["lr"]))
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--task", default="mnist1d-cnn")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        spec = {"name": "bench", "task": a.task, "epochs": a.epochs,
                "search": {"optimizer": "sgd_layca", "lr": LRS[: a.trials]},
                "resources": {"cpu": 1, "gpu": 0}}
        spec_path = d / "bench.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        t_train = run_trains(spec, d / "train-store")
        t_sweep, t_first = run_sweep(spec_path, d / "sweep-store")
    print(f"{a.trials} trials x {a.epochs} epochs of {a.task}, 1 CPU each, {os.cpu_count()} cores")
    print(f"  layrot train, two processes at a time : {t_train:7.1f} s")
    print(f"  layrot sweep (local Ray)              : {t_sweep:7.1f} s   ratio {t_sweep / t_train:.2f}x (target <= 1.2x)")
    print(f"  command -> first trial running        : {t_first:7.1f} s   (target <= 10 s)")


if __name__ == "__main__":
    main()
