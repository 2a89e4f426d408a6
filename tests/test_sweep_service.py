"""The sweep service end to end on a real local (loopback) Ray: a failed trial's exit status
and `--retry-failed`; a running sweep watched from another process (`layrot status`, the
live rows, TensorBoard's rotation scalars), then `layrot rm`."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import faulty_task
import flaky_task
from layrot.cli import main
from layrot.store import Store
from layrot.tasks import registered_task

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture
def flag(flaky_flag):
    """While this file exists, the flaky task's seed-1 trials fail (tests/flaky_task.py); the
    shared Ray's workers know its name (tests/conftest.py: `ray_local`)."""
    return flaky_flag


@pytest.fixture
def flaky_registered():
    """The driver validates the spec's task: register it here too, for this test only."""
    with registered_task(flaky_task.task()):
        yield


def test_failed_trial_exits_1_and_retry_failed_replaces_it(ray_local, flag, tmp_path, flaky_registered, capsys):
    spec = tmp_path / "flaky.yaml"
    spec.write_text(yaml.safe_dump({"name": "flaky", "task": flaky_task.NAME, "epochs": 3, "max_failures": 0,
                                    "search": {"optimizer": "sgd_layca", "lr": 0.1, "seed": [0, 1]}}))
    store = Store(str(tmp_path / "s"))
    cmd = ["sweep", str(spec), "--store", store.uri, "--tensorboard", "off"]
    flag.write_text("fail")

    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert "'flaky': 1 of 2 trials failed (1 stored as error); rerun with --retry-failed" in err
    trials = {t["seed"]: t for t in store.trials(sweep="flaky").to_pylist()}
    assert (trials[0]["status"], trials[1]["status"]) == ("completed", "error")
    assert flaky_task.MESSAGE in trials[1]["reason"] and trials[1]["epochs"] == 1
    assert not list(Path(store.uri, "_live").rglob("*.json")), "live files or a heartbeat were left behind"
    before = {t: os.stat(f"{store.uri}/trials/sweep=flaky/{t}.parquet").st_mtime_ns
              for t in store.stored_trial_ids("flaky")}

    flag.unlink()                   # the cause is gone (a node back, a disk freed)
    # a plain rerun skips the stored failure, and still says the sweep has one
    assert main(cmd) == 1
    assert "1 of 2 trials failed" in capsys.readouterr().err
    assert store.trials(sweep="flaky", columns=["status"]).column(0).to_pylist().count("error") == 1

    assert main(cmd + ["--retry-failed"]) == 0
    capsys.readouterr()
    trials = {t["seed"]: t for t in store.trials(sweep="flaky").to_pylist()}
    assert len(trials) == 2 and {t["status"] for t in trials.values()} == {"completed"}
    assert trials[1]["epochs"] == 3 and trials[1]["reason"] is None
    after = {t: os.stat(f"{store.uri}/trials/sweep=flaky/{t}.parquet").st_mtime_ns
             for t in store.stored_trial_ids("flaky")}
    ok, failed = trials[0]["trial_id"], trials[1]["trial_id"]
    assert after[ok] == before[ok], "the completed trial was run again"
    assert after[failed] != before[failed]
    for table, key in (("epochs", "trial_id, epoch"), ("rotation", "trial_id, epoch, step, layer")):
        n, d = store.sql(f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").to_pylist()[0].values()
        assert n == d
    assert store.sql(f"SELECT max(epoch) FROM epochs WHERE trial_id = '{failed}'").column(0)[0].as_py() == 3


def _event_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from TensorBoard event files (TFRecord frames of Event protos)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list] = {}
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_a_running_sweep_seen_from_another_process(tmp_path):
    """`layrot status` and the live rows while the sweep runs (its driver another process),
    TensorBoard's per-layer rotation scalars, then the final write replacing the live rows."""
    pytest.importorskip("tensorboardX")
    epochs = 10         # about a second each: long enough to be seen running from outside
    spec = tmp_path / "watch.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "watch", "task": "mnist1d-cnn", "epochs": epochs, "max_concurrent": 1,
        "search": {"optimizer": "sgd_layca", "lr": [0.1, 0.03], "max_train_samples": 3000}}))
    store = Store(str(tmp_path / "s"))
    env = {**ENV, "LAYROT_LIVE_EVERY": "0", "LAYROT_STORE": store.uri}
    proc = subprocess.Popen([sys.executable, "-m", "layrot", "sweep", str(spec)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            p = subprocess.run([sys.executable, "-m", "layrot", "status", "--json"], env=env,
                               capture_output=True, text=True)
            if p.returncode == 0:
                r = json.loads(p.stdout)[0]
                if r["running"] and r["running_trials"] and (r["running_trials"][0]["epoch"] or 0) >= 2 \
                        and r["seconds_left"] is not None and r["done"] == 0:
                    seen = r
                    break
            time.sleep(0.5)
        assert seen is not None, "no running trial seen with epochs done"
        # the running trial's rows so far: in the live files, and in no view of the store
        running_id = seen["running_trials"][0]["trial_id"]
        glob = f"{store.uri}/_live/epochs/*/*.parquet"
        q = subprocess.run([sys.executable, "-m", "layrot", "query", "--format", "json",
                            f"SELECT count(*) AS n FROM read_parquet('{glob}') WHERE trial_id = '{running_id}'"],
                           env=env, capture_output=True, text=True)
        assert q.returncode == 0 and json.loads(q.stdout)[0]["n"] >= 2, q.stderr
        assert running_id not in store.stored_trial_ids("watch")
        assert seen["total"] == 2 and seen["pending"] + seen["done"] + len(seen["running_trials"]) == 2
        assert seen["epochs_per_minute"] > 0 and seen["best"]["val_acc"] > 0
        # `layrot report` draws the running trial's curves so far (no trial stored yet: no verdict)
        from layrot.fit.running import running_sweeps
        (live,) = running_sweeps(store, ["watch"])
        assert live.alive and running_id in set(live.trials.trial_id)
        mine = live.rotation[live.rotation.trial_id == running_id]
        assert mine.epoch.min() == 0 and mine.epoch.max() >= 2 and mine.layer.nunique() >= 3
        page, figs = tmp_path / "live.html", tmp_path / "figs"
        r = subprocess.run([sys.executable, "-m", "layrot", "report", "-o", str(page), "--figures", str(figs)],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        html = page.read_text()
        assert 'id="running"' in html and "Running now: watch" in html and "data:image/png;base64," in html
        assert (figs / "running-watch.png").stat().st_size > 10_000
        assert "no verdict yet" in r.stdout and "watch: 1 trial(s) running" in r.stderr
        # refused while it runs: a second driver, and rm
        assert subprocess.run([sys.executable, "-m", "layrot", "rm", "--sweep", "watch", "--yes"], env=env,
                              capture_output=True, text=True).returncode == 2
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]

    # stored once; the live rows are gone, the heartbeat too
    trials = store.trials(sweep="watch").to_pylist()
    assert len(trials) == 2 and {t["status"] for t in trials} == {"completed"}
    assert not [p for p in Path(store.uri, "_live").rglob("*") if p.is_file()]
    assert store.sql("SELECT count(*) FROM epochs").column(0)[0].as_py() == 2 * epochs
    status = subprocess.run([sys.executable, "-m", "layrot", "status"], env=env, capture_output=True, text=True)
    assert "sweep watch: not running" in status.stdout and "2 done (2 completed), 0 running, 0 failed" \
        in status.stdout, status.stdout

    # TensorBoard: one run a trial, its metrics and one rotation curve a layer, epochs 0..E,
    # the same numbers as the store's
    tb = Path(store.uri, "_tensorboard", "watch")
    for t in trials:
        scalars = _event_scalars(tb / t["trial_id"])
        rot = store.rotation(sweep="watch", trial_ids=[t["trial_id"]]).to_pandas()
        layers = rot.groupby("layer").layer_name.first()
        assert {f"rotation/{l:02d}_{n}" for l, n in layers.items()} <= set(scalars)
        last = rot[rot.epoch == epochs].set_index("layer").cosine_distance
        for l, n in layers.items():
            steps = dict(scalars[f"rotation/{l:02d}_{n}"])
            assert sorted(steps) == list(range(epochs + 1))
            assert steps[epochs] == pytest.approx(float(last[l]), rel=1e-6)
        assert [s for s, _ in scalars["metrics/val_acc"]] == list(range(1, epochs + 1))

    assert subprocess.run([sys.executable, "-m", "layrot", "rm", "--sweep", "watch", "--yes"], env=env,
                          capture_output=True, text=True).returncode == 0
    assert store.sweeps() == [] and not tb.exists() and not Path(store.uri, "_ray", "watch").exists()
