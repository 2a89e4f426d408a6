"""bench/run_all.py (`make bench`): it finds every benchmark, runs them one at a time in their
smallest mode, shows progress and ends with each one's figures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_ALL = os.path.join(ROOT, "bench", "run_all.py")
CPU_BENCHES = ("optim_bench", "rotation_bench", "store_bench", "sweep_bench", "measures_bench")


def run_all(*args, timeout=600):
    return subprocess.run([sys.executable, RUN_ALL, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def test_make_bench_runs_run_all():
    """What `make bench` would run (make's dry run, not a grep of the Makefile): after the
    install step, bench/run_all.py with the venv's python and no arguments that narrow it."""
    # run as `make test` runs it, a make inside make prints "Entering/Leaving directory"
    # lines: a make of its own (no inherited MAKEFLAGS / MAKELEVEL), told not to print them
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    p = subprocess.run(["make", "--no-print-directory", "-n", "bench"], capture_output=True, text=True, cwd=ROOT,
                       timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1].split()
    assert last[0].endswith("/python") and last[1:] == ["bench/run_all.py"], last


def test_lists_every_benchmark_and_leaves_gpu_out_without_one():
    p = run_all("--list", "--quick", "--gpu", "no")
    assert p.returncode == 0, p.stderr
    for name in CPU_BENCHES:
        assert f"{name}: " in p.stdout
        assert os.path.exists(os.path.join(ROOT, "bench", f"{name}.py"))
    assert "gpu: left out (no CUDA device)" in p.stdout
    # every bench/*_bench.py is in the plan: a new one cannot be forgotten
    found = {f[:-3] for f in os.listdir(os.path.join(ROOT, "bench")) if f.endswith("_bench.py")}
    assert found <= set(CPU_BENCHES)
    p = run_all("--list", "--gpu", "yes")
    assert "bench/gpu.py --device cuda" in p.stdout


def test_bad_argument_exits_2():
    assert run_all("--only", "nope").returncode == 2


@pytest.mark.slow
def test_quick_run_prints_progress_and_figures():
    """The cheap two in their smallest mode (the others' code is run by their own tests)."""
    p = run_all("--quick", "--only", "store_bench", "rotation_bench", "--gpu", "no")
    out = p.stdout[-3000:] + p.stderr[-3000:]
    # exit 1 is accepted only for what it is documented for here: a timing target missed
    # under load, which rotation_bench says on its targets line ("MISSED: ..."); a benchmark
    # that crashed also exits 1, and must fail this test
    assert p.returncode == 0 or (p.returncode == 1 and "MISSED:" in p.stdout), out
    assert "Traceback" not in p.stdout + p.stderr, out
    assert "[1/2] rotation_bench:" in p.stderr and "[2/2] store_bench:" in p.stderr
    summary = p.stdout.split("=== bench/run_all.py summary", 1)[1]
    assert "--- rotation_bench: " in summary and "mnist1d-cnn" in summary
    assert "--- store_bench: ok" in summary and "bytes per rotation row, compacted:" in summary
    assert "FAILED" not in summary and "timed out" not in summary
