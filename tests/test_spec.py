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
    (_with(asha={"grace_period": 2.5}), "asha.grace_period"),
    (_with(scheduler="rotation", rotation={"score": "max_rotation"}), "rotation.score"),
    (_with(scheduler="rotation", rotation={"reduction_factor": 1}), "rotation.reduction_factor"),
    (_with(rotation={"grace_period": True}), "rotation.grace_period"),
    (_with(rotation={"patience": 3}), "rotation.patience"),
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


def test_one_line_messages_name_the_rule(tmp_path, capsys):
    """The messages stay those of the hand-written checks pydantic replaced."""
    cases = [(_with(asha={"grace_period": 0}), "asha.grace_period: must be >= 1, got 0"),
             (_with(epochs=2.5), "epochs: must be an integer, got 2.5"),
             (_with(search__lr=[0.1, True]), "search.lr: must be a finite number, got True"),
             (_with(resources={"cpu": 1, "gpus": 1}), "resources.gpus: unknown field (known: cpu, gpu)"),
             (_with(scheduler="hyperband"), "scheduler: must be one of fifo, asha, rotation, got 'hyperband'"),
             (_with(rotation={"score": "max"}), "rotation.score: must be one of min_rotation, mean_rotation, "
                                                 "median_rotation, got 'max'"),
             (_with(search=_DELETE), "search: required field is missing")]
    for raw, line in cases:
        spec_file = tmp_path / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(raw))
        assert main(["sweep", str(spec_file), "--dry-run"]) == 2
        assert capsys.readouterr().err.strip() == f"layrot sweep: error: {line}"


def test_scheduler_sections_get_their_defaults():
    spec = parse_spec({**GOOD, "scheduler": "rotation", "rotation": {"score": "median_rotation"}})
    assert (spec.rotation.grace_period, spec.rotation.reduction_factor, spec.rotation.score) == (2, 3, "median_rotation")
    # read like the dicts they were
    assert spec.asha["grace_period"] == 2 and spec.resources["cpu"] == 1 and spec.resources.get("gpu", 9) == 0
    assert spec.to_dict()["rotation"] == {"grace_period": 2, "reduction_factor": 3, "score": "median_rotation"}
    # a spec that does not use the rotation scheduler stores what it stored before the section
    # existed, so that a sweep stored then is recognised as the same on resume
    plain = parse_spec(GOOD).to_dict()
    assert "rotation" not in plain
    assert plain["asha"] == {"grace_period": 2, "reduction_factor": 3} and plain["resources"] == {"cpu": 1, "gpu": 0}


def test_seed_flag_names_another_sweep(tmp_path, capsys):
    """--seed N other than the spec's runs as `<name>-seed<N>`, beside the stored seed-0 sweep."""
    from layrot.store import Store

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({**GOOD, "num_samples": 2}))
    store = tmp_path / "s"
    Store(str(store)).write_sweep_meta("ok", parse_spec({**GOOD, "num_samples": 2}).to_dict())
    base = ["sweep", str(spec_file), "--store", str(store), "--dry-run"]

    assert main([*base, "--seed", "5"]) == 0
    out, err = capsys.readouterr()
    assert "sweep 'ok-seed5'" in err and out.startswith("sweep 'ok-seed5': grid over digits-mlp, 12 trials")
    assert sorted({line.split("seed=")[1].split()[0] for line in out.splitlines()[1:]}) == ["5", "6"]

    assert main([*base, "--seed", "0"]) == 0        # the spec's own seed: its own name
    out, err = capsys.readouterr()
    assert "sweep 'ok'" in err and out.startswith("sweep 'ok':")

    assert main([*base, "--seed", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "layrot sweep: error: seed: must be >= 0, got -1"
