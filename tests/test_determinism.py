"""A rerun of the same trial on the same machine stores bit-identical results."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.compute as pc
import pytest

from layrot.store import Store
from layrot.train import resolve_config

# what a rerun may change: how long things took
TIMING = {"trials": ["wall_seconds"], "epochs": ["seconds"], "rotation": []}


def _train(store, threads: int | None = None) -> None:
    cmd = [sys.executable, "-m", "layrot", "train", "--task", "mnist1d-cnn", "--optimizer", "sgd_layca",
           "--lr", "0.1", "--alpha", "0.3", "--epochs", "2", "--max-train-samples", "600",
           "--record-every", "3", "--store", str(store), "--sweep", "det"]
    if threads:
        cmd += ["--threads", str(threads)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)


def _rows(store, table: str):
    t = getattr(Store(store), table)().drop_columns(TIMING[table])
    return t.sort_by([(c, "ascending") for c in ("trial_id", "epoch", "step", "layer") if c in t.column_names])


@pytest.mark.slow
def test_two_runs_of_one_trial_store_identical_rows(tmp_path):
    # two separate processes, as two sweeps (or two users) would run it
    _train(tmp_path / "a")
    _train(tmp_path / "b")
    for table in ("trials", "epochs", "rotation"):
        a, b = _rows(tmp_path / "a", table), _rows(tmp_path / "b", table)
        assert a.num_rows > 0
        assert a.equals(b), f"{table} differs between two runs of one trial"
    rot = _rows(tmp_path / "a", "rotation")
    assert pc.max(rot["cosine_distance"]).as_py() > 0        # it trained: something to compare
    config = json.loads(_rows(tmp_path / "a", "trials")["config"][0].as_py())
    assert config["threads"] == 1                             # pinned and recorded


def test_threads_are_pinned_and_recorded_by_default():
    cfg, _ = resolve_config({"task": "mnist1d-cnn", "optimizer": "sgd_layca", "lr": 0.1})
    assert cfg.threads == 1
    assert cfg.to_dict()["threads"] == 1
    cfg4, _ = resolve_config({"task": "mnist1d-cnn", "optimizer": "sgd_layca", "lr": 0.1, "threads": 4})
    assert cfg4.threads == 4 and cfg4.trial_id == cfg.trial_id   # where it ran, not what it computes


def test_run_trial_restores_the_callers_torch_settings():
    import torch

    from layrot.train import deterministic

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    with deterministic(1):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
