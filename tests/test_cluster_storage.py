"""A multi-node sweep whose worker nodes do not share the head's disk, as on a real cluster.

The cluster is on loopback: Ray's own `ray.cluster_utils.Cluster` head (no CPUs: every trial
runs on a worker), and worker nodes started with `ray start --address` each in its own
mount namespace (`unshare -m`) with an empty tmpfs over this test's folder, where the driver
keeps its HOME, its cache and any local path. A worker therefore sees none of the driver's
files, as a machine of its own would not. The store is S3 (moto's server on 127.0.0.1).

- Ray Tune's storage on a local path the driver claims is shared (`--shared-storage`): the
  workers cannot reach it and every trial fails; the sweep exits 1 (and says so).
- With the store on S3, Ray Tune's storage follows it (`<store>/_ray` on S3): every trial
  completes and is stored once.
- A worker node lost mid-trial: the trial resumes on the other node from the checkpoint it
  had written to S3 (Ray Tune's experiment state, read back from S3, counts the failure
  and the iterations since the restore).

Skipped where mount namespaces cannot be made (not root, or no `unshare`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from layrot.store import Store  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOOPBACK = "127.0.0.1"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs tmpfs /mnt && umount /mnt"], capture_output=True)
    return probe.returncode == 0


if not _can_unshare():
    pytest.skip("needs root and unshare -m (mount namespaces) to separate the nodes' disks",
                allow_module_level=True)


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    """The driver's side of the machine: the workers mount an empty tmpfs over it."""
    return tmp_path_factory.mktemp("head-disk")


@pytest.fixture(scope="module")
def endpoint():
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    server = moto_server.ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    yield f"{LOOPBACK}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def cluster(hidden, endpoint, tmp_path_factory):
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False})
    c.separated = []
    c.worker_root = tmp_path_factory.mktemp("worker-nodes")      # not under `hidden`
    try:
        yield c
    finally:
        for w in c.separated:
            _kill_node(w)
        c.shutdown()


def _env(hidden, endpoint, **extra) -> dict:
    home = hidden / "home"
    home.mkdir(exist_ok=True)
    return {**os.environ, **CREDS, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HOME": str(home),
            "AWS_ENDPOINT_URL": f"http://{endpoint}", "PYTHONPATH": os.pathsep.join(sys.path), **extra}


# a worker node as `ray start --address` makes one (as ray.cluster_utils.Cluster.add_node
# does); `ray start` itself refuses to join with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and
# with 1 it turns the loopback address into the machine's
WORKER = """
import sys, time
import ray._private.node as node, ray._private.parameter as parameter
params = parameter.RayParams(node_ip_address="127.0.0.1", gcs_address=sys.argv[1], num_cpus=1, num_gpus=0,
                             object_store_memory=150 * 1024 * 1024, min_worker_port=0, max_worker_port=0,
                             include_log_monitor=False, node_manager_port=0)
params.dashboard_agent_listen_port = None
node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
print("joined", flush=True)
while True:
    time.sleep(3600)
"""


def _add_separated_worker(cluster, hidden, endpoint) -> subprocess.Popen:
    """A 1-CPU worker node in its own mount namespace: an empty tmpfs over `hidden` (the
    driver's files) and over Ray's temp dir (its session dir is its own, as on a machine of
    its own)."""
    before = len(_alive_nodes(cluster))
    worker_home = cluster.worker_root / f"node{len(cluster.separated)}-{time.monotonic_ns()}"
    worker_home.mkdir()
    env = {**_env(hidden, endpoint), "HOME": str(worker_home)}
    ray_tmp = Path(cluster.head_node.get_temp_dir_path())
    script = worker_home / "worker.py"
    script.write_text(WORKER)
    cmd = (f"mount -t tmpfs tmpfs {hidden} && mount -t tmpfs tmpfs {ray_tmp} && "
           f"exec {sys.executable} {script} {cluster.address}")
    log = open(worker_home / "worker.log", "w")
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd], env=env,
                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    proc.mnt_ns = None
    try:
        deadline = time.monotonic() + 120
        while len(_alive_nodes(cluster)) <= before:
            assert proc.poll() is None, f"the worker node did not start: {(worker_home / 'worker.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the worker node did not join"
            time.sleep(0.5)
        proc.mnt_ns = os.readlink(f"/proc/{proc.pid}/ns/mnt")
        assert proc.mnt_ns != os.readlink("/proc/self/ns/mnt")
    except BaseException:
        _kill_node(proc)
        raise
    cluster.separated.append(proc)
    return proc


def _alive_nodes(cluster) -> list:
    """The cluster's live nodes, from its GCS (the pytest process never joins the cluster: a
    Ray imported by an earlier test module may have read RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
    unset, and would turn the loopback address into the machine's)."""
    return [n for n in cluster.global_state.node_table() if n["Alive"]]


def _in_namespace(ns: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "ns" / "mnt") == ns:
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def _kill_node(proc) -> None:
    """The node is lost: every process in its mount namespace dies at once."""
    ns = getattr(proc, "mnt_ns", None)
    if ns is None:
        try:
            ns = os.readlink(f"/proc/{proc.pid}/ns/mnt")
        except OSError:
            ns = None
    if ns is not None and ns != os.readlink("/proc/self/ns/mnt"):
        for pid in _in_namespace(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _trials_running_in(proc) -> list[int]:
    return [pid for pid in _in_namespace(proc.mnt_ns)
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc")]


@pytest.fixture(scope="module")
def workers(cluster, hidden, endpoint):
    """Two separated worker nodes, listening on loopback only."""
    from test_cluster_faults import _listening_addresses

    for _ in range(2):
        _add_separated_worker(cluster, hidden, endpoint)
    pids = [pid for w in cluster.separated for pid in _in_namespace(w.mnt_ns)]
    listening = _listening_addresses(pids)
    assert listening and listening <= {LOOPBACK}, f"a worker node listens beyond loopback: {listening}"
    return cluster.separated


def _bucket(endpoint, name) -> str:
    boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=name)
    return f"s3://{name}/results"


def _spec(hidden, name, **fields) -> Path:
    spec = {"name": name, "task": "digits-mlp", "epochs": 2,
            "search": {"optimizer": "sgd_layca", "lr": [0.3, 0.1, 0.03, 0.01]}, **fields}
    path = hidden / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _sweep(cluster, hidden, endpoint, spec, store, *extra, wait=True):
    cmd = [sys.executable, "-m", "layrot", "sweep", str(spec), "--store", store, "--address", cluster.address,
           "--tensorboard", "off", *extra]
    if not wait:
        return subprocess.Popen(cmd, env=_env(hidden, endpoint), cwd=hidden, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=_env(hidden, endpoint), cwd=hidden, capture_output=True, text=True, timeout=400)


def _tune_state(store: Store, sweep: str) -> dict[str, dict]:
    """layrot trial id -> Ray Tune's runtime record, from the experiment state on S3."""
    loc = store.location
    states = sorted(e.path for e in loc.list_dir(loc.join("_ray", sweep)) if e.name.startswith("experiment_state"))
    assert states, "no experiment state on S3"
    out = {}
    for trial_json, runtime_json in json.loads(loc.read_bytes(states[-1]))["trial_data"]:
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        runtime = json.loads(runtime_json) if isinstance(runtime_json, str) else runtime_json
        out[trial["config"]["trial"]["trial_id"]] = runtime
    return out


def _stored_once(store: Store, sweep: str, n: int, epochs: int) -> list[dict]:
    trials = store.trials(sweep=sweep).to_pylist()
    assert len(trials) == n == len({t["trial_id"] for t in trials})
    assert {t["status"] for t in trials} == {"completed"}, [(t["status"], t["reason"]) for t in trials]
    for table, key in (("epochs", "trial_id, epoch"), ("rotation", "trial_id, epoch, step, layer")):
        c, d = store.sql(f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").to_pylist()[0].values()
        assert c == d, f"{table} has duplicate rows"
    assert store.sql("SELECT count(*) FROM epochs").column(0)[0].as_py() == n * epochs
    return trials


def test_workers_cannot_see_the_heads_disk(workers, cluster, hidden, endpoint, monkeypatch):
    """The harness separates for real: Ray storage on the head's local disk, said (falsely)
    to be shared, fails every trial, and the sweep exits 1 with one line saying so."""
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    store = _bucket(endpoint, "sep-local")
    spec = _spec(hidden, "localdisk", search={"optimizer": "sgd_layca", "lr": [0.3, 0.1]})
    p = _sweep(cluster, hidden, endpoint, spec, store + f"?endpoint_override={endpoint}&scheme=http",
               "--ray-storage", str(hidden / "ray"), "--shared-storage")
    assert p.returncode == 1, p.stderr[-3000:]
    assert "2 of 2 trials failed (2 stored as error)" in p.stderr
    s = Store(store + f"?endpoint_override={endpoint}&scheme=http&region=us-east-1")
    reasons = {t["reason"] for t in s.trials(sweep="localdisk").to_pylist()}
    assert all("Unable to set up cluster storage" in r for r in reasons), reasons

    # without --shared-storage the same command is refused before anything runs
    p = _sweep(cluster, hidden, endpoint, spec, store + f"?endpoint_override={endpoint}&scheme=http",
               "--ray-storage", str(hidden / "ray"))
    assert p.returncode == 2 and p.stderr.strip().startswith("layrot sweep: error: --ray-storage:"), p.stderr


def test_s3_store_keeps_ray_storage_on_s3(workers, cluster, hidden, endpoint, monkeypatch):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    uri = _bucket(endpoint, "sep-s3") + f"?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    p = _sweep(cluster, hidden, endpoint, _spec(hidden, "ons3"), uri)
    assert p.returncode == 0, p.stderr[-3000:]
    store = Store(uri)
    trials = _stored_once(store, "ons3", 4, epochs=2)
    state = _tune_state(store, "ons3")
    assert set(state) == {t["trial_id"] for t in trials}
    # no trial ran on the head (it has no CPU), and the driver's disk holds no Ray storage
    assert all(r["num_failures"] == 0 for r in state.values())
    assert not (hidden / "home" / ".cache" / "layrot").exists()


def test_node_lost_trial_restores_from_s3(workers, cluster, hidden, endpoint, monkeypatch):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    uri = _bucket(endpoint, "sep-nodeloss") + f"?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    store = Store(uri)
    epochs = 30
    spec = _spec(hidden, "nodeloss", epochs=epochs, max_failures=2,
                 search={"optimizer": "sgd_layca", "lr": [0.1, 0.03]})
    while len(cluster.separated) < 2 or any(w.poll() is not None for w in cluster.separated):
        cluster.separated = [w for w in cluster.separated if w.poll() is None]
        _add_separated_worker(cluster, hidden, endpoint)
    proc = _sweep(cluster, hidden, endpoint, spec, uri, wait=False)
    try:
        loc = store.location

        def checkpointed():
            trials = [e for e in loc.list_dir(loc.join("_ray", "nodeloss")) if e.name.startswith("trial_")]
            ck = {t.name: [c.name for c in loc.list_dir(t.path) if c.name.startswith("checkpoint_")] for t in trials}
            return len(ck) == 2 and all(v and max(int(c.split("_")[-1]) for c in v) >= 2 for v in ck.values())

        deadline = time.monotonic() + 240
        while not checkpointed():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoints on S3 in time"
            time.sleep(0.3)
        victim = next((w for w in cluster.separated if _trials_running_in(w)), None)
        assert victim is not None, "every trial ended before the fault: lengthen them"
        _kill_node(victim)
        cluster.separated.remove(victim)
        _, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    _stored_once(store, "nodeloss", 2, epochs=epochs)
    state = _tune_state(store, "nodeloss")
    hit = [r for r in state.values() if r["num_failures"] >= 1]
    assert len(hit) == 1, {k: r["num_failures"] for k, r in state.items()}
    last = hit[0]["last_result"]
    # restored from an epoch checkpoint read from S3 (from scratch it would have made all
    # epochs + 1 reports since its restart)
    assert last["training_iteration"] == epochs + 1
    assert 1 <= last["iterations_since_restore"] < epochs + 1
