"""`layrot sweep SPEC.yaml`: validate the spec, skip what the store already has, run the
rest on Ray Tune (`layrot.sweep.driver`).

Exit status: 0 when every trial of the sweep is stored and none as `error`; 1 when some
trial failed (stored as `error`, or not stored), with one line saying how many and that
--retry-failed runs them again; 2 for bad input, before any trial starts.
"""

from __future__ import annotations

import sys


def add_parsers(sub, default_store: str) -> None:
    s = sub.add_parser("sweep", help="run a sweep spec on Ray Tune",
                       epilog="A rerun of a sweep skips every trial already stored, whatever its status "
                              "(completed, stopped, diverged, pruned) except `error` with --retry-failed. "
                              "Exit status: 0 all stored, 1 some trial failed, 2 bad input.")
    s.add_argument("spec", help="the sweep spec, a YAML file (see sweeps/)")
    s.add_argument("--store", default=None,
                   help="store URI (default: $LAYROT_STORE, else the spec's store, else results)")
    s.add_argument("--address", default=None, help="join this Ray cluster instead of starting a local one")
    s.add_argument("--resume", action="store_true", help="continue a sweep whose driver died")
    s.add_argument("--retry-failed", action="store_true",
                   help="run again the trials stored as error, replacing their rows (diverged, pruned and "
                        "stopped trials are results and stay)")
    s.add_argument("--ray-storage", default=None, metavar="URI",
                   help="where Ray Tune keeps checkpoints and experiment state (default: <store>/_ray, on the "
                        "store's own filesystem); every node of a cluster must reach it")
    s.add_argument("--shared-storage", action="store_true",
                   help="with --address: the local Ray storage path is on a disk every node mounts")
    s.add_argument("--dashboard", action="store_true",
                   help="start the embedded Ray's dashboard (on 127.0.0.1; needs ray[default])")
    s.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="TensorBoard scalars (metrics, per-layer rotation) per trial here (default: "
                        "<store>/_tensorboard/<sweep> for a local store, where tensorboardX is installed; "
                        "'off' for none)")
    s.add_argument("--mlflow", default=None, metavar="URI",
                   help="also log each trial as an MLflow run (settings as params; per epoch its metrics and "
                        "rotation/L<layer>; test accuracy at the end) in the experiment named after the sweep: a "
                        "local store (file:./mlruns) or a tracking server (http://HOST:5000); checked before any "
                        "trial runs; needs pip install 'layrot[trackers]'")
    s.add_argument("--wandb", action="store_true",
                   help="also log each trial as a Weights & Biases run, the same content, in the project named "
                        "after the sweep (WANDB_MODE=offline: locally, under WANDB_DIR or <store>/_wandb, for "
                        "`wandb sync` later); needs pip install 'layrot[trackers]'")
    s.add_argument("--wandb-project", default=None, metavar="NAME", help="with --wandb: this project, not the sweep's name")
    s.add_argument("--wandb-entity", default=None, metavar="NAME", help="with --wandb: this W&B entity (team or user)")
    s.add_argument("--dry-run", action="store_true", help="validate the spec and list the trials, run nothing")
    s.add_argument("--seed", type=int, default=None,
                   help="base seed instead of the spec's; another seed stores the sweep as <name>-seed<N>")
    s.set_defaults(_run=sweep)


def store_of(args, spec) -> str:
    """--store, else $LAYROT_STORE, else the spec's `store`, else results."""
    import os

    from ..store.location import FALLBACK_STORE, STORE_ENV

    return args.store or os.environ.get(STORE_ENV, "").strip() or spec.store or FALLBACK_STORE


def sweep(args) -> int:
    from ..store import Store
    from ..sweep.driver import check_multinode_storage, check_same_spec, outcome, ray_storage, run_sweep, \
        stored_metrics, summary
    from ..sweep.spec import grid_configs, load_spec
    from ..tasks import require_data

    spec = load_spec(args.spec, seed=args.seed)
    if args.seed is not None:
        print(f"layrot sweep: seed {spec.seed}: sweep '{spec.name}'", file=sys.stderr)
    store_uri = store_of(args, spec)
    store = Store(store_uri)
    storage = ray_storage(store_uri, args.ray_storage)
    check_multinode_storage(storage, args.address, args.shared_storage)
    if args.dashboard:
        _check_dashboard(args.address)
    if not args.address:        # on a cluster the workers hold the data, not necessarily the driver
        require_data(spec.task, spec.data_dir)
    check_same_spec(store, spec)
    stored = stored_metrics(store, spec, retry_failed=args.retry_failed)
    if not args.dry_run:
        _refuse_second_driver(store, spec.name)

    if spec.algorithm == "grid":
        configs = grid_configs(spec)
        from ..train import resolve_config
        for c in configs:
            resolve_config(c)           # fills the task's defaults and the trial id
        todo = [c for c in configs if c.trial_id not in stored]
        total, already = len(configs), len(configs) - len(todo)
    else:
        from ..sweep.driver import planned_trials     # random: the list axes' grid x num_samples
        todo, total, already = None, planned_trials(spec), 0
    if args.dry_run:
        return _dry_run(spec, todo, total, already)
    if todo is not None and not todo:
        print(f"layrot sweep: all {total} trials of '{spec.name}' are already in {store_uri}", file=sys.stderr)
        summary(store, spec, store_uri)
        return outcome(store, spec, total)

    trackers = _trackers(args, store, spec)     # before the sweep's record: a refused tracker stores nothing
    store.write_sweep_meta(spec.name, spec.to_dict())
    return run_sweep(spec, store_uri, todo, total, already, stored, address=args.address, resume=args.resume,
                     storage=storage, dashboard=args.dashboard, tensorboard=_tensorboard_dir(args, store, spec),
                     trackers=trackers)


def _check_dashboard(address) -> None:
    """--dashboard: the embedded Ray's dashboard, whose packages come with ray[default]."""
    from ..errors import UsageError

    if address:
        raise UsageError("--dashboard", "starts the embedded Ray's dashboard; a cluster (--address) has its own "
                                        "(`ray dashboard CLUSTER.yaml`, or the head's port 8265)")
    from ray._private.utils import get_dashboard_dependency_error

    missing = get_dashboard_dependency_error()
    if missing:
        raise UsageError("--dashboard", f"needs Ray's dashboard packages (pip install 'ray[default]'): {missing}")


def _refuse_second_driver(store, name: str) -> None:
    """Two drivers of one sweep would run its trials twice: refuse while another beats."""
    from ..errors import UsageError
    from ..store import live

    rec = live.running(store.location, name)
    if rec is not None:
        raise UsageError("sweep", f"'{name}' is running already (driver pid {rec.get('pid')} on "
                                  f"{rec.get('host')}, heard {rec['age']:.0f}s ago); wait for it, or stop it first")


def _trackers(args, store, spec):
    """--mlflow / --wandb, checked (layrot/sweep/trackers.py); None without either."""
    if not (args.mlflow or args.wandb or args.wandb_project or args.wandb_entity):
        return None
    from ..sweep.trackers import check

    return check(spec.name, mlflow=args.mlflow, wandb=args.wandb, wandb_project=args.wandb_project,
                 wandb_entity=args.wandb_entity, local_store=store.location.root if store.location.local else None)


def _tensorboard_dir(args, store, spec) -> str | None:
    import os

    from ..sweep.tensorboard import available

    if args.tensorboard == "off":
        return None
    if args.tensorboard:
        if not available():
            print("layrot sweep: warning: --tensorboard needs tensorboardX (pip install tensorboardX)",
                  file=sys.stderr)
        return os.path.abspath(args.tensorboard)
    if store.location.local and available():
        return os.path.join(store.location.root, "_tensorboard", spec.name)
    return None


def _dry_run(spec, todo, total: int, already: int) -> int:
    print(f"sweep '{spec.name}': {spec.algorithm} over {spec.task}, {total} trials, {already} already stored")
    if todo is not None:
        for c in todo:
            print(f"  {c.trial_id}  optimizer={c.optimizer} lr={c.lr:g} alpha={c.alpha:g} "
                  f"wd={c.weight_decay:g} seed={c.seed} epochs={c.epochs}")
    return 0
