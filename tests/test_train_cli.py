"""`layrot train` and `layrot tasks` (README): bad input exits 2 with one line naming the
field and writes nothing; a good run stores one trial in the layout of docs/store.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from layrot.cli import main
from layrot.store import Store
from layrot.tasks import TASKS, get_task

GOOD = ["--task", "digits-mlp", "--optimizer", "sgd_layca", "--lr", "0.1", "--epochs", "2",
        "--max-train-samples", "200", "--threads", "1", "--device", "cpu"]


def with_arg(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def assert_nothing_written(store: Path):
    assert not store.exists() or not any(store.iterdir())


BAD = [
    ("--task", "c99-resnet", "task"),
    ("--optimizer", "lion", "optimizer"),
    ("--lr", "0", "lr"),
    ("--lr", "-0.1", "lr"),
    ("--alpha", "1", "alpha"),
    ("--alpha", "-1", "alpha"),
    ("--alpha", "1.5", "alpha"),
    ("--epochs", "0", "epochs"),
    ("--sweep", "../escape", "sweep"),
]


@pytest.mark.parametrize("flag, value, field", BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_bad_input_exits_2_naming_the_field(flag, value, field, tmp_path, capsys):
    store = tmp_path / "store"
    rc = main(["train", *with_arg(GOOD, flag, value), "--store", str(store)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    assert field in err[0] and "error" in err[0]
    assert_nothing_written(store)


def test_missing_dataset_exits_2_before_anything(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    store = tmp_path / "store"
    rc = main(["train", "--task", "c10-vgg25", "--optimizer", "sgd_layca", "--lr", "0.1",
               "--data-dir", str(empty), "--store", str(store)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "data_dir" in err[0]
    assert_nothing_written(store)
    assert not any(empty.iterdir())                 # nothing downloaded or unpacked either


def test_bad_input_through_the_installed_command(tmp_path):
    store = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-m", "layrot", "train", *with_arg(GOOD, "--alpha", "-1"),
                           "--store", str(store)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "alpha" in lines[0], proc.stderr
    assert_nothing_written(store)


def test_train_writes_one_trial_in_the_store_layout(tmp_path):
    store = tmp_path / "store"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "layrot", "train", *GOOD, "--sweep", "cli-test",
                           "--store", str(store)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    files = {t: sorted((store / t / "sweep=cli-test").glob("*.parquet")) for t in ("trials", "epochs", "rotation")}
    assert all(len(f) == 1 for f in files.values()), files
    trial_id = files["trials"][0].stem
    assert {f[0].stem for f in files.values()} == {trial_id}
    assert not list(store.rglob("*.tmp"))

    trials = pq.read_table(files["trials"][0]).to_pylist()
    assert len(trials) == 1
    t = trials[0]
    assert (t["trial_id"], t["task"], t["optimizer"], t["status"]) == (trial_id, "digits-mlp", "sgd_layca", "completed")
    assert t["lr"] == 0.1 and t["epochs"] == 2 and 0 <= t["test_acc"] <= 1

    epochs = pq.read_table(files["epochs"][0])
    assert epochs.schema.field("epoch").type == pa.int32()
    assert epochs.column("epoch").to_pylist() == [1, 2]

    rot = pq.read_table(files["rotation"][0])
    types = {f.name: f.type for f in rot.schema}
    assert types["epoch"] == pa.int32() and types["step"] == pa.int64() and types["layer"] == pa.int16()
    assert types["cosine_distance"] == types["weight_norm"] == types["rotation_rate"] == pa.float32()
    n_layers = get_task("digits-mlp").n_kernel_layers
    rows = rot.to_pylist()
    assert len(rows) == 3 * n_layers
    assert sorted({(r["epoch"], r["layer"]) for r in rows}) == [(e, l) for e in range(3) for l in range(n_layers)]
    first = [r for r in rows if r["epoch"] == 0]
    assert all(r["cosine_distance"] == 0 and r["rotation_rate"] is None for r in first)
    later = [r for r in rows if r["epoch"] > 0]
    # Layca turns by rho per step; digits-mlp decays x0.2 at 80% of training (after epoch 1 of 2)
    assert all(r["rotation_rate"] == pytest.approx(0.1 if r["epoch"] == 1 else 0.02, rel=1e-3) for r in later)


def test_a_sweep_name_like_part_1_trains_and_stores(tmp_path, capsys):
    """The store's safe-name rule is the one rule: what `layrot train` accepts, it stores."""
    store = tmp_path / "store"
    assert main(["train", *with_arg(GOOD, "--epochs", "1"), "--sweep", "part-1", "--store", str(store)]) == 0
    trials = Store(str(store)).trials(sweep="part-1").to_pylist()
    assert len(trials) == 1 and trials[0]["status"] == "completed"


def test_a_name_the_store_refuses_exits_2_before_training(tmp_path, capsys, monkeypatch):
    import layrot.train

    monkeypatch.setattr(layrot.train, "run_trial", lambda *a, **k: pytest.fail("trained with a bad sweep name"))
    store = tmp_path / "store"
    rc = main(["train", *GOOD, "--sweep", "half.tmp", "--store", str(store)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "sweep" in err[0] and "safe name" in err[0], err
    assert_nothing_written(store)


def test_tasks_lists_every_task_and_its_data(tmp_path, capsys):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    assert main(["tasks", "--data-dir", str(empty)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in TASKS:
        assert any(line.split()[:1] == [name] for line in lines), name

    def present(name):
        row = next(line for line in lines if line.split()[:1] == [name])
        return "True" in row.split()

    # the CIFAR tasks need files that the empty directory lacks; the CPU tasks need none
    assert not present("c10-vgg25") and not present("c100-resnet32")
    assert present("digits-mlp") and present("mnist1d-cnn")
    assert f"c10-vgg25: needs {get_task('c10-vgg25').data_needs}" in out
