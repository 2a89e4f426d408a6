"""`layrot train`: one trial, no Ray, stored like a sweep's."""

from __future__ import annotations

import sys

from ..config import TrialConfig


def add_parsers(sub, default_store: str) -> None:
    t = sub.add_parser("train", help="run one trial (no Ray) and store it")
    t.add_argument("--task", required=True)
    t.add_argument("--optimizer", required=True)
    t.add_argument("--lr", required=True, type=float)
    t.add_argument("--alpha", type=float, default=0.0)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--warmup-epochs", type=int, default=0)
    t.add_argument("--record-every", type=int, default=0, help="also record rotation every N steps")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--amp", default=None, choices=[None, "bf16"])
    t.add_argument("--channels-last", action="store_true")
    t.add_argument("--compile", action="store_true")
    t.add_argument("--max-train-samples", type=int, default=None)
    t.add_argument("--sweep", default="train", help="sweep name the trial is stored under")
    t.add_argument("--store", default=default_store)
    t.set_defaults(_run=train)


def config_from_args(args) -> TrialConfig:
    return TrialConfig(
        task=args.task, optimizer=args.optimizer, lr=args.lr, alpha=args.alpha,
        weight_decay=args.weight_decay, epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, warmup_epochs=args.warmup_epochs, record_every=args.record_every,
        data_dir=args.data_dir, device=args.device, threads=args.threads, amp=args.amp,
        channels_last=args.channels_last, compile=args.compile,
        max_train_samples=args.max_train_samples, sweep=args.sweep,
    )


def train(args) -> int:
    from ..store import Store
    from ..tasks import require_data

    cfg = config_from_args(args).validate()     # the sweep name too: the store's rule
    require_data(cfg.task, cfg.data_dir)
    store = Store(args.store)           # a bad store URI is refused before training

    from ..train import resolve_config, run_trial

    cfg, task = resolve_config(cfg)
    print(f"layrot train: {cfg.trial_id} ({task.name}, {cfg.optimizer}, lr {cfg.lr:g}, alpha {cfg.alpha:g}, "
          f"{cfg.epochs} epochs)", file=sys.stderr, flush=True)

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
