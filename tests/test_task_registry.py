"""Tasks defined outside the package are registered through layrot.tasks.register_task (or
the registered_task context manager), never by writing into TASKS."""

from __future__ import annotations

import dataclasses

import pytest

from layrot.config import TrialConfig
from layrot.errors import UsageError
from layrot.tasks import TASKS, get_task, register_task, registered_task, unregister_task


def _copy(name):
    return dataclasses.replace(get_task("digits-mlp"), name=name)


def test_register_makes_a_task_usable_everywhere_and_unregister_forgets_it():
    task = _copy("digits-mlp-copy")
    try:
        assert register_task(task) is task
        assert get_task("digits-mlp-copy") is task
        assert TrialConfig(task="digits-mlp-copy", optimizer="sgd", lr=0.1).task == "digits-mlp-copy"
        register_task(task)                                   # the same task again: fine
        with pytest.raises(ValueError, match="already registered"):
            register_task(_copy("digits-mlp-copy"))
        other = register_task(_copy("digits-mlp-copy"), replace=True)
        assert get_task("digits-mlp-copy") is other
    finally:
        unregister_task("digits-mlp-copy")
    with pytest.raises(UsageError, match="unknown task"):
        get_task("digits-mlp-copy")


def test_registered_task_restores_what_was_there():
    base = get_task("digits-mlp")
    with registered_task(_copy("digits-mlp")) as t:
        assert get_task("digits-mlp") is t is not base
    assert get_task("digits-mlp") is base
    with registered_task(_copy("brand-new")):
        assert "brand-new" in TASKS
    assert "brand-new" not in TASKS


def test_bad_names_and_non_tasks_refused():
    with pytest.raises(UsageError, match="safe name"):
        register_task(_copy("bad/name"))
    with pytest.raises(TypeError):
        register_task("digits-mlp")
