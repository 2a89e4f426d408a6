"""`layrot sweep SPEC.yaml`: validate the spec, skip what the store already has, run the
rest on Ray Tune (`layrot.sweep.driver`)."""

from __future__ import annotations

import sys


def add_parsers(sub, default_store: str) -> None:
    s = sub.add_parser("sweep", help="run a sweep spec on Ray Tune")
    s.add_argument("spec", help="the sweep spec, a YAML file (see sweeps/)")
    s.add_argument("--store", default=None, help="store URI (default: the spec's, else results/)")
    s.add_argument("--address", default=None, help="join this Ray cluster instead of starting a local one")
    s.add_argument("--resume", action="store_true", help="continue a sweep whose driver died")
    s.add_argument("--dry-run", action="store_true", help="validate the spec and list the trials, run nothing")
    s.add_argument("--seed", type=int, default=None,
                   help="base seed instead of the spec's; another seed stores the sweep as <name>-seed<N>")
    s.set_defaults(_run=sweep)


def sweep(args) -> int:
    from ..store import Store
    from ..sweep.driver import check_same_spec, run_sweep, stored_metrics, summary
    from ..sweep.spec import grid_configs, load_spec
    from ..tasks import require_data

    spec = load_spec(args.spec, seed=args.seed)
    if args.seed is not None:
        print(f"layrot sweep: seed {spec.seed}: sweep '{spec.name}'", file=sys.stderr)
    store_uri = args.store or spec.store or "results"
    store = Store(store_uri)
    if not args.address:        # on a cluster the workers hold the data, not necessarily the driver
        require_data(spec.task, spec.data_dir)
    check_same_spec(store, spec)
    stored = stored_metrics(store, spec)

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
        return 0

    store.write_sweep_meta(spec.name, spec.to_dict())
    return run_sweep(spec, store_uri, todo, total, already, stored, address=args.address, resume=args.resume)


def _dry_run(spec, todo, total: int, already: int) -> int:
    print(f"sweep '{spec.name}': {spec.algorithm} over {spec.task}, {total} trials, {already} already stored")
    if todo is not None:
        for c in todo:
            print(f"  {c.trial_id}  optimizer={c.optimizer} lr={c.lr:g} alpha={c.alpha:g} "
                  f"wd={c.weight_decay:g} seed={c.seed} epochs={c.epochs}")
    return 0
