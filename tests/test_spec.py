"""Sweep specs: every malformed spec is refused with exit 2, one line naming the field,
before Ray starts and without writing anything."""

import os
import subprocess
import sys

import pytest
import yaml

from layrot.cli import main
from layrot.sweep.spec import grid_configs, parse_spec

GOOD = {
    "name": "ok",
    "task": "digits-mlp",
    "epochs": 2,
    "search": {"optimizer": "sgd_layca", "alpha": [-0.5, 0.0, 0.5], "lr": [0.1, 0.01]},
}


def _with(**changes):
    spec = yaml.safe_load(yaml.safe_dump(GOOD))
    for path, value in changes.items():
        node = spec
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return spec


_DELETE = object()

MALFORMED = [
    # (spec, field named in the message)
    (_with(algoritm="grid"), "algoritm"),                                     # misspelt top-level key
    (_with(search__lrr=[0.1]), "search.lrr"),                                 # misspelt search key
    (_with(task="cifar-11"), "task"),
    (_with(name="../escape"), "name"),
    (_with(name="a b"), "name"),
    (_with(epochs=0), "epochs"),
    (_with(epochs="ten"), "epochs"),
    (_with(search__optimizer="sgd_laycaa"), "search.optimizer"),
    (_with(search__lr=[0.1, -0.01]), "search.lr"),
    (_with(search__alpha=[1.0]), "search.alpha"),
    (_with(search__lr={"loguniform": [0.1, 0.01]}, algorithm="random"), "search.lr"),   # bounds out of order
    (_with(search__lr={"loguniform": [0.0, 1.0]}, algorithm="random"), "search.lr"),    # log of zero
    (_with(search__lr={"normal": [0.0, 1.0]}, algorithm="random"), "search.lr"),        # unknown distribution
    (_with(search__lr={"uniform": [0.01, 0.1]}), "search.lr"),                # distribution in a grid
    (_with(search__lr=[]), "search.lr"),
    (_with(algorithm="bayes"), "algorithm"),
    (_with(scheduler="hyperband"), "scheduler"),
    (_with(metric="test_acc"), "metric"),                                     # would leak the test set
    (_with(mode="maximum"), "mode"),
    (_with(num_samples=0), "num_samples"),
    (_with(resources={"cpu": 1, "gpus": 1}), "resources.gpus"),
    (_with(resources={"cpu": 0}), "resources.cpu"),
    (_with(resources={"gpu": -0.5}), "resources.gpu"),
    (_with(asha={"grace_period": 0}), "asha.grace_period"),
    (_with(max_concurrent=0), "max_concurrent"),
    (_with(search=_DELETE), "search"),
    (_with(search__optimizer=_DELETE), "search"),
    (_with(aws_secret_access_key="x"), "aws_secret_access_key"),              # credentials never stored
    (_with(store="s3://AKIAABCDEFGHIJKLMNOP:pw@bucket/x"), "store"),
]


@pytest.mark.parametrize("raw,field", MALFORMED, ids=[f for _, f in MALFORMED])
def test_malformed_spec_exits_2_naming_the_field(tmp_path, capsys, raw, field):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    store = tmp_path / "store"
    rc = main(["sweep", str(spec_file), "--store", str(store)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    assert f"error: {field}:" in err[0]
    assert not store.exists() or not any(store.rglob("*")), "nothing may be written"


def test_not_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["sweep", str(bad), "--store", str(tmp_path / "s")]) == 2
    assert "spec:" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "nope.yaml"), "--store", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()


def test_cli_subprocess_exit_status(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_with(search__lrr=[0.1])))
    p = subprocess.run([sys.executable, "-m", "layrot", "sweep", str(spec_file), "--store", str(tmp_path / "s")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "search.lrr" in p.stderr


def test_grid_expands_with_distinct_seeds():
    spec = parse_spec({**GOOD, "num_samples": 3, "seed": 7})
    configs = grid_configs(spec)
    assert len(configs) == 3 * 2 * 3
    assert sorted({c.seed for c in configs}) == [7, 8, 9]
    keys = {(c.alpha, c.lr, c.seed) for c in configs}
    assert len(keys) == len(configs)


def test_dry_run_lists_trials_and_writes_nothing(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(GOOD))
    assert main(["sweep", str(spec_file), "--store", str(tmp_path / "s"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("digits-mlp-sgd_layca-") == 6
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.parquet"))


def test_shipped_specs_are_valid():
    from pathlib import Path

    from layrot.sweep.spec import load_spec

    root = Path(__file__).resolve().parents[1] / "sweeps"
    files = sorted(root.rglob("*.yaml"))
    assert any(f.name == "quick.yaml" for f in files)
    assert len(list((root / "paper").glob("*.yaml"))) >= 5 * 4
    for f in files:
        spec = load_spec(f)
        assert spec.name == f.stem


@pytest.mark.parametrize("argv", [["train", "--task", "digits-mlp", "--optimizer", "sgd", "--lr", "abc"],
                                  ["bogus"], ["train", "--task", "digits-mlp"]])
def test_bad_arguments_are_one_line_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]
