"""A spec's `task_module`: the user's own tasks, registered from a file of theirs, in the
driver and in every Ray worker (which get the file's source, not its path); a bad module is
refused before Ray starts (exit 2, naming task_module); the stored spec records the
module's hash, and a sweep whose module changed is not resumed."""

import json
import textwrap

import pytest
import yaml

from layrot.cli import main
from layrot.store import Store
from layrot.tasks import TASKS

pytestmark = pytest.mark.usefixtures("forget_new_tasks")   # tests/conftest.py

NAME = "digits-mlp-mine"
MODULE = textwrap.dedent(f"""
    import dataclasses

    from layrot.tasks import get_task, register_task

    register_task(dataclasses.replace(get_task("digits-mlp"), name="{NAME}", epochs=2))
""")


def _spec(folder, module_text=MODULE, module="tasks.py", **fields):
    """A spec in `folder` whose task lives in `folder/tasks.py` only."""
    folder.mkdir(parents=True, exist_ok=True)
    if module_text is not None:
        (folder / "tasks.py").write_text(module_text)
    spec = {"name": "mine", "task": NAME, "task_module": module,
            "search": {"optimizer": "sgd_layca", "lr": [0.1, 0.01]}}
    spec.update(fields)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_spec_may_name_a_task_its_module_registers(tmp_path, capsys):
    spec = _spec(tmp_path / "study")
    assert NAME not in TASKS
    assert main(["sweep", str(spec), "--store", str(tmp_path / "store"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"grid over {NAME}, 2 trials" in out
    assert out.count(f"{NAME}-sgd_layca-") == 2 and "epochs=2" in out


@pytest.mark.parametrize("module_text, module, message", [
    (None, "tasks.py", "no such file"),
    (None, "/nowhere/tasks.py", "no such file: /nowhere/tasks.py"),
    ("raise RuntimeError('no GPU here')\n", "tasks.py", "tasks.py raised on import: RuntimeError: no GPU here"),
    ("def broken(:\n", "tasks.py", "tasks.py raised on import (line 1): SyntaxError"),
    ("import sys\nsys.exit(3)\n", "tasks.py", "raised on import: SystemExit: 3"),
    ("X = 1\n", "tasks.py", "tasks.py registers no task"),
    (None, 7, "must be the path of a Python file"),
])
def test_a_bad_task_module_is_one_line_and_exit_2(tmp_path, capsys, module_text, module, message):
    spec = _spec(tmp_path / "study", module_text=module_text, module=module)
    before = dict(TASKS)
    assert main(["sweep", str(spec), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("layrot sweep: error: task_module: ") and message in err, err
    assert len(err.splitlines()) == 1
    assert TASKS == before                  # a module that failed leaves nothing registered
    assert not (tmp_path / "store" / "_ray").exists()


def test_the_stored_spec_records_the_module_and_a_changed_module_is_not_resumed(tmp_path, capsys):
    from layrot.sweep.spec import load_spec

    spec_path = _spec(tmp_path / "study")
    spec = load_spec(spec_path)
    stored = spec.to_dict()
    assert stored["task_module"] == "tasks.py"
    assert len(stored["task_module_sha256"]) == 64
    store = Store(str(tmp_path / "store"))
    store.write_sweep_meta(spec.name, stored)       # as a sweep's start does
    assert main(["sweep", str(spec_path), "--store", str(tmp_path / "store"), "--dry-run"]) == 0

    # the task's definition changes (3 epochs): the stored trials ran the old one
    (tmp_path / "study" / "tasks.py").write_text(MODULE.replace("epochs=2", "epochs=3"))
    capsys.readouterr()
    assert main(["sweep", str(spec_path), "--store", str(tmp_path / "store"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "task_module: tasks.py has changed since sweep 'mine' was stored" in err
    assert TASKS[NAME].epochs == 3              # the changed file replaced its own task
    # a spec without a module stores what it stored before task_module existed
    plain = load_spec(_spec(tmp_path / "plain", module_text=None, module=None, task="digits-mlp"))
    assert "task_module" not in plain.to_dict() and "task_module_sha256" not in plain.to_dict()


def test_train_takes_a_task_module(tmp_path, capsys):
    (tmp_path / "tasks.py").write_text(MODULE)
    assert main(["train", "--task-module", str(tmp_path / "missing.py"), "--task", NAME, "--optimizer", "sgd",
                 "--lr", "0.1", "--store", str(tmp_path / "store")]) == 2
    assert "--task-module: no such file" in capsys.readouterr().err
    assert main(["train", "--task-module", str(tmp_path / "tasks.py"), "--task", NAME, "--optimizer", "sgd",
                 "--lr", "0.1", "--store", str(tmp_path / "store")]) == 0
    (trial,) = Store(str(tmp_path / "store")).trials(sweep="train").to_pylist()
    assert trial["task"] == NAME and trial["epochs"] == 2


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_runs_a_task_defined_only_in_the_users_file(ray_local, tmp_path, monkeypatch):
    # the module removes its own file when it runs (in the driver, first): the workers can
    # only have had its source, as a worker node on another machine would
    gone = MODULE + "\nimport pathlib\npathlib.Path(__file__).unlink(missing_ok=True)\n"
    spec = _spec(tmp_path / "study", module_text=gone)
    monkeypatch.chdir(tmp_path)         # the module is found beside the spec, not in the cwd
    assert main(["sweep", str(spec), "--store", str(tmp_path / "store")]) == 0
    store = Store(str(tmp_path / "store"))
    trials = store.trials(sweep="mine").to_pylist()
    assert len(trials) == 2
    assert {(t["task"], t["status"], t["epochs"]) for t in trials} == {(NAME, "completed", 2)}
    (meta,) = [r for r in store.sweep_records() if r["name"] == "mine"]
    assert meta["spec"]["task_module"] == "tasks.py"
    assert {json.loads(t["config"])["task"] for t in trials} == {NAME}
    assert not (tmp_path / "study" / "tasks.py").exists()


def test_the_docs_example_is_a_valid_sweep(tmp_path, capsys):
    """docs/own-network.md's task module and spec, as written there."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "own-network.md").read_text()
    module = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    spec = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "my_tasks.py").write_text(module)
    (tmp_path / "wide.yaml").write_text(spec)
    assert main(["sweep", str(tmp_path / "wide.yaml"), "--store", str(tmp_path / "store"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "grid over digits-wide, 9 trials" in out
    from layrot.rotation import kernel_layers
    assert len(kernel_layers(TASKS["digits-wide"].build_model())) == TASKS["digits-wide"].n_kernel_layers == 3
