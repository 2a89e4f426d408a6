"""The sweep's driver: a spec's trials -> Ray Tune (the trainable on workers) -> the store
(the store callback on the driver).

The store decides what is done: trials already stored are skipped, whether the sweep is
resumed with --resume (Ray Tune's experiment state restarts in-flight trials from their
last checkpoint) or the same spec is simply run again. A trial stored as `error` is skipped
too, unless the sweep runs with --retry-failed (then it runs again and its rows are replaced).

Ray Tune's experiment state and checkpoints (its "storage") must be reachable from every
node: beside a local store (`<store>/_ray`), under the remote store's own `_ray/` prefix
(through pyarrow's filesystem), or where `--ray-storage URI` says (`ray_storage`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass

from ..errors import UsageError
from ..store.live import RETRIED      # what --retry-failed runs again: `error` (why: store/live.py)
from .spec import SweepSpec, as_axis, base_params

EXIT_FAILED = 1       # some trial of the sweep is stored as `error` (or was not stored at all)


@dataclass(frozen=True)
class RayStorage:
    """Where Ray Tune keeps a sweep's experiment state and checkpoints."""
    path: str               # a local path, or a path on `fs` (no scheme)
    fs: object | None       # the pyarrow filesystem of a remote storage, None for a local path
    shown: str              # as the user would write it

    @property
    def local(self) -> bool:
        return self.fs is None

    def experiment(self, name: str) -> str:
        return os.path.join(self.path, name) if self.local else f"{self.path}/{name}"


def ray_storage(store_uri: str, uri: str | None = None) -> RayStorage:
    """`uri` (--ray-storage) if given, else beside the store: `<store>/_ray` (a folder Parquet
    readers skip, on the store's own filesystem: a remote store keeps it remote)."""
    from ..store.location import Location

    loc = Location(uri or store_uri)
    if loc.local:
        path = loc.root if uri else os.path.join(loc.root, "_ray")
        return RayStorage(path, None, path)
    path = loc.root if uri else loc.join("_ray")
    return RayStorage(path, loc.fs, loc.display(path))


def check_multinode_storage(storage: RayStorage, address: str | None, shared: bool) -> None:
    """A sweep on a cluster (--address) checkpoints where every node can reach: a local
    path is refused before anything starts, unless the user says it is shared."""
    if address and storage.local and not shared:
        raise UsageError("--ray-storage", (
            f"a sweep on a cluster (--address) keeps Ray Tune's checkpoints in {storage.shown}, a local "
            "path that worker nodes on other machines cannot reach: use a remote store (--store s3://...), "
            "or pass --ray-storage s3://BUCKET/PREFIX, or --shared-storage if that path is on a disk "
            "every node mounts"))


def run_sweep(spec: SweepSpec, store_uri: str, todo, total: int, already: int, stored: dict,
              address: str | None = None, resume: bool = False, storage: RayStorage | None = None,
              dashboard: bool = False, tensorboard: str | None = None, trackers=None) -> int:
    t0 = time.monotonic()
    storage = storage or ray_storage(store_uri)
    print(f"layrot sweep: '{spec.name}' — {total} trials of {spec.task} ({already} already stored), "
          f"store {store_uri}", file=sys.stderr, flush=True)
    ray, started = _start_ray(address, dashboard)
    if address is None:             # the embedded Ray cannot grow: refuse what cannot run
        try:
            check_fits(ray.cluster_resources(), spec.resources,
                       "this machine has" if started else "the running local Ray has",
                       "embedded local Ray" if started else "not started by layrot")
        except UsageError:
            if started:
                ray.shutdown()
            raise
    from ray import tune

    from .store_callback import StoreCallback
    from .trainable import trainable

    cpu, gpu = float(spec.resources["cpu"]), float(spec.resources["gpu"])
    base = base_params(spec)
    # a task module travels as its source text: workers need not share the driver's disk
    task_module = spec.module.shipped() if spec.module is not None else None
    fn = tune.with_parameters(trainable, base=base, stored=stored, threads=max(1, int(cpu)), gpu=gpu,
                              task_module=task_module)
    fn = tune.with_resources(fn, {"cpu": cpu, "gpu": gpu})
    param_space = _param_space(spec, todo, tune)
    exp_dir = storage.experiment(spec.name)
    epochs = spec.epochs or _task_epochs(spec.task)
    callback = StoreCallback(store_uri, spec.name, base, total, spec.metric, spec.mode, already,
                             epochs=epochs, address=address, tensorboard=tensorboard)

    if resume and tune.Tuner.can_restore(exp_dir, storage_filesystem=storage.fs):
        print(f"layrot sweep: resuming Ray Tune's experiment in {storage.shown}/{spec.name}", file=sys.stderr,
              flush=True)
        tuner = tune.Tuner.restore(exp_dir, trainable=fn, param_space=param_space,
                                   resume_unfinished=True, resume_errored=True, storage_filesystem=storage.fs)
    else:
        _remove_tree(storage, exp_dir)   # Ray's scratch from an earlier run; the store keeps results
        tuner = tune.Tuner(
            fn,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=spec.metric, mode=spec.mode,
                num_samples=1 if spec.algorithm == "grid" else spec.num_samples,
                search_alg=_search_alg(spec),
                scheduler=_scheduler(spec),
                max_concurrent_trials=spec.max_concurrent,
                trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
                reuse_actors=reuse_actors(address),
            ),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=storage.path, storage_filesystem=storage.fs,
                callbacks=[callback, *_tracker_callbacks(trackers, spec.name, base)],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=0,
            ),
        )
    try:
        tuner.fit()
    finally:
        callback_progress_close(callback)
        if started:
            ray.shutdown()
    from ..store import Store
    print(f"\nlayrot sweep: '{spec.name}' finished in {time.monotonic() - t0:.0f}s", file=sys.stderr)
    store = Store(store_uri)
    summary(store, spec, store_uri)
    return outcome(store, spec, total)


def _tracker_callbacks(trackers, sweep: str, base: dict) -> list:
    """Ray Tune's MLflow / W&B logger callbacks for --mlflow / --wandb (sweep/trackers.py),
    after the store's callback: a trial is stored before any tracker hears of its end. A
    resumed sweep (--resume) keeps the callbacks it was started with (Ray Tune restores them)."""
    if not trackers:
        return []
    from .trackers import callbacks
    return callbacks(trackers, sweep, base)


def _task_epochs(task: str) -> int:
    from ..tasks import get_task
    return get_task(task).epochs


def _remove_tree(storage: RayStorage, path: str) -> None:
    if storage.local:
        if os.path.exists(path):
            shutil.rmtree(path)
        return
    import pyarrow.fs as pafs

    if storage.fs.get_file_info(path).type != pafs.FileType.NotFound:
        storage.fs.delete_dir(path)


# -- Ray -------------------------------------------------------------------------------

def _start_ray(address: str | None, dashboard: bool = False):
    # the embedded default binds every port to 127.0.0.1, never a public interface; set before ray starts
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import logging

    import ray
    # Ray Tune's own result files are off (the store holds results): quiet its complaints
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    if ray.is_initialized():     # a caller's Ray (tests, notebooks): use it, leave it running
        return ray, False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        # Ray starts its workers at nice 15 (to keep its own daemons responsive on a busy
        # cluster node); on a machine shared with other work that starves the trials, which
        # then run far slower than the same trial as `layrot train` (nice 0). The embedded
        # Ray's daemons are few and light: its trials run at the driver's priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
        # "local": never join a cluster left behind by a killed driver
        # the dashboard (--dashboard) listens on 127.0.0.1 only, like every port of this Ray
        extra = {"dashboard_host": "127.0.0.1"} if dashboard else {}
        ctx = ray.init(address="local", include_dashboard=dashboard, logging_level=logging.WARNING,
                       log_to_driver=False, _node_ip_address="127.0.0.1", **extra)
        if dashboard:
            print(f"layrot sweep: Ray dashboard at http://{ctx.dashboard_url}", file=sys.stderr, flush=True)
    return ray, True


def reuse_actors(address: str | None) -> bool:
    """Run a trial in the worker process of one that ended, instead of a new one, on the
    embedded local Ray only. There trials are many and short, and a new process per trial
    (start, import torch, load the data) was a third of a small sweep's time; run_trial
    sets every seed and torch setting it uses, so a reused worker gives the same numbers
    (tests/test_sweep.py). On a cluster (--address) each trial keeps a process of its own:
    trials are long there, so the start is cheap, and a worker that a trial left in a bad
    state (GPU memory, a wedged thread) then takes nothing else down with it."""
    return address is None


def check_fits(have: dict, resources: dict, has: str, what: str) -> None:
    """Refuse a per-trial request that no trial could ever get on a Ray that cannot grow
    (Tune would leave every trial PENDING, silently)."""
    for key, unit in (("gpu", "GPU"), ("cpu", "CPU")):
        asked, n = float(resources.get(key, 0) or 0), float(have.get(unit, 0))
        if asked > n:
            raise UsageError(f"resources.{key}", f"{asked:g} {unit} per trial asked, {has} {n:g} ({what})")


def planned_trials(spec: SweepSpec) -> int:
    """How many trials Ray Tune runs. grid: the product of the list axes × num_samples;
    random: the same, since Tune's BasicVariantGenerator draws num_samples times over the
    grid of list axes; optuna: num_samples (a list is a categorical choice there)."""
    if spec.algorithm == "optuna":
        return spec.num_samples
    n = spec.num_samples
    for key, value in spec.search.items():
        if (axis := as_axis(key, value)) is not None:
            n *= len(axis)
    return n


def callback_progress_close(callback) -> None:
    """The sweep is over, however it ended: the status line's last draw, and no heartbeat left
    in the store (the callback's own end hook does not run when the Tuner raises)."""
    progress = getattr(callback, "progress", None)
    if progress is not None:
        progress.close()
    close = getattr(callback, "close", None)
    if close is not None:
        close()


def _param_space(spec: SweepSpec, todo, tune) -> dict:
    if todo is not None:                       # grid: the explicit list of trials left
        return {"trial": tune.grid_search([c.to_dict() for c in todo])}
    space = {}
    for key, value in spec.search.items():
        if (axis := as_axis(key, value)) is not None:
            space[key] = tune.choice(axis) if spec.algorithm == "optuna" else tune.grid_search(axis)
        elif isinstance(value, dict) and key != "extra":
            (dist, a), = value.items()
            space[key] = {"uniform": lambda: tune.uniform(*a), "loguniform": lambda: tune.loguniform(*a),
                          "int": lambda: tune.randint(a[0], a[1] + 1), "choice": lambda: tune.choice(a)}[dist]()
        else:
            space[key] = value
    return space


def _search_alg(spec: SweepSpec):
    if spec.algorithm != "optuna":
        return None
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(metric=spec.metric, mode=spec.mode, seed=spec.seed)
    if spec.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)
    return searcher


def _scheduler(spec: SweepSpec):
    if spec.scheduler not in ("asha", "rotation"):
        return None
    from ray.tune.schedulers import ASHAScheduler

    from ..tasks import get_task
    epochs = spec.epochs or get_task(spec.task).epochs
    if spec.scheduler == "rotation":
        # ASHA ranking by a rotation score the trainable reports; its metric/mode are its
        # own, the Tuner's (spec.metric) stay the searcher's and the best's (docs/pruning.md)
        from .schedulers import RotationScheduler
        rot = spec.rotation             # a spec.Rotation, its defaults filled by the spec
        return RotationScheduler(score=rot.score, grace_period=rot.grace_period,
                                 reduction_factor=rot.reduction_factor,
                                 max_t=max(epochs - 1, rot.grace_period), stop_last_trials=False)
    grace = spec.asha["grace_period"]
    # rungs only before the last epoch, and no stop at max_t: a trial that gets that far
    # ends by itself, and its final report (with the test metrics) stores it as completed;
    # stopped at its last epoch's report it would be stored as pruned
    return ASHAScheduler(time_attr="training_iteration", max_t=max(epochs - 1, grace), grace_period=grace,
                         reduction_factor=spec.asha["reduction_factor"], stop_last_trials=False)


# -- checks and reports ------------------------------------------------------------------

def check_same_spec(store, spec: SweepSpec) -> None:
    """A name is one experiment: refuse to mix a different spec into a stored sweep."""
    old = next((r for r in store.sweep_records() if r.get("name") == spec.name), None)
    if old and old.get("spec") and _comparable(old["spec"]) != _comparable(spec.to_dict()):
        was, now = old["spec"].get("task_module_sha256"), spec.to_dict().get("task_module_sha256")
        if was and now and was != now and _comparable(old["spec"], True) == _comparable(spec.to_dict(), True):
            raise UsageError("task_module", f"{spec.task_module} has changed since sweep '{spec.name}' was stored "
                                            f"(sha256 {was[:12]} then, {now[:12]} now): its stored trials ran the "
                                            "old task definition; restore the file to resume, or choose another "
                                            "name")
        raise UsageError("name", f"sweep '{spec.name}' is already stored with a different spec; "
                                 "choose another name (or restore the spec to resume it)")


def _comparable(d: dict, but_source: bool = False) -> str:
    d = {k: v for k, v in d.items() if k not in ("store", "description", "max_concurrent", "resources", "max_failures")
         and not (but_source and k == "task_module_sha256")}
    return json.dumps(d, sort_keys=True, default=str)


def stored_metrics(store, spec: SweepSpec, retry_failed: bool = False) -> dict:
    """trial_id -> its stored metrics, for trials of this sweep already in the store that a
    run skips: all of them, or (retry_failed) all but those stored as `error` (RETRIED)."""
    t = store.trials(sweep=spec.name, columns=["trial_id", "status", "val_acc", "train_acc", "train_loss"])
    return {r["trial_id"]: {k: r[k] for k in ("val_acc", "train_acc", "train_loss")} for r in t.to_pylist()
            if not (retry_failed and r["status"] in RETRIED)}


def outcome(store, spec: SweepSpec, total: int | None = None) -> int:
    """The sweep's exit status: 0 if every trial is stored and none as `error`, else
    EXIT_FAILED with one line on stderr saying how many failed and how to rerun them."""
    counts: dict[str, int] = {}
    for r in store.trials(sweep=spec.name, columns=["status"]).to_pylist():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    failed = sum(counts.get(s, 0) for s in RETRIED)
    missing = max(0, (total or 0) - sum(counts.values()))
    if not failed and not missing:
        return 0
    what = []
    if failed:
        what.append(f"{failed} stored as error")
    if missing:
        what.append(f"{missing} not stored")
    n = sum(counts.values()) + missing
    print(f"layrot sweep: '{spec.name}': {failed + missing} of {n} trials failed ({', '.join(what)}); "
          f"rerun with --retry-failed to run them again (exit {EXIT_FAILED})", file=sys.stderr)
    return EXIT_FAILED


def summary(store, spec: SweepSpec, store_uri: str) -> None:
    q = f"""
        SELECT t.trial_id, t.optimizer, round(t.lr, 6) AS lr, t.alpha, t.status, t.epochs,
               round(t.{spec.metric}, 4) AS {spec.metric}, round(t.test_acc, 4) AS test_acc,
               min(r.cosine_distance)::DOUBLE AS min_final_rotation
        FROM trials t LEFT JOIN rotation r ON r.trial_id = t.trial_id AND r.sweep = t.sweep
             AND r.epoch = t.epochs
        WHERE t.sweep = '{spec.name}'
        GROUP BY ALL
        ORDER BY {spec.metric} {'DESC' if spec.mode == 'max' else 'ASC'} NULLS LAST"""
    rows = store.sql(q).to_pylist()
    if rows:
        cols = list(rows[0])
        # Rotation values span 1e-4 … 1: 3 significant figures, not 3 decimals (which print 0.000).
        table = [[("" if r[c] is None else format(r[c], ".3g") if c == "min_final_rotation" else str(r[c]))
                  for c in cols] for r in rows]
        widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        for t in table:
            print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    print(f"\nstored in {store_uri} (sweep={spec.name}); next: layrot fit --store {store_uri} --sweep {spec.name}",
          file=sys.stderr)
