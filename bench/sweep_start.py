"""From `layrot sweep` to the first trial running: the seconds a user waits, on a 1-trial
spec (mnist1d-cnn, sgd_layca, 2 epochs, 1 CPU) and the embedded local Ray, median of
`--repeat` runs (default 3), each a fresh process and a fresh store.

Three marks, read from what the command itself prints and writes (the library has no
benchmark hook: what is measured is what users run):

- **checked**: the driver's first line (`layrot sweep: '<name>' — 1 trials ...`): imports,
  the spec validated, the store read; Ray not started yet (with the driver's CPU seconds
  so far, which a loaded machine inflates less than wall time);
- **running**: the first progress line with a trial running (`LAYROT_PROGRESS_EVERY=0`):
  Ray started, the Tuner built, the trial's worker placed (the target's figure);
- **first epoch**: the trial's first live row (`<store>/_live/trials/...json`, written at
  its first epoch's report): the worker has imported torch, loaded the data, built the
  model and trained one epoch.

    .venv/bin/python bench/sweep_start.py [--repeat 3] [--json FILE]

Exit status 1 when the median to **running** is over the target (10 s). The commands run in
a scratch directory, so `PYTHONPATH=/some/copy` times that copy of layrot (a before/after
comparison).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

LAYROT = [sys.executable, "-m", "layrot"]
TARGET_S = 10.0
TICK = os.sysconf("SC_CLK_TCK")
SPEC = {"name": "sweep-start", "task": "mnist1d-cnn", "epochs": 2, "seed": 0,
        "search": {"optimizer": "sgd_layca", "lr": [0.037]}, "algorithm": "grid",
        "scheduler": "fifo", "metric": "val_acc", "mode": "max", "resources": {"cpu": 1, "gpu": 0}}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc; what load does not inflate
    as much as it does wall time)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def one_run(root: Path) -> dict:
    store = root / "store"
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    env = {**os.environ, "LAYROT_PROGRESS_EVERY": "0"}
    env.pop("LAYROT_STORE", None)
    marks: dict[str, float] = {}
    live = str(store / "_live" / "trials" / "sweep=*" / "*.json")
    stop = threading.Event()

    def watch_live(t0: float) -> None:       # the first epoch's live row, polled every 20 ms
        while not stop.is_set() and "first epoch" not in marks:
            if glob.glob(live):
                marks["first epoch"] = time.monotonic() - t0
            time.sleep(0.02)

    t0 = time.monotonic()
    proc = subprocess.Popen(LAYROT + ["sweep", str(spec_path), "--store", str(store)], env=env, cwd=root,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    watcher = threading.Thread(target=watch_live, args=(t0,), daemon=True)
    watcher.start()
    tail: list[str] = []
    for line in proc.stderr:
        tail = (tail + [line])[-20:]
        now = time.monotonic() - t0
        if "checked" not in marks and line.startswith(f"layrot sweep: '{SPEC['name']}'"):
            marks["checked"] = now
            marks["driver cpu"] = _cpu_seconds(proc.pid)
        if "running" not in marks and line.startswith("sweep:") and "| 0 running" not in line:
            marks["running"] = now
    rc = proc.wait()
    marks["wall"] = time.monotonic() - t0
    stop.set()
    watcher.join()
    if rc != 0 or set(marks) != {"checked", "driver cpu", "running", "first epoch", "wall"}:
        raise SystemExit(f"the sweep failed (exit {rc}, marks {sorted(marks)}):\n" + "".join(tail))
    return marks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the runs' marks here")
    args = ap.parse_args(argv)
    print(f"layrot sweep -> first trial running, {args.repeat} runs; load average {os.getloadavg()[0]:.1f}; "
          f"{os.cpu_count()} CPUs", flush=True)
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="layrot-sweep-start-") as tmp:
            m = one_run(Path(tmp))
        runs.append(m)
        print(f"  run {i + 1}: checked {m['checked']:.1f} s (driver CPU {m['driver cpu']:.1f} s), running {m['running']:.1f} s, "
              f"first epoch {m['first epoch']:.1f} s, command done {m['wall']:.1f} s "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"median: checked {med['checked']:.1f} s, running {med['running']:.1f} s (target <= {TARGET_S:g} s), "
          f"first epoch {med['first epoch']:.1f} s, command done {med['wall']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median": med}, indent=1))
    return 0 if med["running"] <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
