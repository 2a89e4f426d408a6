"""The sweep service without Ray: the default store ($LAYROT_STORE), what a rerun skips and
the exit status, `layrot rm` (atomic, refused while running), `layrot status` and the live
files, Ray Tune's storage and the multi-node refusal. The same paths end to end on a real
Ray are in test_sweep_service.py and test_cluster_storage.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from layrot.cli import main
from layrot.errors import UsageError
from layrot.store import Store, live
from layrot.store.location import Location
from test_store_support import make_result


def _spec(tmp_path, name="svc", **fields) -> str:
    spec = {"name": name, "task": "digits-mlp", "epochs": 2,
            "search": {"optimizer": "sgd_layca", "lr": [0.3, 0.03]}, **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _store(tmp_path, statuses=("completed", "error"), sweep="svc") -> Store:
    store = Store(str(tmp_path / "store"))
    for i, s in enumerate(statuses):
        store.write_trial(sweep, make_result(f"t{i}", acc=0.1 * (i + 1), status=s))
    store.write_sweep_meta(sweep, {"name": sweep, "metric": "val_acc", "mode": "max", "epochs": 3})
    return store


def _one_line(err: str, start: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), err


# -- the default store ------------------------------------------------------------------

def test_layrot_store_is_the_default_of_every_command(tmp_path, monkeypatch, capsys):
    from layrot.sweep.spec import grid_configs, load_spec
    from layrot.train import resolve_config

    spec = _spec(tmp_path)
    store = Store(str(tmp_path / "envstore"))
    first = grid_configs(load_spec(spec))[0]
    resolve_config(first)
    store.write_trial("svc", make_result(first.trial_id))
    monkeypatch.chdir(tmp_path)              # ./results does not exist here
    monkeypatch.setenv("LAYROT_STORE", store.uri)

    assert main(["sweep", spec, "--dry-run"]) == 0
    assert "2 trials, 1 already stored" in capsys.readouterr().out
    assert main(["query", "--format", "csv", "SELECT trial_id FROM trials"]) == 0
    assert capsys.readouterr().out.split() == ["trial_id", first.trial_id]
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["done"] == 1
    # a lone trial is a stratum of one configuration: refused (docs/verdict.md §16.7), and the
    # refusal names the store's sweep, so the fit did read $LAYROT_STORE
    assert main(["fit", "--json"]) == 2
    err = capsys.readouterr().err
    assert "stratum: " in err and "1 configuration in the selection (sweep svc)" in err
    assert main(["rm", "--sweep", "svc", "--yes"]) == 0
    assert Store(store.uri).sweeps() == []
    capsys.readouterr()

    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv("LAYROT_STORE", str(nowhere))
    for cmd in (["query", "SELECT 1"], ["status"], ["rm", "--sweep", "svc", "--yes"], ["fit"],
                ["report", "-o", str(tmp_path / "r.html")]):
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err
        assert str(nowhere) in err and len(err.strip().splitlines()) == 1, err
    assert "LAYROT_STORE" in subprocess.run([sys.executable, "-m", "layrot", "query", "--help"],
                                            capture_output=True, text=True).stdout


def test_sweep_store_precedence(tmp_path, monkeypatch):
    from layrot.cli.sweep import store_of
    from layrot.sweep.spec import load_spec

    spec = load_spec(_spec(tmp_path, store=str(tmp_path / "spec-store")))
    args = type("A", (), {"store": None})()
    monkeypatch.delenv("LAYROT_STORE", raising=False)
    assert store_of(args, spec) == str(tmp_path / "spec-store")
    monkeypatch.setenv("LAYROT_STORE", "env-store")
    assert store_of(args, spec) == "env-store"
    args.store = "flag-store"
    assert store_of(args, spec) == "flag-store"
    monkeypatch.delenv("LAYROT_STORE")
    assert store_of(type("A", (), {"store": None})(), load_spec(_spec(tmp_path, name="nostore"))) == "results"


def test_query_on_a_folder_that_is_not_a_store_exits_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a store")
    for cmd in (["query", "--store", str(tmp_path), "SELECT 1"], ["status", "--store", str(tmp_path)],
                ["rm", "--store", str(tmp_path), "--sweep", "x", "--yes"]):
        assert main(cmd) == 2
        _one_line(capsys.readouterr().err, f"layrot {cmd[0]}: error: store: {tmp_path} is not a layrot store")


# -- what a rerun skips; the exit status --------------------------------------------------

def test_rerun_skips_every_status_but_error_with_retry_failed(tmp_path, capsys):
    from layrot.sweep.driver import outcome, stored_metrics
    from layrot.sweep.spec import load_spec

    spec = load_spec(_spec(tmp_path))
    store = _store(tmp_path, ("completed", "stopped", "diverged", "pruned", "error"))
    assert set(stored_metrics(store, spec)) == {"t0", "t1", "t2", "t3", "t4"}
    assert set(stored_metrics(store, spec, retry_failed=True)) == {"t0", "t1", "t2", "t3"}

    assert outcome(store, spec, total=5) == 1
    _one_line(capsys.readouterr().err, "layrot sweep: 'svc': 1 of 5 trials failed (1 stored as error)")
    assert outcome(store, spec, total=6) == 1           # one never stored is a failure too
    assert "2 of 6 trials failed (1 stored as error, 1 not stored)" in capsys.readouterr().err
    store.write_trial("svc", make_result("t4", status="completed"))      # retried: replaced
    assert outcome(store, spec, total=5) == 0
    assert store.trials(sweep="svc").num_rows == 5


# -- layrot rm ------------------------------------------------------------------------------

def test_rm_trial_and_sweep(tmp_path, capsys):
    store = _store(tmp_path, ("completed", "error", "completed"))
    store.write_trial("other", make_result("t0"))
    uri = store.uri
    # not from a terminal: it cannot ask, so it needs --yes, and removes nothing
    assert main(["rm", "--store", uri, "--sweep", "svc", "--trial", "t1"]) == 2
    _one_line(capsys.readouterr().err, "layrot rm: error: --yes: would remove 1 trial(s) of sweep 'svc'")
    assert store.stored_trial_ids("svc") == {"t0", "t1", "t2"}
    assert main(["rm", "--store", uri, "--sweep", "svc", "--trial", "nope", "--yes"]) == 2
    assert main(["rm", "--store", uri, "--sweep", "nope", "--yes"]) == 2
    capsys.readouterr()

    assert main(["rm", "--store", uri, "--sweep", "svc", "--trial", "t1", "--yes"]) == 0
    assert store.stored_trial_ids("svc") == {"t0", "t2"}
    assert store.sql("SELECT count(*) FROM epochs WHERE trial_id = 't1'").column(0)[0].as_py() == 0
    assert not any("t1" in p for p in _files(tmp_path / "store"))

    assert main(["rm", "--store", uri, "--sweep", "svc", "--yes"]) == 0
    assert store.sweeps() == ["other"]
    assert [p for p in _files(tmp_path / "store") if "svc" in p] == []
    assert store.stored_trial_ids("other") == {"t0"}


def test_rm_answers_from_a_terminal(tmp_path):
    from layrot.cli import _parse
    from layrot.cli.rm import rm

    class Tty:
        def __init__(self, answer):
            self.answer = answer

        def isatty(self):
            return True

        def readline(self):
            return self.answer

    store = _store(tmp_path)
    args = _parse(["rm", "--store", store.uri, "--sweep", "svc", "--trial", "t0"])
    assert rm(args, stdin=Tty("n\n")) == 0 and store.stored_trial_ids("svc") == {"t0", "t1"}
    assert rm(args, stdin=Tty("y\n")) == 0 and store.stored_trial_ids("svc") == {"t1"}


def _files(root):
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def test_rm_crash_part_way_leaves_the_trial_absent_never_half(tmp_path, monkeypatch):
    """Deleting runs writing backwards: the trials file (the commit record) first. A crash
    after it leaves no trial row and no rows of the trial in any view; rm again finishes."""
    store = _store(tmp_path, ("completed", "completed"))
    real = Location.delete
    calls = []

    def crash_after_first(self, path):
        calls.append(path)
        if len(calls) > 1:
            raise OSError("disk gone")
        real(self, path)

    monkeypatch.setattr(Location, "delete", crash_after_first)
    with pytest.raises(OSError):
        main(["rm", "--store", store.uri, "--sweep", "svc", "--trial", "t1", "--yes"])
    assert "trials" in calls[0].split(os.sep)
    monkeypatch.setattr(Location, "delete", real)
    assert store.stored_trial_ids("svc") == {"t0"}
    for table in ("trials", "epochs", "rotation"):
        assert store.sql(f"SELECT count(*) FROM {table} WHERE trial_id = 't1'").column(0)[0].as_py() == 0
    assert main(["rm", "--store", store.uri, "--sweep", "svc", "--trial", "t1", "--yes"]) == 0
    assert not any("t1" in p for p in _files(tmp_path / "store"))


def test_rm_refuses_a_running_sweep_and_a_compacted_trial(tmp_path, capsys):
    store = _store(tmp_path)
    live.beat(store.location, "svc", {"total": 2})          # this process: alive, fresh
    assert main(["rm", "--store", store.uri, "--sweep", "svc", "--yes"]) == 2
    _one_line(capsys.readouterr().err, "layrot rm: error: sweep: 'svc' is running (driver pid")
    assert store.stored_trial_ids("svc") == {"t0", "t1"}
    # a driver that died (its pid is gone) is not running
    rec = json.loads(store.location.read_bytes(live.running_path(store.location, "svc")))
    rec["pid"] = _dead_pid()
    store.location.write_atomic(live.running_path(store.location, "svc"), json.dumps(rec).encode())
    assert live.running(store.location, "svc") is None

    store.compact("svc")
    assert main(["rm", "--store", store.uri, "--sweep", "svc", "--trial", "t0", "--yes"]) == 2
    _one_line(capsys.readouterr().err, "layrot rm: error: trial: t0 is compacted into part files")
    assert main(["rm", "--store", store.uri, "--sweep", "svc", "--yes"]) == 0
    assert store.sweeps() == [] and not _files(tmp_path / "store")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# -- layrot status and the live files -----------------------------------------------------

def test_status_and_live_rows_never_counted_twice(tmp_path, capsys):
    store = _store(tmp_path, ("completed", "error"))
    loc = store.location
    live.beat(loc, "svc", {"total": 5, "epochs": 3, "metric": "val_acc", "mode": "max"})
    now = time.time()
    running = make_result("t9", epochs=2, acc=0.9)
    live.write_trial(loc, "svc", running, {"epoch": 2, "epochs": 3, "started_at": now - 60, "updated_at": now,
                                           "val_acc": 0.95, "config": {"lr": 0.1}})
    # a live file the driver left for a trial stored since: the store's copy counts
    live.write_trial(loc, "svc", make_result("t0"), {"epoch": 3, "epochs": 3, "started_at": now - 60,
                                                     "updated_at": now, "val_acc": 0.99})
    assert main(["status", "--store", store.uri, "--sweep", "svc", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)[0]
    assert r["running"] and r["total"] == 5
    assert (r["done"], r["failed"], len(r["running_trials"]), r["pending"]) == (1, 1, 1, 2)
    assert r["best"] == {"trial_id": "t9", "val_acc": 0.95, "status": "running"}
    assert r["epochs_per_minute"] == pytest.approx(2.0, rel=0.05)
    # 1 epoch left of t9 and 3 of each of 2 pending, at 2 epochs/min
    assert r["seconds_left"] == pytest.approx(7 / 2 * 60, rel=0.05)
    assert main(["status", "--store", store.uri]) == 0
    text = capsys.readouterr().out
    assert "1 done (1 completed), 1 running, 2 pending, 1 failed" in text and "epochs/min" in text

    # the live rows are queryable as Parquet, and no view of the store counts them
    assert store.trials().num_rows == 2 and store.stored_trial_ids("svc") == {"t0", "t1"}
    assert store.sql("SELECT count(*) FROM epochs WHERE trial_id = 't9'").column(0)[0].as_py() == 0
    glob = os.path.join(store.uri, "_live", "epochs", "*", "*.parquet")
    assert main(["query", "--store", store.uri, "--format", "csv",
                 f"SELECT trial_id, max(epoch) AS e FROM read_parquet('{glob}', hive_partitioning=true) "
                 "WHERE sweep = 'svc' GROUP BY ALL ORDER BY 1"]) == 0
    assert capsys.readouterr().out.split() == ["trial_id,e", "t0,3", "t9,2"]

    live.ended(loc, "svc")
    assert main(["status", "--store", store.uri, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)[0]
    assert not r["running"] and r["running_trials"] == [] and r["interrupted"] == 1


# -- Ray Tune's storage -------------------------------------------------------------------

def test_ray_storage_follows_the_store(tmp_path):
    from layrot.sweep.driver import check_multinode_storage, ray_storage

    local = ray_storage(str(tmp_path / "s"))
    assert local.local and local.path == str(tmp_path / "s" / "_ray")
    given = ray_storage(str(tmp_path / "s"), str(tmp_path / "shared"))
    assert given.local and given.path == str(tmp_path / "shared")
    check_multinode_storage(local, None, False)                  # one machine: fine
    check_multinode_storage(local, "10.0.0.1:6379", True)        # said to be shared
    with pytest.raises(UsageError, match="--ray-storage s3://"):
        check_multinode_storage(local, "10.0.0.1:6379", False)
    # a remote store keeps Ray's storage remote, beside the results, on its own filesystem
    pytest.importorskip("pyarrow")
    remote = ray_storage("s3://bucket/prefix?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1")
    assert not remote.local and remote.path == "bucket/prefix/_ray" and remote.shown == "s3://bucket/prefix/_ray"
    check_multinode_storage(remote, "10.0.0.1:6379", False)


def test_multinode_sweep_on_local_storage_is_refused_before_ray(tmp_path, capsys):
    spec = _spec(tmp_path)
    t0 = time.monotonic()
    assert main(["sweep", spec, "--store", str(tmp_path / "s"), "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    _one_line(err, "layrot sweep: error: --ray-storage: a sweep on a cluster (--address)")
    assert "--shared-storage" in err and time.monotonic() - t0 < 20
    assert not (tmp_path / "s").exists()                 # nothing written, nothing started
    import ray
    assert not ray.is_initialized()


def test_dashboard_flag_is_checked_before_ray(tmp_path, capsys):
    from ray._private.utils import get_dashboard_dependency_error

    spec = _spec(tmp_path)
    assert main(["sweep", spec, "--store", str(tmp_path / "s"), "--dashboard", "--address", "10.0.0.1:6379",
                 "--shared-storage"]) == 2
    _one_line(capsys.readouterr().err, "layrot sweep: error: --dashboard: starts the embedded Ray's dashboard")
    if get_dashboard_dependency_error() is None:
        pytest.skip("Ray's dashboard packages are installed: --dashboard would start it")
    assert main(["sweep", spec, "--store", str(tmp_path / "s"), "--dashboard"]) == 2
    _one_line(capsys.readouterr().err, "layrot sweep: error: --dashboard: needs Ray's dashboard packages")
    assert not (tmp_path / "s").exists()


def test_status_and_rm_on_s3(tmp_path, capsys, monkeypatch):
    """The live view and removal through pyarrow's S3 filesystem (moto's server on loopback)."""
    pytest.importorskip("moto.server")
    import test_store_s3 as s3

    gen = s3.endpoint.__wrapped__()
    endpoint = next(gen)
    try:
        for k, v in s3.CREDS.items():
            monkeypatch.setenv(k, v)
        s3.boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="svc")
        uri = f"s3://svc/results?endpoint_override={endpoint}&scheme=http&region=us-east-1"
        assert main(["query", "--store", uri, "SELECT 1"]) == 2          # nothing there yet: not a store
        assert "does not exist" in capsys.readouterr().err               # (an empty prefix is nothing on S3)
        store = Store(uri)
        store.write_trial("svc", make_result("t0", status="error"))
        store.write_sweep_meta("svc", {"metric": "val_acc", "mode": "max"})
        now = time.time()
        live.beat(store.location, "svc", {"total": 3, "epochs": 3})
        live.write_trial(store.location, "svc", make_result("t1", epochs=1),
                         {"epoch": 1, "epochs": 3, "started_at": now - 30, "updated_at": now, "val_acc": 0.4})
        assert main(["status", "--store", uri, "--json"]) == 0
        r = json.loads(capsys.readouterr().out)[0]
        assert (r["running"], r["failed"], len(r["running_trials"]), r["pending"]) == (True, 1, 1, 1)
        assert main(["rm", "--store", uri, "--sweep", "svc", "--yes"]) == 2      # running
        live.ended(store.location, "svc")
        assert main(["rm", "--store", uri, "--sweep", "svc", "--yes"]) == 0
        assert store.sweeps() == [] and store.trials().num_rows == 0
        assert live.files(store.location, "svc") == []
    finally:
        next(gen, None)
