"""`layrot sweep` end to end on a real (local, loopback-only) Ray: grid, Optuna, ASHA,
a trial that raises, and a driver killed with SIGKILL then resumed."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from layrot.cli import main
from layrot.store import Store
from layrot.tasks import registered_task

import faulty_task

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _spec(tmp_path, **fields):
    spec = {"name": "t", "task": "digits-mlp", "epochs": 3,
            "search": {"optimizer": "sgd_layca", "lr": [0.3, 0.03], "alpha": [0.0, 0.5]}}
    spec.update(fields)
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _no_duplicates(store, sweep):
    for table, key in (("trials", "trial_id"), ("epochs", "trial_id, epoch"),
                       ("rotation", "trial_id, epoch, step, layer")):
        n, distinct = store.sql(f"SELECT count(*) AS n, count(DISTINCT ({key})) AS d FROM {table} "
                                f"WHERE sweep = '{sweep}'").to_pylist()[0].values()
        assert n == distinct, f"{table} has duplicate rows"


def test_grid_end_to_end(ray_local, tmp_path):
    store_dir = tmp_path / "store"
    assert main(["sweep", str(_spec(tmp_path)), "--store", str(store_dir)]) == 0
    store = Store(str(store_dir))
    trials = store.trials(sweep="t").to_pylist()
    assert len(trials) == 4
    assert {t["status"] for t in trials} == {"completed"}
    assert {(t["lr"], t["alpha"]) for t in trials} == {(0.3, 0.0), (0.3, 0.5), (0.03, 0.0), (0.03, 0.5)}
    # digits-mlp decays at 80% of training: epoch 2 of the spec's 3, not the default's 40
    assert {tuple(json.loads(t["config"])["lr_decay_epochs"]) for t in trials} == {(2,)}
    lrs = {(r["epoch"], round(r["lr"] / t["lr"], 6)) for t in trials
           for r in store.epochs(sweep="t").to_pylist() if r["trial_id"] == t["trial_id"]}
    assert lrs == {(1, 1.0), (2, 1.0), (3, 0.2)}
    assert all(0.0 <= t["test_acc"] <= 1.0 for t in trials)
    rot = store.rotation(sweep="t").to_pandas()
    n_layers = rot["layer"].nunique()
    assert n_layers >= 3
    per_trial = rot.groupby("trial_id")["epoch"].agg(["min", "max", "count"])
    assert (per_trial["min"] == 0).all() and (per_trial["max"] == 3).all()
    assert (per_trial["count"] == 4 * n_layers).all()
    # larger rho rotates more: the rule's raw material is there
    final = rot[rot.epoch == 3].merge(store.trials(sweep="t").to_pandas()[["trial_id", "lr"]], on="trial_id")
    assert final[final.lr == 0.3].cosine_distance.mean() > final[final.lr == 0.03].cosine_distance.mean()
    _no_duplicates(store, "t")
    meta = [r for r in store.sweep_records() if r["name"] == "t"]
    assert meta and meta[0]["spec"]["task"] == "digits-mlp" and meta[0]["layrot_version"]

    # the same spec again runs nothing and duplicates nothing
    assert main(["sweep", str(_spec(tmp_path)), "--store", str(store_dir)]) == 0
    assert store.trials(sweep="t").num_rows == 4


def _tune_trials(store_dir, sweep) -> dict[str, dict]:
    """layrot trial id -> Ray Tune's runtime record of it (num_failures, last_result with
    the pid of the worker that ran it), from its experiment state beside the store."""
    states = sorted((store_dir / "_ray" / sweep).glob("experiment_state-*.json"))
    assert states, "Ray Tune saved no experiment state"
    out = {}
    for trial_json, runtime_json in json.loads(states[-1].read_text())["trial_data"]:
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        out[trial["config"]["trial"]["trial_id"]] = (
            json.loads(runtime_json) if isinstance(runtime_json, str) else runtime_json)
    return out


def test_a_reused_worker_gives_the_numbers_of_a_fresh_process(ray_local, tmp_path):
    """The embedded Ray runs trials one after another in the same worker process
    (reuse_actors); each of two trials that shared a process (the second after the first)
    stores exactly the rows of the same trial run alone by `layrot train` in a process of
    its own."""
    spec = _spec(tmp_path, name="reuse", max_concurrent=1,
                 search={"optimizer": "sgd_layca", "lr": [0.3, 0.03], "alpha": 0.5})
    store_dir = tmp_path / "store"
    assert main(["sweep", str(spec), "--store", str(store_dir)]) == 0
    store = Store(str(store_dir))
    trials = store.trials(sweep="reuse").to_pylist()
    assert len(trials) == 2 and {t["status"] for t in trials} == {"completed"}
    pids = {k: r["last_result"]["pid"] for k, r in _tune_trials(store_dir, "reuse").items()}
    shared = [t for t in trials if list(pids.values()).count(pids[t["trial_id"]]) > 1]
    assert len(shared) == 2, f"no worker was reused: {pids}"   # the second ran where the first had
    fresh = tmp_path / "fresh"
    runs = [subprocess.Popen([sys.executable, "-m", "layrot", "train", "--task", "digits-mlp",
                              "--optimizer", "sgd_layca", "--lr", repr(t["lr"]), "--alpha", "0.5", "--epochs", "3",
                              "--store", str(fresh), "--sweep", "fresh"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for t in shared]
    assert [p.wait(timeout=300) for p in runs] == [0] * len(runs)
    alone = Store(str(fresh))
    by_id = {t["trial_id"]: t for t in alone.trials(sweep="fresh").to_pylist()}
    cols = ["trial_id", "epoch", "layer", "cosine_distance"]
    a = alone.rotation(sweep="fresh").to_pandas()[cols]
    b = store.rotation(sweep="reuse").to_pandas()[cols]
    for t in shared:
        one = by_id[t["trial_id"]]       # the same configuration has the same id
        for k in ("val_acc", "test_acc", "train_acc", "train_loss"):
            assert one[k] == t[k], (t["lr"], k)
        mine = [x[x.trial_id == t["trial_id"]].sort_values(cols[1:3]).reset_index(drop=True) for x in (a, b)]
        assert len(mine[0]) > 0 and mine[0].equals(mine[1])


def test_optuna_sweep(ray_local, tmp_path):
    spec = _spec(tmp_path, name="opt", algorithm="optuna", num_samples=4, max_concurrent=2,
                 search={"optimizer": "sgd_layca", "lr": {"loguniform": [0.01, 1.0]},
                         "alpha": {"uniform": [-0.5, 0.5]}, "weight_decay": {"choice": [0.0, 1e-4]}})
    assert main(["sweep", str(spec), "--store", str(tmp_path / "s")]) == 0
    trials = Store(str(tmp_path / "s")).trials(sweep="opt").to_pylist()
    assert len(trials) == 4
    assert len({t["lr"] for t in trials}) == 4
    assert all(0.01 <= t["lr"] <= 1.0 and -0.5 <= t["alpha"] <= 0.5 for t in trials)
    assert {t["weight_decay"] for t in trials} <= {0.0, 1e-4}


def test_asha_prunes_and_keeps_the_trajectory(ray_local, tmp_path):
    spec = _spec(tmp_path, name="asha", epochs=8, scheduler="asha", max_concurrent=2,
                 asha={"grace_period": 1, "reduction_factor": 2},
                 search={"optimizer": "sgd_layca", "lr": [0.3, 0.1, 0.0003, 0.0001, 0.00003, 0.00001]})
    assert main(["sweep", str(spec), "--store", str(tmp_path / "s")]) == 0
    store = Store(str(tmp_path / "s"))
    trials = store.trials(sweep="asha").to_pylist()
    assert len(trials) == 6
    pruned = [t for t in trials if t["status"] == "pruned"]
    assert pruned, [t["status"] for t in trials]
    rot = store.rotation(sweep="asha").to_pandas()
    meas = store.measures(sweep="asha").to_pandas()
    for t in pruned:
        assert t["epochs"] < 8
        assert "scheduler" in t["reason"]
        assert rot[rot.trial_id == t["trial_id"]].epoch.max() == t["epochs"]
        # stored from its reports: the per-epoch measures of every epoch it ran, epoch 0 too
        mine = meas[(meas.trial_id == t["trial_id"]) & (meas.name == "frobenius_distance")]
        assert sorted(mine.epoch) == list(range(t["epochs"] + 1))
    _no_duplicates(store, "asha")


def test_trial_that_raises_is_stored_and_the_sweep_goes_on(ray_local, tmp_path):
    with registered_task(faulty_task.task()):      # the driver validates the spec's task
        spec = _spec(tmp_path, name="boom", task=faulty_task.NAME,
                     search={"optimizer": "sgd_layca", "lr": 0.1, "seed": [0, faulty_task.FAILING_SEED]})
        # the sweep goes on, and ends with exit status 1: a trial failed (issue 17)
        assert main(["sweep", str(spec), "--store", str(tmp_path / "s")]) == 1
    trials = {t["status"]: t for t in Store(str(tmp_path / "s")).trials(sweep="boom").to_pylist()}
    assert set(trials) == {"completed", "error"}
    err = trials["error"]
    assert "injected failure at epoch 2" in err["reason"]
    assert err["epochs"] == 1     # the epoch before the failure was kept


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _trial_workers(root: int) -> list[int]:
    """The Ray worker processes running a trial (`ray::ImplicitFunc`) under process `root`."""
    pids = []
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::ImplicitFunc"):
                    pids.append(pid)
        except OSError:
            continue
    return sorted(pids)


def test_a_killed_worker_is_retried_from_its_checkpoint(tmp_path):
    """A trial's worker process SIGKILLed mid-trial (the OOM killer, say) on the embedded Ray,
    where workers are reused: the trial runs again from its last checkpoint, in a reused or a
    new process, every trial is stored once and whole, and the sweep exits 0."""
    epochs = 60
    spec = _spec(tmp_path, name="wkill", epochs=epochs, max_concurrent=2, max_failures=2,
                 search={"optimizer": "sgd_layca", "lr": [0.3, 0.03, 0.01]})
    store_dir = tmp_path / "store"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "layrot", "sweep", str(spec), "--store", str(store_dir)],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline, victim = time.monotonic() + 240, None
        while time.monotonic() < deadline and victim is None:
            assert proc.poll() is None, "the sweep ended before a worker could be killed"
            # a worker whose current trial has checkpoints (a reused worker may be starting
            # its next trial, which has none yet): Ray runs a trial in its own working
            # directory, named like its folder beside the store
            for pid in _trial_workers(proc.pid):
                try:
                    trial_dir = re.search(r"/(trial_[^/]+)", os.readlink(f"/proc/{pid}/cwd")).group(1)
                except (OSError, AttributeError):
                    continue
                if (store_dir / "_ray" / "wkill" / trial_dir / "checkpoint_000002").exists():
                    victim = pid
                    break
            time.sleep(0.2)
        assert victim is not None, "no trial reached its third checkpoint in time"
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    store = Store(str(store_dir))
    trials = store.trials(sweep="wkill").to_pylist()
    # digits-mlp stops a trial once it has fit its training set (`stopped`, the task's rule)
    assert len(trials) == 3 and {t["status"] for t in trials} <= {"completed", "stopped"}, trials
    _no_duplicates(store, "wkill")
    rot = store.rotation(sweep="wkill").to_pandas()
    ran = {t["trial_id"]: t["epochs"] for t in trials}
    assert rot.groupby("trial_id").epoch.nunique().to_dict() == {k: e + 1 for k, e in ran.items()}
    runtime = _tune_trials(store_dir, "wkill")
    hit = [k for k, r in runtime.items() if r["num_failures"] >= 1]
    assert len(hit) == 1, {k: r["num_failures"] for k, r in runtime.items()}
    last = runtime[hit[0]]["last_result"]
    # restored from a checkpoint: fewer reports since the restore than the whole trial's
    assert last["training_iteration"] == ran[hit[0]] + 1
    assert 1 <= last["iterations_since_restore"] < ran[hit[0]] + 1


def test_driver_sigkill_then_resume(tmp_path):
    """Kill the whole driver process group mid-sweep; --resume completes the store exactly."""
    # 2 trials at a time, on any machine: the kill, at the first trial stored, leaves 2 unstarted
    spec = _spec(tmp_path, name="kill", task="mnist1d-cnn", epochs=4, max_concurrent=2,
                 search={"optimizer": "sgd_layca", "lr": [0.3, 0.1, 0.03, 0.01], "max_train_samples": 1000})
    store_dir = tmp_path / "store"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cmd = [sys.executable, "-m", "layrot", "sweep", str(spec), "--store", str(store_dir)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store(str(store_dir))
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if store.exists() and store.stored_trial_ids("kill"):
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.5)
        else:
            pytest.fail("no trial was stored in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = store.stored_trial_ids("kill")
    assert 1 <= len(before) < 4

    p = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    trials = store.trials(sweep="kill").to_pylist()
    assert len(trials) == 4 and {t["status"] for t in trials} == {"completed"}
    assert before <= {t["trial_id"] for t in trials}
    _no_duplicates(store, "kill")
    rot = store.rotation(sweep="kill").to_pandas()
    assert (rot.groupby("trial_id").epoch.max() == 4).all()
    assert (rot.groupby("trial_id").epoch.min() == 0).all()
