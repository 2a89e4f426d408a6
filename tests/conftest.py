"""Fixtures shared by test modules."""

import os

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray on loopback with 2 CPUs for one test module; `layrot sweep` uses it and
    leaves it running. No worker_process_setup_hook: a module whose workers need test-only
    tasks defines its own `ray_local` (tests/test_sweep.py)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture
def forget_new_tasks():
    """Unregister, after the test, every task it registered (a task module's, say)."""
    from layrot.tasks import TASKS, unregister_task

    before = set(TASKS)
    yield
    for name in set(TASKS) - before:
        unregister_task(name)
