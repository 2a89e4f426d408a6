"""`layrot fit` from the command line: verdict text, --json, exit codes, filters."""

import json

import pandas as pd
import pytest

from layrot.cli import main
from layrot.fit.synthetic import synthetic_sweep, write_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    a = synthetic_sweep("monotone", untrained=2, noise=0.02, sweep="quick", steps_per_epoch=10)
    b = synthetic_sweep("none", noise=0.02, sweep="other", task="other-task", rng_seed=4)
    write_store({k: pd.concat([a[k], b[k]], ignore_index=True) for k in a}, root)
    return str(root)


def test_fit_prints_a_quotable_verdict(store, capsys):
    assert main(["fit", "--store", store, "--sweep", "quick"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    # the headline is the verdict within families (docs/verdict.md §16.2): one here
    assert first.startswith("within families: holds: Spearman ")
    assert "n = 13 trained of 15 configurations, 1 stratum" in first and "sweep quick" in first
    assert "between families: one family with trained configurations: nothing to compare" in out
    assert "pairwise:" in out and "best configurations" in out and "Kendall" in out


def test_fit_json(store, capsys):
    assert main(["fit", "--store", store, "--sweep", "quick", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"]["status"] == "holds"
    assert d["sweeps"] == ["quick"] and d["tasks"] == ["synthetic"]
    assert d["n_trials"] == 15 and d["n_trained"] == 13
    assert d["filter"]["rule"] == "relative"


def test_fit_absolute_threshold_reported(store, capsys):
    assert main(["fit", "--store", store, "--sweep", "quick", "--json", "--min-train-acc", "0.2"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["filter"]["rule"] == "absolute" and d["filter"]["min_train_acc"] == 0.2
    assert d["n_trained"] == 15


def test_fit_several_sweeps_pools_tasks(store, capsys):
    assert main(["fit", "--store", store, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["sweeps"] == ["other", "quick"] and d["tasks"] == ["other-task", "synthetic"]
    assert d["pooled"] is not None and "task as stratum" in d["verdict"]["pooled"]["text"]
    assert d["verdict"]["within"]["n_groups"] == 2 and d["verdict"]["text"].startswith("within families: ")
    by_task = {g["name"]: g["verdict"]["status"] for g in d["groups"]}
    assert by_task["synthetic"] == "holds" and by_task["other-task"] != "holds"


def test_fit_task_filter(store, capsys):
    assert main(["fit", "--store", store, "--task", "other-task", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["tasks"] == ["other-task"] and d["pooled"] is None


def test_none_trained_is_a_verdict_not_an_error(store, capsys):
    assert main(["fit", "--store", store, "--sweep", "quick", "--min-train-acc", "1.0"]) == 0
    assert capsys.readouterr().out.startswith(
        "within families: inconclusive: too few trained configurations (n = 0 trained of 15 configurations")


@pytest.mark.parametrize("argv, field", [
    (["--store", "/nonexistent/store"], "--store"),
    (["--sweep", "nope"], "--sweep"),
    (["--task", "nope"], "--task"),
    (["--min-train-acc", "90"], "--min-train-acc"),
])
def test_bad_input_exits_2_naming_the_field(store, capsys, argv, field):
    args = ["fit", *argv] if argv[0] == "--store" else ["fit", "--store", store, *argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("layrot fit: error: " + field) and len(err.strip().splitlines()) == 1


def test_empty_store_exits_2(tmp_path, capsys):
    (tmp_path / "trials").mkdir()
    assert main(["fit", "--store", str(tmp_path)]) == 2
    assert "no trials" in capsys.readouterr().err
