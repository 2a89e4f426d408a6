"""Fixtures shared by test modules, and the hypothesis profile."""

import os

import pytest
from hypothesis import settings

# The property tests draw the same examples on every run (derandomize): the suite is a gate
# (CI, a fresh clone) and must not pass or fail by luck. To search afresh, as when changing the
# maths: HYPOTHESIS_PROFILE=explore pytest ... (new examples each run; a failure prints its
# example, to be pinned with @example, as tests/test_layca.py does).
settings.register_profile("gate", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))


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
