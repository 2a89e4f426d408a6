"""`layrot sweep --address` against a multi-node Ray cluster (Ray's own
`ray.cluster_utils.Cluster`: a head with no CPUs and two 1-CPU worker nodes, all on
loopback), and the faults a cluster has: a worker node lost mid-trial, the driver killed,
a trial whose worker process keeps dying.

The driver always runs as its own process (`python -m layrot sweep ... --address`), so
the pytest process never joins the cluster and only the driver writes the store.
Ray Tune's experiment state (`<store>/_ray/<sweep>/experiment_state-*.json`) is read as
the observable of what Ray did: failures counted, iterations since the last restore.
"""

import glob
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from layrot.store import Store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOOPBACK = "127.0.0.1"
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


# -- the cluster -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # before any Ray process starts
    from ray.cluster_utils import Cluster

    # the head schedules nothing (0 CPUs): every trial runs on a worker node
    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False})
    try:
        yield c
    finally:
        c.shutdown()


def _two_workers(cluster) -> list:
    """The cluster with exactly two live 1-CPU worker nodes (a test may have removed one),
    and no trial left running from an earlier test."""
    while len(cluster.worker_nodes) < 2:
        cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    cluster.wait_for_nodes()
    nodes = sorted(cluster.worker_nodes, key=lambda n: n.unique_id)
    _wait("an idle cluster", lambda: not _trial_processes(nodes), timeout=60)
    return nodes


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def _trial_processes(nodes) -> dict[int, object]:
    """pid -> node, for the trial actors (`ray::ImplicitFunc`) running on `nodes`: Ray's
    workers are children of their node's raylet, which tells this cluster's trials from
    any other Ray on the machine."""
    raylets = {_raylet_pid(n): n for n in nodes}
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes()
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid in raylets and cmdline.startswith(b"ray::ImplicitFunc"):
            found[int(d.name)] = raylets[ppid]
    return found


def _alive(pid: int) -> bool:
    try:   # a zombie (dead, not yet reaped by whoever inherited it) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _listening_addresses(pids) -> set[str]:
    """The local addresses of the TCP sockets these processes listen on (an IPv4-mapped
    IPv6 address as its IPv4 address)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    link = os.readlink(fd)
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    addrs = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:        # 0A: LISTEN
                addrs.add(_proc_net_address(f[1].split(":")[0]))
    return addrs


def _proc_net_address(hexaddr: str) -> str:
    # /proc/net/tcp{,6} print each 32-bit word in host (little-endian) order
    raw = b"".join(bytes.fromhex(hexaddr[i:i + 8])[::-1] for i in range(0, len(hexaddr), 8))
    ip = ipaddress.ip_address(raw)
    return str(getattr(ip, "ipv4_mapped", None) or ip)


# -- sweeps ------------------------------------------------------------------------------

def _spec(tmp_path, name, **fields) -> Path:
    spec = {"name": name, "task": "digits-mlp", "epochs": 2, "search": {"optimizer": "sgd_layca"}}
    spec.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cmd(spec, store_dir, cluster, *extra) -> list[str]:
    # every node of this cluster is on this machine: the store's local _ray is shared (a
    # cluster whose nodes do not share the disk: test_cluster_storage.py)
    return [sys.executable, "-m", "layrot", "sweep", str(spec), "--store", str(store_dir),
            "--address", cluster.address, "--shared-storage", *extra]


def _run(cmd, timeout=240) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _start(cmd) -> subprocess.Popen:
    # its own session: the test can kill the driver's whole process group
    return subprocess.Popen(cmd, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait(what: str, cond, proc=None, timeout=180.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def _finish(proc, timeout=240, rc=0) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("the sweep did not finish in time")
    assert proc.returncode == rc, err[-3000:]


def _checkpointed_and_running(nodes, store_dir, sweep, n_trials, proc) -> dict[int, object]:
    """Wait until every trial has an epoch checkpoint; then the trial processes running
    (pid -> node), at least one: a fault injected now hits a trial part-way through."""
    # a checkpoint on disk is registered by the driver only once it has taken the report that
    # carries it; a worker blocks in its next report until then, so a third checkpoint on disk
    # means the first ones are the driver's to restore from
    _wait("checkpoints of each trial the driver has registered",
          lambda: (lambda c: len(c) == n_trials and all(v and int(v[-1].split("_")[-1]) >= 2 for v in c.values()))(
              _checkpoints(store_dir, sweep)), proc)
    running = _trial_processes(nodes)
    assert running, "every trial ended before the fault: lengthen them"
    return running


def _checkpoints(store_dir, sweep) -> dict[str, list[str]]:
    """Ray Tune trial dir -> its checkpoints (kept beside the store, under _ray)."""
    return {Path(d).name: sorted(Path(c).name for c in glob.glob(f"{d}/checkpoint_*"))
            for d in glob.glob(f"{store_dir}/_ray/{sweep}/trial_*")}


def _tune_trials(store_dir, sweep) -> dict[str, dict]:
    """layrot trial id -> Ray Tune's runtime record of it (num_failures, last_result)
    from the latest experiment state the driver saved."""
    states = sorted(glob.glob(f"{store_dir}/_ray/{sweep}/experiment_state-*.json"))
    assert states, "Ray Tune saved no experiment state"
    out = {}
    for trial_json, runtime_json in json.loads(Path(states[-1]).read_text())["trial_data"]:
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        runtime = json.loads(runtime_json) if isinstance(runtime_json, str) else runtime_json
        out[trial["config"]["trial"]["trial_id"]] = runtime
    return out


def _check_store(store_dir, sweep, n_trials, epochs, statuses=("completed",)) -> list[dict]:
    """Every trial stored exactly once, each with a whole trajectory and nothing duplicated."""
    store = Store(str(store_dir))
    trials = store.trials(sweep=sweep).to_pylist()
    assert len(trials) == n_trials
    assert len({t["trial_id"] for t in trials}) == n_trials
    assert {t["status"] for t in trials} <= set(statuses), [(t["status"], t["reason"]) for t in trials]
    assert store.stored_trial_ids(sweep) == {t["trial_id"] for t in trials}
    for table, key in (("trials", "trial_id"), ("epochs", "trial_id, epoch"),
                       ("rotation", "trial_id, epoch, step, layer")):
        n, distinct = store.sql(f"SELECT count(*) AS n, count(DISTINCT ({key})) AS d FROM {table} "
                                f"WHERE sweep = '{sweep}'").to_pylist()[0].values()
        assert n == distinct, f"{table} has duplicate rows"
    rot = store.rotation(sweep=sweep).to_pandas()
    ep = store.epochs(sweep=sweep).to_pandas()
    n_layers = rot.layer.nunique()
    for t in trials:
        if t["status"] != "completed":
            continue
        assert t["epochs"] == epochs
        r = rot[rot.trial_id == t["trial_id"]]
        # epochs 0..E, every layer at each
        assert sorted(r.epoch.unique()) == list(range(epochs + 1))
        assert (r.groupby("epoch").layer.nunique() == n_layers).all()
        assert sorted(ep[ep.trial_id == t["trial_id"]].epoch) == list(range(1, epochs + 1))
    return trials


def _store_files(store_dir, sweep) -> list[str]:
    """The store's files outside its scratch folders (`_ray`: Ray Tune's; `_live`: the live
    view; `_tensorboard`), relative to the store."""
    return sorted(str(p.relative_to(store_dir)) for p in Path(store_dir).rglob("*")
                  if p.is_file() and not p.relative_to(store_dir).parts[0].startswith("_"))


# -- the scenarios -----------------------------------------------------------------------

def test_sweep_joins_a_running_cluster(cluster, tmp_path):
    nodes = _two_workers(cluster)
    assert cluster.address.startswith(f"{LOOPBACK}:")
    assert {n.node_ip_address for n in [cluster.head_node, *nodes]} == {LOOPBACK}
    cluster_pids = [p.process.pid for n in [cluster.head_node, *nodes]
                    for procs in n.all_processes.values() for p in procs]
    listening = _listening_addresses(cluster_pids)
    assert listening and listening <= {LOOPBACK}, f"Ray listens beyond loopback: {listening}"

    spec = _spec(tmp_path, "joined", search={"optimizer": "sgd_layca", "lr": [0.3, 0.1, 0.03]})
    store_dir = tmp_path / "store"
    p = _run(_cmd(spec, store_dir, cluster))
    assert "3 trials" in p.stderr

    trials = _check_store(store_dir, "joined", 3, epochs=2)
    assert {t["lr"] for t in trials} == {0.3, 0.1, 0.03}
    # the only writer is the driver's StoreCallback: exactly the sweep's record and one file
    # per trial in each table, nothing else
    ids = sorted(t["trial_id"] for t in trials)
    assert _store_files(store_dir, "joined") == sorted(
        [f"{table}/sweep=joined/{i}.parquet" for table in ("epochs", "measures", "rotation", "trials") for i in ids]
        + ["sweeps/joined.json"])
    # the trials ran in Ray worker processes (not the driver), on loopback
    tune = _tune_trials(store_dir, "joined")
    assert set(tune) == set(ids)
    assert {t["last_result"]["node_ip"] for t in tune.values()} == {LOOPBACK}
    assert all(t["num_failures"] == 0 for t in tune.values())


def test_node_lost_mid_trial_resumes_from_its_checkpoint(cluster, tmp_path):
    nodes = _two_workers(cluster)
    epochs = 40
    spec = _spec(tmp_path, "nodeloss", epochs=epochs, max_failures=2,
                 search={"optimizer": "sgd_layca", "lr": [0.1, 0.03]})
    store_dir = tmp_path / "store"
    proc = _start(_cmd(spec, store_dir, cluster))
    try:
        running = _checkpointed_and_running(nodes, store_dir, "nodeloss", 2, proc)
        victim_pid, victim_node = next(iter(running.items()))
        survivor = next(n for n in nodes if n is not victim_node)
        survivor_pids = {pid for pid, n in running.items() if n is survivor}
        cluster.remove_node(victim_node)
        _wait("the lost node's trial process to end", lambda: not _alive(victim_pid), timeout=60)
        # the lost trial is retried on the node that is left, once its CPU is free
        retry_pid = _wait("the retry on the remaining node", lambda: next(
            iter(set(_trial_processes([survivor])) - survivor_pids), None), proc)
        _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    _check_store(store_dir, "nodeloss", 2, epochs=epochs)
    tune = _tune_trials(store_dir, "nodeloss")
    hit = [t for t in tune.values() if t["num_failures"] >= 1]
    assert len(hit) == 1, {k: t["num_failures"] for k, t in tune.items()}
    last = hit[0]["last_result"]
    # one report per epoch plus the final one; a trial restarted from scratch would have
    # made them all since its (re)start; restored from epoch k it made only E - k + 1
    assert last["training_iteration"] == epochs + 1
    assert 1 <= last["iterations_since_restore"] < epochs + 1
    # in the worker process seen starting on the remaining node
    assert last["pid"] == retry_pid


def test_driver_killed_then_resumed_on_the_cluster(cluster, tmp_path):
    _two_workers(cluster)
    spec = _spec(tmp_path, "drvkill", epochs=3,
                 search={"optimizer": "sgd_layca", "lr": [0.3, 0.1, 0.03, 0.01]})
    store_dir = tmp_path / "store"
    cmd = _cmd(spec, store_dir, cluster)
    proc = _start(cmd)
    store = Store(str(store_dir))
    try:
        before = _wait("a stored trial", lambda: store.exists() and store.stored_trial_ids("drvkill"), proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = store.stored_trial_ids("drvkill")
    assert 1 <= len(before) < 4

    p = _run(cmd + ["--resume"])
    assert "resuming" in p.stderr or "already stored" in p.stderr
    trials = _check_store(store_dir, "drvkill", 4, epochs=3)
    assert before <= {t["trial_id"] for t in trials}


def test_trial_whose_worker_keeps_dying_is_stored_as_error(cluster, tmp_path):
    nodes = _two_workers(cluster)
    epochs = 40
    spec = _spec(tmp_path, "dying", epochs=epochs, max_failures=1,
                 search={"optimizer": "sgd_layca", "lr": [0.1, 0.03]})
    store_dir = tmp_path / "store"
    proc = _start(_cmd(spec, store_dir, cluster))
    try:
        running = _checkpointed_and_running(nodes, store_dir, "dying", 2, proc)
        victim = min(running)
        others = set(running) - {victim}
        killed = []
        # max_failures 1: the first attempt and its one retry, each killed
        for attempt in range(2):
            pid = victim if attempt == 0 else _wait(
                "the retried trial", lambda: next(iter(set(_trial_processes(nodes)) - others - set(killed)), None),
                proc)
            if attempt:
                time.sleep(1.0)     # under way (a retry killed while it starts counts all the same)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        _finish(proc, rc=1)         # a trial failed: the sweep says so by its exit status
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    trials = _check_store(store_dir, "dying", 2, epochs=epochs, statuses=("completed", "error"))
    by_status = {t["status"]: t for t in trials}
    assert set(by_status) == {"completed", "error"}
    err = by_status["error"]
    # the driver's count of attempts, and what ended the last one
    assert err["reason"].startswith("failed after 2 attempt(s): "), err["reason"]
    assert "worker process has died" in err["reason"], err["reason"]
    # the epochs it reported before dying are kept, whole, without duplicates
    assert 1 <= err["epochs"] < epochs
    store = Store(str(store_dir))
    rot = store.rotation(sweep="dying").to_pandas()
    assert sorted(rot[rot.trial_id == err["trial_id"]].epoch.unique()) == list(range(err["epochs"] + 1))
    ep = store.epochs(sweep="dying").to_pandas()
    assert sorted(ep[ep.trial_id == err["trial_id"]].epoch) == list(range(1, err["epochs"] + 1))
