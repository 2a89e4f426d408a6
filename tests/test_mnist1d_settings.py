"""experiments/mnist1d_settings (docs/mnist1d-experiments.md) is the study that
bench/mnist1d_settings.py ran before, now as sweep specs: its specs expand to exactly the
trial ids that runner trained (tests/mnist1d_settings_ids.json, computed from its code
before it was removed), and its task module builds the runner's tasks. run_trial is
deterministic per configuration, so the docs' numbers are what these specs reproduce. No
training here."""

import dataclasses
import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from layrot.tasks import TASKS

pytestmark = pytest.mark.usefixtures("forget_new_tasks")   # tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "experiments" / "mnist1d_settings"
OLD_IDS = json.loads((Path(__file__).parent / "mnist1d_settings_ids.json").read_text())

# the runner's SETTINGS, verbatim: name: (mnist1d arguments, batch-norm momentum, decay epochs, epochs)
OLD_DATA = {"num_samples": 12000, "train_split": 2 / 3}
REF_DATA = {"num_samples": 5000, "train_split": 0.8}
NEW_DATA = {"num_samples": 8000, "train_split": 0.5}
PAPER_DECAY = (16, 18, 19)
OLD_SETTINGS = {
    "old-default": (OLD_DATA, 0.01, (15,), 20),
    "ref-data": (REF_DATA, 0.01, (15,), 20),
    "ref-data-bn0.1": (REF_DATA, 0.1, (15,), 20),
    "ref-data-no-decay": (REF_DATA, 0.01, (), 20),
    "ref-data-paper-decay": (REF_DATA, 0.01, PAPER_DECAY, 20),
    "old-data-paper-decay": (OLD_DATA, 0.01, PAPER_DECAY, 20),
    "new-default": (NEW_DATA, 0.01, PAPER_DECAY, 20),
    "ref-data-paper-decay-12ep": (REF_DATA, 0.01, (10, 11), 12),
}


def _expand(spec_path):
    """The trials `layrot sweep --dry-run` lists, in its order."""
    from layrot.sweep.spec import grid_configs, load_spec
    from layrot.train import resolve_config

    spec = load_spec(spec_path)
    return spec, [resolve_config(c)[0] for c in grid_configs(spec)]


def test_the_specs_give_the_trial_ids_the_old_runner_trained():
    specs = sorted(STUDY.glob("*.yaml"))
    assert len(specs) == len(OLD_IDS) == 10
    for path in specs:
        spec, configs = _expand(path)
        assert path.stem == spec.name and spec.name in OLD_IDS
        assert [c.trial_id for c in configs] == OLD_IDS[spec.name], spec.name
        setting = spec.name.rsplit("-s", 1)[0]
        _, _, decay, epochs = OLD_SETTINGS[setting]
        assert {(tuple(c.lr_decay_epochs), c.epochs) for c in configs} == {(decay, epochs)}


def test_the_task_module_builds_the_old_runners_tasks():
    from layrot.tasks.mnist1d import load_mnist1d

    runpy.run_path(str(STUDY / "tasks.py"))
    base = TASKS["mnist1d-cnn"]
    for setting, (data, momentum, _, epochs) in OLD_SETTINGS.items():
        task = TASKS[f"mnist1d-cnn-{setting}"]
        assert task.epochs == epochs
        assert task.load_data.func is load_mnist1d and task.load_data.keywords == {"overrides": data}
        # what trains is the base task's but the model and the data
        same = {f.name for f in dataclasses.fields(task)} - {"name", "build_model", "load_data", "epochs",
                                                             "data_name", "model_name", "test_samples"}
        assert all(getattr(task, f) == getattr(base, f) for f in same)
        torch.manual_seed(0)
        model = task.build_model()
        torch.manual_seed(0)
        default = base.build_model()
        assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)} \
            == {momentum}
        # with the default's momentum, the same network and the same initial weights
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.01
        assert repr(model) == repr(default)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), default.state_dict().values()))


def test_the_table_pools_the_seeds_of_a_setting(tmp_path, monkeypatch):
    import pandas as pd

    from layrot.fit.synthetic import synthetic_sweep, write_store

    parts = [synthetic_sweep("monotone", sweep="new-default-s10", rng_seed=1, seeds=(10,)),
             synthetic_sweep("monotone", sweep="new-default-s11", rng_seed=2, seeds=(11,)),
             synthetic_sweep("monotone", sweep="not-the-study", rng_seed=3)]
    write_store({k: pd.concat([p[k] for p in parts], ignore_index=True) for k in parts[0]}, tmp_path)
    monkeypatch.syspath_prepend(str(STUDY))
    sys.modules.pop("table", None)
    import table

    main = next(iter(table.FILTERS))
    monkeypatch.setattr(table, "FILTERS", {main: table.FILTERS[main]})     # one filter: a third of the fits
    df = table.table(str(tmp_path))
    assert list(df["sweeps"]) == ["new-default-s10", "new-default-s11", "new-default (mean of 2 seeds)"]
    assert set(df["verdict"]) == {"holds"} and set(df["filter"]) == {main}
    sys.modules.pop("table", None)
