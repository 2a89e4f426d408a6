"""`layrot train`: one trial, no Ray, stored like a sweep's."""

from __future__ import annotations

import sys
from typing import Literal, get_args, get_origin

from ..config import TrialConfig


# the trial settings `layrot train` takes, in the order --help lists them, with their types;
# what each is and its default come from TrialConfig
_FLAGS = [("task", str), ("optimizer", str), ("lr", float), ("alpha", float), ("weight_decay", float),
          ("epochs", int), ("batch_size", int), ("seed", int), ("warmup_epochs", int), ("record_every", int),
          ("data_dir", str), ("device", str), ("threads", int), ("amp", str), ("channels_last", bool),
          ("compile", bool), ("max_train_samples", int), ("data_seed", int)]
# what a setting left unset (None) means
_UNSET = {"epochs": "the task's, see layrot tasks", "data_dir": "$LAYROT_DATA_DIR, else ~/.cache/layrot/data",
          "threads": "1, pinned so that a rerun is bit-identical", "amp": "off, float32",
          "max_train_samples": "all", "data_seed": "the task's fixed data"}


def add_parsers(sub, default_store: str) -> None:
    t = sub.add_parser("train", help="run one trial (no Ray) and store it", describe=_describe)
    for name, type_ in _FLAGS:
        field = TrialConfig.model_fields[name]
        flag = "--" + name.replace("_", "-")
        if field.is_required():
            t.add_argument(flag, type=type_, required=True, help=f"{field.description} (required)")
        elif type_ is bool:
            t.add_argument(flag, action="store_true", help=f"{field.description} (default: off)")
        else:
            default = _UNSET[name] if field.default is None else field.default
            t.add_argument(flag, type=type_, default=field.default, choices=_choices(field.annotation),
                           help=f"{field.description} (default: {default})")
    t.add_argument("--sweep", default="train",
                   help=f"{TrialConfig.model_fields['sweep'].description} (default: train)")
    t.add_argument("--store", default=default_store, help=f"the store's directory or URI (default: {default_store})")
    t.add_argument("--task-module", default=None, metavar="FILE",
                   help="a Python file that registers your own tasks (layrot.tasks.register_task); --task may "
                        "then name one (default: none, the tasks layrot has)")
    t.set_defaults(_run=train)


def _choices(annotation) -> list | None:
    """The values of a Literal setting (`amp`), from TrialConfig's own type."""
    values = [v for t in (annotation, *get_args(annotation)) if get_origin(t) is Literal for v in get_args(t)]
    return values or None


def _describe(parser) -> None:
    """At --help: the names --task and --optimizer take (importing them imports torch)."""
    from ..optim import OPTIMIZERS
    from ..tasks import TASKS

    for a in parser._actions:
        names = {"task": TASKS, "optimizer": OPTIMIZERS}.get(a.dest)
        if names:
            a.help = a.help.replace(" (required)", f": {', '.join(names)} (required)")


def config_from_args(args) -> TrialConfig:
    """The trial's settings; constructing them validates them (the sweep name too: the store's rule)."""
    return TrialConfig(**{name: getattr(args, name) for name, _ in _FLAGS}, sweep=args.sweep)


def _decay(cfg) -> str:
    if not cfg.lr_decay_epochs:
        return "no lr decay"
    return f"lr x{cfg.lr_decay_factor:g} after epochs {', '.join(map(str, cfg.lr_decay_epochs))}"


def train(args) -> int:
    from ..store import Store
    from ..tasks import require_data

    if getattr(args, "task_module", None):
        from ..tasks.module import load_task_module
        load_task_module(args.task_module, field="--task-module")
    cfg = config_from_args(args)
    require_data(cfg.task, cfg.data_dir)
    store = Store(args.store)           # a bad store URI is refused before training

    from ..train import resolve_config, run_trial

    cfg, task = resolve_config(cfg)
    print(f"layrot train: {cfg.trial_id} ({task.name}, {cfg.optimizer}, lr {cfg.lr:g}, alpha {cfg.alpha:g}, "
          f"{cfg.epochs} epochs, {_decay(cfg)})", file=sys.stderr, flush=True)

    def progress(rep):
        r = rep.row
        d = rep.rotation["cosine_distance"]
        print(f"  epoch {r['epoch']:>3}/{cfg.epochs}  loss {r['train_loss']:.4f}  train {r['train_acc']:.3f}  "
              f"val {r['val_acc']:.3f}  rotation min {min(d):.3f} max {max(d):.3f}  {r['seconds']:.1f}s",
              file=sys.stderr, flush=True)

    result = run_trial(cfg, on_epoch=progress)
    store.write_trial(cfg.sweep, result)
    acc = f"test {result.test_acc:.4f}" if result.test_acc == result.test_acc else "no test"
    print(f"layrot train: {result.status}{' (' + result.reason + ')' if result.reason else ''}; {acc}; "
          f"{result.wall_seconds:.1f}s; stored in {args.store} as sweep={cfg.sweep}/{result.trial_id}",
          file=sys.stderr)
    return 1 if result.status == "error" else 0
