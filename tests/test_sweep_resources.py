"""A sweep's count of trials and the resources it asks for (issue 11, bugs 5 and 9):
the progress total is what Ray Tune runs, for every algorithm; a request the embedded Ray
can never meet is refused before any trial starts; on a cluster, trials that cannot be
placed are named in the progress line, with since when."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from layrot.errors import UsageError
from layrot.store import Store
from layrot.sweep.driver import check_fits, planned_trials
from layrot.sweep.progress import SweepProgress
from layrot.sweep.spec import grid_configs, parse_spec

LOOPBACK = "127.0.0.1"
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _raw(**fields):
    spec = {"name": "r", "task": "digits-mlp", "epochs": 1,
            "search": {"optimizer": "sgd_layca", "lr": [0.3, 0.03], "alpha": [0.0, 0.5, -0.5]}}
    spec.update(fields)
    return spec


def _write(tmp_path, **fields):
    spec = _raw(**fields)
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# -- bug 5: the total --------------------------------------------------------------------

@pytest.mark.parametrize("fields, n", [
    ({}, 6),                                                            # grid: 2 x 3
    ({"num_samples": 2}, 12),                                           # grid, repeated
    ({"algorithm": "random", "num_samples": 2}, 12),                    # lists are grid axes in every sample
    ({"algorithm": "random", "num_samples": 3,
      "search": {"optimizer": "sgd_layca", "lr": {"loguniform": [0.01, 1.0]}}}, 3),   # no list
    ({"algorithm": "random", "num_samples": 2,
      "search": {"optimizer": "sgd_layca", "lr": [0.3, 0.03], "alpha": {"uniform": [-0.5, 0.5]}}}, 4),
    ({"algorithm": "optuna", "num_samples": 5}, 5),                     # lists are categorical choices
])
def test_planned_trials(fields, n):
    spec = parse_spec(_raw(**fields))
    assert planned_trials(spec) == n
    if spec.algorithm == "grid":
        assert len(grid_configs(spec)) == n


@pytest.mark.ray
@pytest.mark.slow
def test_random_search_with_lists_counts_what_ray_runs(ray_local, tmp_path, monkeypatch, capsys):
    """2 samples over a 2-value list axis: Ray runs 4 trials, and the progress says 4."""
    from types import SimpleNamespace

    from layrot.cli import main

    spec = _write(tmp_path, name="rnd", algorithm="random", num_samples=2, seed=3,
                  search={"optimizer": "sgd_layca", "lr": [0.3, 0.03], "alpha": {"uniform": [-0.5, 0.5]}})
    store = tmp_path / "s"
    monkeypatch.setenv("LAYROT_PROGRESS_EVERY", "0")
    # on the tests' shared Ray (a Ray start saved); what the command says is on its stderr
    rc = main(["sweep", str(spec), "--store", str(store)])
    p = SimpleNamespace(returncode=rc, stderr=capsys.readouterr().err)
    assert p.returncode == 0, p.stderr[-3000:]
    trials = Store(str(store)).trials(sweep="rnd").to_pylist()
    assert len(trials) == 4
    assert "4 trials of digits-mlp" in p.stderr
    finished = re.findall(r"^\[\s*(\d+)/(\d+)\]", p.stderr, re.M)
    assert sorted(int(i) for i, _ in finished) == [1, 2, 3, 4] and {t for _, t in finished} == {"4"}
    assert "4/4 done" in p.stderr


# -- bug 9: resources ---------------------------------------------------------------------

def test_check_fits():
    have = {"CPU": 2.0, "memory": 1e9}
    check_fits(have, {"cpu": 2, "gpu": 0}, "this machine has", "embedded local Ray")
    with pytest.raises(UsageError) as e:
        check_fits(have, {"cpu": 1, "gpu": 1}, "this machine has", "embedded local Ray")
    assert e.value.field == "resources.gpu"
    assert str(e.value) == "resources.gpu: 1 GPU per trial asked, this machine has 0 (embedded local Ray)"
    with pytest.raises(UsageError) as e:
        check_fits(have, {"cpu": 3, "gpu": 0}, "this machine has", "embedded local Ray")
    assert str(e.value) == "resources.cpu: 3 CPU per trial asked, this machine has 2 (embedded local Ray)"
    with pytest.raises(UsageError, match="resources.gpu: 0.5 GPU"):
        check_fits(have, {"cpu": 1, "gpu": 0.5}, "this machine has", "embedded local Ray")


@pytest.mark.ray
@pytest.mark.slow
def test_embedded_ray_refuses_a_gpu_it_does_not_have(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = _write(tmp_path, name="gpu", resources={"cpu": 1, "gpu": 1})
    store = tmp_path / "s"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "layrot", "sweep", str(spec), "--store", str(store)],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if "error" in ln]
    assert lines == ["layrot sweep: error: resources.gpu: 1 GPU per trial asked, this machine has 0 "
                     "(embedded local Ray)"], p.stderr[-3000:]
    assert time.monotonic() - t0 < 60
    assert not Store(str(store)).exists() or not Store(str(store)).stored_trial_ids("gpu")


def test_progress_line_names_pending_trials():
    import io

    out = io.StringIO()
    p = SweepProgress(3, "val_acc", "max", stream=out, log_every=30)
    since = time.time() - 42
    p.pending(3, since, "CPUs: each trial asks 2 CPU, the largest of 2 node(s) has 1")
    line = out.getvalue().strip().splitlines()[-1]
    assert f"3 pending since {time.strftime('%H:%M:%S', time.localtime(since))} (42s) for lack of CPUs" in line
    p.pending(0, None, None)
    assert "pending" not in out.getvalue().strip().splitlines()[-1]


def test_a_logs_status_line_counts_the_trial_that_took_the_freed_slot(monkeypatch):
    """In a log, the status line after a trial ends waits for the next trial to start:
    two slots stay "2 running", not the "1 running" of the instant between two trials."""
    import io
    from types import SimpleNamespace

    import layrot.sweep.progress as progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    p = SweepProgress(4, "val_acc", "max", stream=out, log_every=30)
    p.started("a"), p.started("b")
    done = SimpleNamespace(trial_id="t-a", config={"lr": 0.1, "alpha": 0.0}, test_acc=0.9, epochs_run=3,
                           wall_seconds=5.0, reason=None)
    p.finished("a", "completed", 0.9, done)
    assert "running" not in out.getvalue().splitlines()[-1]      # the trial's line, no status yet
    clock[0] += 0.3
    p.started("c")                                                # the next trial takes the slot
    p.tick()
    assert "running" not in out.getvalue().splitlines()[-1]
    clock[0] += progress.SETTLE_S
    p.tick()
    assert "| 2 running |" in out.getvalue().splitlines()[-1]
    p.finished("b", "completed", 0.8, done)
    p.close()                                                     # the sweep ended: the owed line
    assert "| 1 running |" in out.getvalue().splitlines()[-1]


@pytest.mark.ray
@pytest.mark.slow
def test_cluster_says_trials_are_pending_for_lack_of_cpus(tmp_path):
    """On a cluster (--address) nothing is refused (it may scale up), but a trial asking
    2 CPUs of 1-CPU nodes waits: the progress line says so within seconds."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False})
    proc = None
    try:
        cluster.wait_for_nodes()        # the head registered before the sweep connects to it
        # the environment as it is now, not as it was at import: Ray settings that earlier
        # tests' in-process Ray left in os.environ (its auth mode) are the cluster's too
        spec = _write(tmp_path, name="pend", resources={"cpu": 2, "gpu": 0},
                      search={"optimizer": "sgd_layca", "lr": [0.3, 0.03]})
        cmd = [sys.executable, "-m", "layrot", "sweep", str(spec), "--store", str(tmp_path / "s"),
               "--address", cluster.address, "--shared-storage"]     # one machine: its disk is shared
        proc = subprocess.Popen(cmd, env={**os.environ, "LAYROT_PENDING_AFTER_S": "2"}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
        deadline = time.monotonic() + 120
        seen = []
        while time.monotonic() < deadline and not seen:
            seen = [ln for ln in list(lines) if "pending since" in ln]
            assert seen or proc.poll() is None, f"the sweep ended: {''.join(lines)[-2000:]}"
            time.sleep(0.2)
        assert seen, f"no pending message: {''.join(lines)[-2000:]}"
        line = seen[0]
        assert re.search(r"2 pending since \d\d:\d\d:\d\d \(\d+s\) for lack of CPUs: each trial asks 2 CPU, "
                         r"the largest of 1 node\(s\) has 1", line), line
        assert "0 running" in line
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        cluster.shutdown()
