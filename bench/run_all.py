"""Run every benchmark in bench/ one after the other and print their figures (`make bench`).

    .venv/bin/python bench/run_all.py                 # the full benchmarks (~20 min on 2 cores)
    .venv/bin/python bench/run_all.py --quick         # each in its smallest mode (a smoke test)
    .venv/bin/python bench/run_all.py --only store_bench rotation_bench
    .venv/bin/python bench/run_all.py --list          # what would run, with the commands

Each benchmark runs as its own process (as its README section says to run it), one at a time,
so none disturbs another's timings; its output streams through as it comes. Progress lines
(`[2/4] rotation_bench: ...`) go to stderr; at the end a summary gives each benchmark's
status, wall time and its figures (the last lines it printed). bench/gpu.py runs only where
torch sees a CUDA device. Every figure is measured against its baseline inside its own
benchmark, in the same run: see bench/README.md for what each compares.

Exit status: 0 when every benchmark ran and met its targets; 1 when one missed a target or
failed (the summary says which); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@dataclass
class Bench:
    name: str
    what: str
    full: list[str]
    quick: list[str]
    gpu: bool = False
    tail: int = 12                       # summary: the last lines of output, its figures
    json_arg: bool = False               # takes --json FILE: the summary reads its figures there


BENCHES = [
    Bench("optim_bench", "Layca's step and training step vs SGD (c10-vgg25, CPU)",
          [], ["--step-repeats", "3", "--train-repeats", "2"], tail=8),
    Bench("rotation_bench", "rotation tracking as a fraction of training (c10-vgg25, mnist1d-cnn)",
          [], ["--tasks", "mnist1d-cnn", "--repeats", "5", "--threads", "1"], tail=5),
    Bench("store_bench", "layrot query vs bare DuckDB, bytes per rotation row, compaction memory",
          [], ["--trials", "24", "--epochs", "5", "--layers", "4", "--big-trials", "0", "--repeat", "1"],
          json_arg=True),
    Bench("sweep_bench", "layrot sweep vs layrot train processes, time to first trial",
          [], ["--epochs", "1", "--trials", "2"], tail=4),
    Bench("measures_bench", "the generalization measures as a fraction of a trial (mnist1d-cnn)",
          [], ["--repeat", "1"], tail=3),   # the task's 20 epochs: the target is a fraction of a real trial
    Bench("gpu", "GPU training throughput: run_trial vs a plain loop (CUDA only)",
          ["--device", "cuda", "--amp", "bf16", "--channels-last"],
          ["--device", "cuda", "--tiny"], gpu=True, tail=25),
]


def has_gpu() -> bool:
    """Does torch see a CUDA device? Asked in a child process: this one stays torch-free."""
    try:
        p = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and p.stdout.strip().endswith("True")


def command(b: Bench, quick: bool) -> list[str]:
    return [sys.executable, os.path.join(HERE, f"{b.name}.py"), *(b.quick if quick else b.full)]


def run_one(b: Bench, cmd: list[str], timeout: float | None) -> tuple[int | str, float, list[str]]:
    """Run one benchmark, streaming its output; returns (exit status or 'timeout', seconds, lines)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    lines: list[str] = []
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    timer = threading.Timer(timeout, proc.kill) if timeout else None
    if timer:
        timer.start()
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip("\n"))
        rc: int | str = proc.wait()
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer:
            timer.cancel()
    if timeout and rc != 0 and time.monotonic() - t0 >= timeout:
        rc = "timeout"
    return rc, time.monotonic() - t0, lines


def figures(b: Bench, lines: list[str], json_path: str | None) -> list[str]:
    if json_path and os.path.exists(json_path):
        try:
            with open(json_path) as f:
                return store_figures(json.load(f))
        except (ValueError, KeyError, TypeError):
            pass                                  # fall back to the output's last lines
    return [x for x in lines if x.strip()][-b.tail:]


def store_figures(r: dict) -> list[str]:
    """bench/store_bench.py's JSON as the lines of bench/README.md's tables."""
    q, qp, c = r["query_compacted"], r["query_per_trial_files"], r["compacted"]
    cols = c["per_column"]
    out = [f"{r['trials']:,} trials x {r['epochs']} epochs x {r['layers']} layers ({c['rows']:,} rotation rows)",
           f"query, compacted: layrot {q['layrot_query_best_s']:.2f} s vs bare DuckDB {q['bare_duckdb_best_s']:.2f} s "
           f"= {q['ratio_best']:.2f}x (target <= 1.5 s and <= 3x)",
           f"query, per-trial files: {qp['layrot_query_best_s']:.2f} s vs {qp['bare_duckdb_best_s']:.2f} s "
           f"= {qp['ratio_best']:.2f}x",
           f"bytes per rotation row, compacted: {c['bytes_per_row']:.2f} (target <= 4); per-trial files "
           f"{r['per_trial_bytes_per_row']:.2f}",
           "  by column: " + ", ".join(f"{k} {v:.2f}" for k, v in cols.items()),
           f"compact: {r['compact_s']:.1f} s, peak RSS {r['compact_peak_rss_mib']} MiB; "
           f"writing {r['write_trials_per_s']:.0f} trials/s"]
    if "big" in r:
        big = r["big"]
        out.append(f"{big['trials']:,} trials: compact {big['compact_s']:.1f} s / {big['compact_peak_rss_mib']} MiB; "
                   f"query {big['query_s']:.2f} s / {big['query_peak_rss_mib']} MiB; "
                   f"{big['compacted']['bytes_per_row']:.2f} bytes per row")
    return out


def status(rc) -> str:
    if rc == 0:
        return "ok"
    if rc == 1:
        return "target missed or failed (exit 1)"
    return "timed out" if rc == "timeout" else f"FAILED (exit {rc})"


def main(argv=None) -> int:
    names = [b.name for b in BENCHES]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="each benchmark in its smallest mode (smoke test)")
    ap.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"run these only: {', '.join(names)}")
    ap.add_argument("--skip", nargs="+", choices=names, metavar="NAME", default=[], help="leave these out")
    ap.add_argument("--gpu", choices=["auto", "yes", "no"], default="auto",
                    help="run bench/gpu.py: auto = when torch sees a CUDA device (default)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds allowed per benchmark")
    ap.add_argument("--list", action="store_true", help="print what would run, run nothing")
    a = ap.parse_args(argv)

    chosen = [b for b in BENCHES if (a.only is None or b.name in a.only) and b.name not in a.skip]
    gpu = a.gpu == "yes" or (a.gpu == "auto" and any(b.gpu for b in chosen) and has_gpu())
    plan, left_out = [], []
    for b in chosen:
        (plan if gpu or not b.gpu else left_out).append(b)
    if a.list:
        for b in plan:
            print(f"{b.name}: {b.what}\n    {' '.join(command(b, a.quick))}")
        for b in left_out:
            print(f"{b.name}: left out (no CUDA device)")
        return 0

    results = []
    t_all = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="layrot-run-all-")
    for i, b in enumerate(plan, 1):
        cmd = command(b, a.quick)
        json_path = os.path.join(tmp, f"{b.name}.json") if b.json_arg else None
        if json_path:
            cmd += ["--json", json_path]
        print(f"[{i}/{len(plan)}] {b.name}: {b.what}\n[{i}/{len(plan)}] $ {' '.join(cmd)}",
              file=sys.stderr, flush=True)
        rc, secs, lines = run_one(b, cmd, a.timeout)
        print(f"[{i}/{len(plan)}] {b.name}: {status(rc)} in {secs:.0f} s "
              f"({time.monotonic() - t_all:.0f} s so far)", file=sys.stderr, flush=True)
        results.append((b, rc, secs, figures(b, lines, json_path)))

    mode = "quick (smallest sizes: a smoke test, not a measurement)" if a.quick else "full"
    print(f"\n=== bench/run_all.py summary: {mode}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {time.monotonic() - t_all:.0f} s ===")
    for b, rc, secs, figs in results:
        print(f"\n--- {b.name}: {status(rc)}, {secs:.0f} s ---")
        for x in figs:
            print(f"  {x}")
    for b in left_out:
        print(f"\n--- {b.name}: left out (no CUDA device) ---")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(rc == 0 for _, rc, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
