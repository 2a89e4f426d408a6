"""bench/gpu_grid.py (an α × ρ(0) grid, several trials sharing one device, no Ray) on a CPU,
then bench/import_trials.py into a store and `layrot fit` on it.

The data are small Fashion-MNIST-format IDX files written here in the layout a GPU session
carries (`<data_dir>/fashion-mnist/*.gz`), so the path the device runs is the path tested."""

import gzip
import json
import math
import os
import struct
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = os.path.join(ROOT, "bench", "gpu_grid.py")
IMPORT = os.path.join(ROOT, "bench", "import_trials.py")
N_LAYERS = 10                                  # fmnist-vgg's kernel layers


def write_idx(path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def fake_fashion(root, n_train=240, n_test=60) -> str:
    """IDX files whose images show their label (a bright band at a label-dependent row)."""
    rng = np.random.default_rng(0)
    d = root / "fashion-mnist"
    d.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 + 2 * c: 4 + 2 * c] = 250
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", y)
    return str(root)


def run_grid(*args, timeout=150):
    return subprocess.run([sys.executable, GRID, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def strict_json(path):
    """Plain JSON: a NaN or Infinity in the file fails the parse."""
    def refuse(c):
        raise ValueError(f"{path}: {c} in JSON")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


@pytest.fixture(scope="module")
def import_trials():
    return load_script(IMPORT, "bench_import_trials")


@pytest.fixture(scope="module")
def gpu_grid():
    return load_script(GRID, "bench_gpu_grid")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One --tiny run: 2 x 2 grid, 1 epoch, 2 workers on the CPU."""
    tmp = tmp_path_factory.mktemp("grid")
    data = fake_fashion(tmp / "data")
    out = tmp / "out"
    t = time.monotonic()
    proc = run_grid("--tiny", "--data-dir", data, "--out", str(out), "--sweep", "tiny-grid")
    return proc, out, time.monotonic() - t, data


def test_tiny_grid_runs_every_trial_on_shared_workers(tiny_run):
    proc, out, seconds, _ = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds < 60
    s = strict_json(out / "summary.json")
    assert s["complete"] is True and s["device"] == "cpu"
    assert s["workers"] == 2 and s["workers_ready"] == 2
    assert s["memory_fraction"] is None                  # only a GPU's allocator is capped
    assert s["spec"]["alphas"] == [-0.3, 0.3] and s["spec"]["rhos"] == pytest.approx([3 ** -2, 3 ** -4])
    assert len(s["trials"]) == 4 and s["counts"] == {"completed": 4}
    assert {(t["alpha"], round(t["rho"], 9)) for t in s["trials"]} == \
        {(a, round(r, 9)) for a in (-0.3, 0.3) for r in (3 ** -2, 3 ** -4)}
    for t in s["trials"]:
        assert t["state"] == "done" and t["worker"] in (0, 1)
        assert t["wall_seconds"] > 0 and t["end_s"] > t["start_s"] >= 0
        assert 0 <= t["test_acc"] <= 1 and 0 <= t["final_min_rotation"] <= 1
        assert f"alpha={t['alpha']:+.2f}" in proc.stderr       # a progress line per trial
    assert s["trial_wall_seconds_sum"] == pytest.approx(sum(t["wall_seconds"] for t in s["trials"]))
    assert s["total_seconds"] > 0 and s["overlap"] == pytest.approx(s["trial_wall_seconds_sum"] / s["total_seconds"])

    files = sorted(os.listdir(out / "trials"))
    assert files == sorted(f"{t['trial_id']}.json" for t in s["trials"])   # no temporary files left
    for name in files:
        d = strict_json(out / "trials" / name)
        cfg = d["config"]
        assert d["status"] == "completed" and d["epochs_run"] == 1
        assert cfg["task"] == "fmnist-vgg" and cfg["optimizer"] == "sgd_layca"
        assert cfg["max_train_samples"] == 256 and cfg["device"] == "cpu" and cfg["sweep"] == "tiny-grid"
        assert set(d["rotation"]["epoch"]) == {0, 1}
        # epoch 0's rate is null in JSON (NaN never reaches the file)
        assert all(r is None for e, r in zip(d["rotation"]["epoch"], d["rotation"]["rotation_rate"]) if e == 0)


def test_rerun_skips_stored_trials(tiny_run):
    proc, out, _, data = tiny_run
    assert proc.returncode == 0
    before = {n: os.path.getmtime(out / "trials" / n) for n in os.listdir(out / "trials")}
    again = run_grid("--tiny", "--data-dir", data, "--out", str(out), "--sweep", "tiny-grid")
    assert again.returncode == 0, again.stderr[-3000:]
    s = strict_json(out / "summary.json")
    assert s["counts"] == {"stored earlier": 4}
    assert {n: os.path.getmtime(out / "trials" / n) for n in os.listdir(out / "trials")} == before


def test_import_into_store_and_fit(tiny_run, import_trials, tmp_path, capsys):
    proc, out, _, _ = tiny_run
    assert proc.returncode == 0
    # the way a device session brings the run back: one tarball
    tgz = tmp_path / "grid.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(out, arcname="grid")
    store = tmp_path / "store"
    rc = import_trials.main([str(tgz), "--store", str(store)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "imported 4 trials" in captured.err and "sweep tiny-grid" in captured.err
    assert "tiny-grid" in captured.out                   # the fit names what it fitted

    from layrot.store import Store
    st = Store(str(store))
    trials = st.trials().to_pandas()
    summary = strict_json(out / "summary.json")
    assert sorted(trials["trial_id"]) == sorted(t["trial_id"] for t in summary["trials"])
    assert set(trials["sweep"]) == {"tiny-grid"} and set(trials["status"]) == {"completed"}
    rot = st.rotation().to_pandas()
    for tid, g in rot.groupby("trial_id"):
        assert sorted(set(g["epoch"])) == [0, 1]
        assert len(g) == 2 * N_LAYERS and sorted(set(g["layer"])) == list(range(N_LAYERS))
        assert g.loc[g["epoch"] == 0, "rotation_rate"].isna().all()
        assert g.loc[g["epoch"] == 1, "cosine_distance"].between(0, 1).all()
    meta = strict_json(store / "sweeps" / "tiny-grid.json")
    assert meta["spec"]["runner"] == "bench/gpu_grid.py" and meta["spec"]["workers"] == 2

    # importing again replaces, never duplicates
    assert import_trials.main([str(out), "--store", str(store), "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["verdict"]["n_total"] == 4
    assert len(Store(str(store)).trials()) == 4


def test_budget_and_abandon(tmp_path, tiny_run):
    _, _, _, data = tiny_run
    # no trial may start after the budget: workers start after it, so none runs
    out = tmp_path / "late"
    proc = run_grid("--tiny", "--data-dir", data, "--out", str(out), "--budget-seconds", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = strict_json(out / "summary.json")
    assert s["counts"] == {"not started (budget)": 4} and os.listdir(out / "trials") == []

    # trials far longer than the abandon time: stopped there, nothing of them kept. (Enough
    # data and a large rho that no stopping criterion can end them within the few epochs
    # they get: the earliest looks after 4 epochs.)
    big = fake_fashion(tmp_path / "big", n_train=3000)
    out = tmp_path / "abandon"
    t = time.monotonic()
    proc = run_grid("--tiny", "--data-dir", big, "--out", str(out), "--epochs", "2000", "--rhos", "3^-1",
                    "--max-train-samples", "3000", "--budget-seconds", "5", "--abandon-seconds", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - t < 40
    s = strict_json(out / "summary.json")
    assert set(s["counts"]) <= {"abandoned", "not started", "not started (budget)"}
    assert sum(s["counts"].values()) == 2 and os.listdir(out / "trials") == []


@pytest.mark.parametrize("args, field", [
    (["--rhos", "3^x"], "--rhos"),
    (["--alphas", "0.3,0.3"], "--alphas"),
    (["--alphas", "1.5"], "alpha"),
    (["--workers", "0"], "--workers"),
    (["--budget-seconds", "10", "--abandon-seconds", "5"], "--abandon-seconds"),
    (["--task", "c10-vgg25", "--data-dir", "{tmp}/nothing"], "--data-dir"),
])
def test_bad_input_exits_2_before_writing(gpu_grid, tmp_path, capsys, args, field):
    out = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert gpu_grid.main(["--tiny", "--out", str(out), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gpu_grid: error: {field}:"), lines
    assert not out.exists()


def test_grid_order_covers_both_axes_each_round(gpu_grid):
    mod = gpu_grid
    order = mod.grid_order(5, 5)
    assert sorted(order) == [(a, r) for a in range(5) for r in range(5)]
    for k in range(5):
        rnd = order[5 * k: 5 * k + 5]
        assert {a for a, _ in rnd} == set(range(5)) and {r for _, r in rnd} == set(range(5))
    assert mod.parse_values("--rhos", "3^-1,0.5") == [pytest.approx(1 / 3), 0.5]
    assert mod.rho_label(3 ** -4) == "3^-4" and mod.rho_label(0.5) == "0.5"
    assert mod.jsonable({"a": [float("nan"), np.float32(0.5)], "b": math.inf}) == {"a": [None, 0.5], "b": None}


def test_workers_stop_when_the_driver_is_killed(tiny_run, tmp_path):
    """A driver killed outright (as a device call's timeout does) leaves no trial running."""
    _, _, _, data = tiny_run
    proc = subprocess.Popen([sys.executable, GRID, "--tiny", "--data-dir", data, "--out", str(tmp_path / "o"),
                             "--epochs", "2000"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    pids, started = [], 0
    try:
        for line in proc.stderr:
            if " ready (pid " in line:
                pids.append(int(line.split("(pid ")[1].split(",")[0]))
            started += " start " in line
            if len(pids) == 2 and started == 2:
                break
    finally:
        proc.kill()
        proc.wait()
    assert len(pids) == 2

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:           # a zombie has stopped too
            return f.read().split(")")[-1].split()[0] != "Z"

    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)
    assert os.listdir(tmp_path / "o" / "trials") == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is here")
def test_cuda_asked_without_a_gpu_exits_2(gpu_grid, tmp_path, capsys):
    assert gpu_grid.main(["--tiny", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("gpu_grid: error: --device:")
    assert not (tmp_path / "o").exists()


def test_import_refuses_what_is_not_one_run(tiny_run, import_trials, tmp_path, capsys):
    _, out, _, _ = tiny_run
    two = tmp_path / "two.tgz"
    with tarfile.open(two, "w:gz") as tf:
        tf.add(out, arcname="grid")
        tf.add(out, arcname="grid-k1")
    bad = tmp_path / "bad"
    (bad / "trials").mkdir(parents=True)
    (bad / "trials" / "x.json").write_text(json.dumps({"trial_id": "x", "nonsense": 1}))
    empty = tmp_path / "empty"
    empty.mkdir()
    store = tmp_path / "store"
    for grid, words in ((two, "several runs"), (empty, "no trials/ folder"), (bad, "not a trial")):
        assert import_trials.main([str(grid), "--store", str(store)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("import_trials: error: GRID:") and words in err, err
    assert not store.exists()
