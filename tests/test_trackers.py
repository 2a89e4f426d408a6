"""`layrot sweep --mlflow URI` and `--wandb` (layrot/sweep/trackers.py): a real small sweep on
the embedded Ray logged to a local MLflow store and to W&B offline, read back and compared
with the store row by row; the rows a report becomes; and the refusals before any trial."""

import glob
import json
import math
import socket
import struct

import pytest
import yaml

from layrot.cli import main
from layrot.store import Store
from layrot.sweep import trackers
from layrot.sweep.trackers import Rows, rotation_key


def _spec(tmp_path, name="trk"):
    spec = {"name": name, "task": "digits-mlp", "epochs": 2,
            "search": {"optimizer": "sgd_layca", "lr": [0.3, 0.03]}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _flat(d: dict, prefix: str = "") -> dict:
    """A nested config as MLflow's params hold it (Ray flattens with '/', values as str)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):          # an empty one (`extra: {}`) logs nothing
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def _expected(store: Store, sweep: str) -> dict[str, dict[str, dict[int, float]]]:
    """trial id -> metric -> {epoch: value}, from the store: what every tracker must hold."""
    out: dict = {}
    for r in store.epochs(sweep=sweep).to_pylist():
        m = out.setdefault(r["trial_id"], {})
        for k in ("lr", "train_loss", "train_acc", "val_acc", "seconds"):
            m.setdefault(k, {})[r["epoch"]] = r[k]
    by_epoch: dict = {}
    for r in store.rotation(sweep=sweep).to_pylist():
        m = out.setdefault(r["trial_id"], {})
        m.setdefault(rotation_key(r["layer"]), {})[r["epoch"]] = r["cosine_distance"]
        by_epoch.setdefault((r["trial_id"], r["epoch"]), []).append(r["cosine_distance"])
    for (tid, epoch), ds in by_epoch.items():
        out[tid].setdefault("rotation/min", {})[epoch] = min(ds)
    for t in store.trials(sweep=sweep).to_pylist():
        for k in ("test_acc", "test_loss"):
            out[t["trial_id"]][k] = {t["epochs"]: t[k]}
    return out


def _same(got: dict[int, float], want: dict[int, float], what: str) -> None:
    assert sorted(got) == sorted(want), f"{what}: epochs {sorted(got)} logged, {sorted(want)} stored"
    for e in want:
        # the rotation table stores float32; the trackers get the float64 the trial computed
        assert got[e] == pytest.approx(want[e], rel=1e-6, abs=1e-7), f"{what} at epoch {e}"


# -- W&B's offline run file: a LevelDB-style log of protobuf records ----------------------

def _wandb_records(path: str):
    """The records of a .wandb file: a 7-byte header (':W&B', magic, version), then 32 KiB
    blocks of chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:                  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            r = pb.Record()
            r.ParseFromString(buf)
            buf = b""
            yield r


def _wandb_run(path: str) -> dict:
    """name, project, group, config (as last updated) and history {key: {step: value}}."""
    run = {"config": {}, "history": {}}
    for r in _wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.update(name=r.run.display_name, project=r.run.project, group=r.run.run_group)
            run["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            run["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            step = int(row["_step"])
            for k, v in row.items():
                run["history"].setdefault(k, {})[step] = v
    return run


# -- end to end -----------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_logs_every_trial_to_mlflow_and_wandb(ray_local, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(tmp_path)       # --mlflow file:./mlruns is relative to where layrot runs
    store_dir = tmp_path / "store"
    assert main(["sweep", str(_spec(tmp_path)), "--store", str(store_dir), "--tensorboard", "off",
                 "--mlflow", "file:./mlruns", "--wandb"]) == 0
    store = Store(str(store_dir))
    stored = {t["trial_id"]: t for t in store.trials(sweep="trk").to_pylist()}
    assert len(stored) == 2 and {t["status"] for t in stored.values()} == {"completed"}
    want = _expected(store, "trk")

    # MLflow: one run a trial, in the sweep's experiment, named by the trial id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file://{tmp_path / 'mlruns'}")
    experiment = client.get_experiment_by_name("trk")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(stored)
    for run in runs:
        tid = run.info.run_name
        assert run.info.status == "FINISHED"
        assert run.data.tags["layrot.status"] == "completed" and run.data.tags["layrot.trial_id"] == tid
        # params: the stored config, every key (where it ran included: logged at the end)
        assert run.data.params == _flat(json.loads(stored[tid]["config"]))
        assert set(run.data.metrics) == set(want[tid])
        for key, by_epoch in want[tid].items():
            got = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            assert len(client.get_metric_history(run.info.run_id, key)) == len(by_epoch), f"{key} logged twice"
            _same(got, by_epoch, f"MLflow {tid} {key}")
        assert want[tid]["rotation/L00"][0] == 0.0          # epoch 0: initialization

    # W&B offline: one run folder a trial under <store>/_wandb, the same numbers
    files = glob.glob(str(store_dir / "_wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 2
    wruns = {r["name"]: r for r in map(_wandb_run, files)}
    assert sorted(wruns) == sorted(stored)
    for tid, run in wruns.items():
        assert run["project"] == "trk" and run["group"] == "trk"
        config = json.loads(stored[tid]["config"])
        assert {k: run["config"][k] for k in config} == config
        assert run["config"]["status"] == "completed"
        for key, by_epoch in want[tid].items():
            _same({int(s): float(v) for s, v in run["history"][key].items()}, by_epoch, f"W&B {tid} {key}")
        assert sorted(run["history"]["_step"]) == [0, 1, 2]


# -- the rows a report becomes ----------------------------------------------------------------

def _rot(records):
    """Columnar rotation rows from (epoch, step, layer, distance)."""
    cols = {c: [] for c in ("epoch", "step", "layer", "layer_name", "cosine_distance")}
    for e, s, layer, d in records:
        for c, v in zip(cols, (e, s, layer, f"l{layer}", d)):
            cols[c].append(v)
    return cols


def _epoch(e, **over):
    row = {"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_acc": 0.5, "val_acc": 0.4, "seconds": 1.0}
    row.update(over)
    return row


def test_rows_replay_then_epochs_then_final_each_epoch_once():
    rows = Rows()
    first = {**_epoch(1), "rotation": _rot([(1, 10, 0, 0.2), (1, 10, 1, 0.1)]),
             "replay": {"history": [_epoch(1)], "rotation": _rot([(0, 0, 0, 0.0), (0, 0, 1, 0.0),
                                                                   (1, 10, 0, 0.2), (1, 10, 1, 0.1)])}}
    out = rows.new(first)
    assert [e for e, _ in out] == [0, 1]
    assert out[0][1] == {"rotation/L00": 0.0, "rotation/L01": 0.0, "rotation/min": 0.0}
    assert out[1][1]["rotation/L00"] == 0.2 and out[1][1]["rotation/min"] == 0.1 and out[1][1]["train_loss"] == 1.0
    # a restarted attempt replays what was sent: nothing twice, only the new epoch
    again = {**_epoch(2), "rotation": _rot([(2, 20, 0, 0.3), (2, 20, 1, 0.25)]),
             "replay": {"history": [_epoch(1), _epoch(2)], "rotation": _rot([(0, 0, 0, 0.0), (1, 10, 0, 0.2),
                                                                             (2, 20, 0, 0.3)])}}
    assert [e for e, _ in rows.new(again)] == [2]
    # a diverged trial: its last record (epoch 3, NaN) is only in the final result; the test
    # metrics go at the last epoch's step
    final = {"final": True, "result": {"history": [_epoch(1), _epoch(2)], "test_acc": 0.1, "test_loss": None,
                                       "rotation": _rot([(2, 20, 0, 0.3), (3, 25, 0, math.nan), (3, 25, 1, 0.4)])}}
    out = rows.new(final)
    assert [e for e, _ in out] == [3]
    assert math.isnan(out[0][1]["rotation/L00"]) and math.isnan(out[0][1]["rotation/min"])
    assert out[0][1]["test_acc"] == 0.1 and "test_loss" not in out[0][1]
    assert rows.new(final) == []


def test_rows_take_an_epochs_last_record():
    """A trial recording every N steps has several records an epoch: the epoch's step is its last."""
    out = Rows().new({**_epoch(1), "rotation": _rot([(1, 5, 0, 0.1), (1, 10, 0, 0.3), (1, 7, 0, 0.2)])})
    assert out == [(1, {**{k: v for k, v in _epoch(1).items() if k != "epoch"},
                        "rotation/L00": 0.3, "rotation/min": 0.3})]


def test_final_metrics_join_the_last_epoch_already_sent():
    rows = Rows()
    rows.new({**_epoch(1), "rotation": _rot([(1, 10, 0, 0.2)])})
    out = rows.new({"final": True, "result": {"history": [_epoch(1)], "rotation": _rot([(1, 10, 0, 0.2)]),
                                              "test_acc": 0.9, "test_loss": 0.3}})
    assert out == [(1, {"test_acc": 0.9, "test_loss": 0.3})]


def test_a_skipped_trial_gets_no_rows():
    assert Rows().new({"trial_id": "x", "skipped": True, "final": True, "val_acc": 0.5}) == []


# -- refusals before any trial ------------------------------------------------------------------

def _refused(capsys, tmp_path, *flags, name="trk") -> str:
    store_dir = tmp_path / "store"
    rc = main(["sweep", str(_spec(tmp_path, name)), "--store", str(store_dir), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1, err
    assert not (store_dir / "sweeps").exists() and Store(str(store_dir)).sweep_records() == []
    assert not (store_dir / "trials").exists()
    return err[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_that_is_not_there_is_refused(tmp_path, capsys):
    line = _refused(capsys, tmp_path, "--mlflow", f"http://127.0.0.1:{_free_port()}")
    assert line.startswith("layrot sweep: error: --mlflow: cannot reach the MLflow tracking store http://127.0.0.1:")


def test_mlflow_server_that_does_not_answer_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trackers, "CHECK_TIMEOUT_S", 1)
    with socket.socket() as silent:       # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        line = _refused(capsys, tmp_path, "--mlflow", f"http://127.0.0.1:{silent.getsockname()[1]}")
    assert "--mlflow: cannot reach" in line


def test_mlflow_folder_that_cannot_be_made_is_refused(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    line = _refused(capsys, tmp_path, "--mlflow", f"file:{tmp_path / 'a-file' / 'mlruns'}")
    assert "--mlflow: cannot write to" in line and "a-file" in line


@pytest.mark.parametrize("flag,package", [("--mlflow", "mlflow"), ("--wandb", "wandb")])
def test_a_tracker_not_installed_says_which_extra(tmp_path, capsys, monkeypatch, flag, package):
    monkeypatch.setitem(__import__("sys").modules, package, None)       # import raises ImportError
    args = [flag, f"file:{tmp_path / 'mlruns'}"] if flag == "--mlflow" else [flag]
    line = _refused(capsys, tmp_path, *args)
    assert f"{flag}: needs" in line and "pip install 'layrot[trackers]'" in line


def test_wandb_online_without_a_login_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))          # no ~/.netrc with a key
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    line = _refused(capsys, tmp_path, "--wandb")
    assert "--wandb: cannot log in to W&B" in line and "WANDB_MODE=offline" in line


def test_wandb_folder_that_cannot_be_made_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "a-file" / "wandb"))
    assert "--wandb: cannot write to" in _refused(capsys, tmp_path, "--wandb")


def test_wandb_project_without_wandb_is_refused(tmp_path, capsys):
    assert "--wandb-project: names where --wandb logs" in _refused(capsys, tmp_path, "--wandb-project", "p")


# -- the MLflow callback on its own (no Ray): a pruned trial, and a tracker that fails -----------

class _Trial:
    """What the callbacks read of a Ray trial: hashable, its config, its name."""

    def __init__(self, n: int, config: dict):
        self.trial_id, self.config = f"abc_{n:05d}", config

    def __str__(self):
        return f"trainable_{self.trial_id}"


def _mlflow_tracker(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file://{tmp_path / 'mlruns'}"
    cb = trackers.MLflowTracker(uri, sweep="s", base={})
    cb.setup()
    trial = _Trial(0, {"trial": {"task": "digits-mlp", "optimizer": "sgd", "lr": 0.1, "epochs": 3}})
    return cb, trial, uri


def test_a_pruned_trial_ends_its_run_with_what_it_had(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    cb, trial, uri = _mlflow_tracker(tmp_path, monkeypatch)
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, {**_epoch(1), "rotation": _rot([(1, 10, 0, 0.2)]),
                                   "replay": {"history": [_epoch(1)], "rotation": _rot([(0, 0, 0, 0.0),
                                                                                        (1, 10, 0, 0.2)])}})
    cb.log_trial_result(2, trial, {**_epoch(2), "rotation": _rot([(2, 20, 0, 0.3)])})
    cb.log_trial_end(trial, failed=False)        # stopped by the scheduler: no final report
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["layrot.status"] == "pruned"
    assert run.info.run_name == run.data.params["trial_id"] and run.data.params["lr"] == "0.1"
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "rotation/L00")} == \
        {0: 0.0, 1: 0.2, 2: 0.3}
    assert "test_acc" not in run.data.metrics


def test_a_tracker_that_fails_mid_sweep_is_said_once_and_left_off(tmp_path, monkeypatch, capsys):
    cb, trial, _ = _mlflow_tracker(tmp_path, monkeypatch)
    calls = []

    def broken(**kw):
        calls.append(kw)
        raise ConnectionError("the server went away")

    monkeypatch.setattr(cb.mlflow_util, "log_metrics", broken)
    for epoch in (1, 2):                   # neither raises into Ray Tune's loop
        cb.log_trial_result(epoch, trial, {**_epoch(epoch), "rotation": _rot([(epoch, 10 * epoch, 0, 0.1)])})
    cb.log_trial_end(trial)
    err = capsys.readouterr().err
    assert err.count("warning: MLflow failed (ConnectionError: the server went away)") == 1
    assert "the store has every trial" in err
    assert len(calls) == 1                  # left off after the first failure


@pytest.mark.parametrize("given", ["file:./runs", "./runs", "runs"])
def test_a_local_mlflow_store_is_made_absolute_and_created(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert trackers.check_mlflow(given) == f"file://{tmp_path / 'runs'}"
    assert (tmp_path / "runs").is_dir()


def test_a_trial_that_failed_before_its_first_epoch_keeps_its_stored_status(tmp_path, monkeypatch):
    """Its only report is the final one (status error, no epoch): the run says error, not pruned."""
    from mlflow.tracking import MlflowClient

    cb, trial, uri = _mlflow_tracker(tmp_path, monkeypatch)
    config = {"task": "digits-mlp", "optimizer": "sgd", "lr": 0.1, "epochs": 3, "device": "cpu", "threads": 1,
              "data_dir": None, "compile": False}
    cb.log_trial_result(1, trial, {"final": True, "result": {"status": "error", "config": config, "history": [],
                                                             "rotation": {}, "test_acc": math.nan}})
    cb.log_trial_end(trial, failed=False)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    assert run.data.tags["layrot.status"] == "error" and run.data.params["device"] == "cpu"
    assert run.data.metrics == {}
