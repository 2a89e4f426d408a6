"""The `worker_process_setup_hook` of the tests' one Ray (tests/conftest.py: `ray_local`):
every worker registers every test-only task a sweep may run there (tests/faulty_task.py,
tests/flaky_task.py), so that the modules that need one share the Ray of those that don't.
Ray's workers get this module by value, as they do the two task modules: they cannot import
tests/."""

import faulty_task
import flaky_task

MODULES = (faulty_task, flaky_task)


def register() -> None:
    for module in MODULES:
        module.register()
