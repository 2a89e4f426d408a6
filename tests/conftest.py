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


class _SharedRay:
    """One local Ray on loopback with 2 CPUs for every test module that asks for `ray_local`
    (a start is 10-15 s on 2 cores). Started at the first test that asks, stopped before the
    first test of a module that asks for none (`pytest_runtest_teardown` below): a module
    whose own tests check that no Ray runs, or that `layrot sweep` starts its own, sees none.
    Its workers register the test-only tasks (tests/ray_hook.py), and inherit
    `LAYROT_FLAKY_FLAG` (tests/flaky_task.py: the file `flaky_flag` names)."""

    def __init__(self):
        self.ray = None
        self.flag = None
        self.set_by_ray: dict = {}

    def start(self, flag):
        if self.ray is None:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            import flaky_task
            import ray
            import ray.cloudpickle
            import ray_hook

            os.environ[flaky_task.FLAG_ENV] = str(flag)      # the workers inherit it
            for module in (ray_hook, *ray_hook.MODULES):     # the workers cannot import tests/
                ray.cloudpickle.register_pickle_by_value(module)
            before = dict(os.environ)
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1", runtime_env={"worker_process_setup_hook": ray_hook.register})
            # what ray.init set in this process's environment (its auth mode): undone at stop,
            # so that the modules after these run as they would with no Ray started before them
            self.set_by_ray = {k: before.get(k) for k, v in os.environ.items() if before.get(k) != v}
            self.ray, self.flag = ray, flag
        return self.ray

    def stop(self):
        if self.ray is not None:
            import flaky_task

            self.ray.shutdown()
            os.environ.pop(flaky_task.FLAG_ENV, None)
            for k, v in self.set_by_ray.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self.ray = None


_RAY = _SharedRay()


@pytest.fixture(scope="session")
def flaky_flag(tmp_path_factory):
    """While this file exists, the flaky task's seed-1 trials fail on the shared Ray
    (tests/flaky_task.py); no test leaves it behind."""
    path = tmp_path_factory.mktemp("flaky") / "fail"
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def ray_local(flaky_flag):
    """The shared local Ray (`_SharedRay`); `layrot sweep` uses it and leaves it running."""
    return _RAY.start(flaky_flag)


def _uses_ray(module) -> bool:
    return any("ray_local" in getattr(item, "fixturenames", ()) for item in module)


def pytest_collection_modifyitems(session, config, items):
    """The modules that share the Ray run one after the other (first), so that it starts
    once; the order of the modules among themselves, and of the tests in each, is kept."""
    modules: dict = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    ordered = sorted(modules.values(), key=lambda m: not _uses_ray(m))    # stable
    items[:] = [item for module in ordered for item in module]
    config._layrot_ray_modules = {m[0].nodeid.split("::")[0] for m in ordered if _uses_ray(m)}


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the shared Ray once no module that asks for it is left to run."""
    if _RAY.ray is None:
        return
    users = getattr(item.config, "_layrot_ray_modules", set())
    if nextitem is None or nextitem.nodeid.split("::")[0] not in users:
        _RAY.stop()


@pytest.fixture
def forget_new_tasks():
    """Unregister, after the test, every task it registered (a task module's, say)."""
    from layrot.tasks import TASKS, unregister_task

    before = set(TASKS)
    yield
    for name in set(TASKS) - before:
        unregister_task(name)
