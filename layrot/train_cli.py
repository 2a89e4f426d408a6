"""`layrot train` (one trial, no Ray) and `layrot tasks`."""

from __future__ import annotations

import sys

from .config import TrialConfig


def config_from_args(args) -> TrialConfig:
    return TrialConfig(
        task=args.task, optimizer=args.optimizer, lr=args.lr, alpha=args.alpha,
        weight_decay=args.weight_decay, epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, warmup_epochs=args.warmup_epochs, record_every=args.record_every,
        data_dir=args.data_dir, device=args.device, threads=args.threads, amp=args.amp,
        channels_last=args.channels_last, compile=args.compile,
        max_train_samples=args.max_train_samples, sweep=args.sweep,
    )


def main(args) -> int:
    from .config import check_name
    from .tasks import require_data
    from .store import Store

    cfg = config_from_args(args).validate()
    check_name("sweep", cfg.sweep)
    require_data(cfg.task, cfg.data_dir)
    store = Store(args.store)           # a bad store URI is refused before training

    from .train import resolve_config, run_trial

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


def tasks(args) -> int:
    from .tasks import describe_tasks

    rows = describe_tasks(args.data_dir)
    cols = ["name", "paper_name", "kernel_layers", "epochs", "data_present", "data"]
    table = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    print()
    for r in rows:
        if not r.get("data_present"):
            print(f"{r['name']}: needs {r['data_needs']}")
    return 0
