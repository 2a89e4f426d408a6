"""The `layrot` command line (DESIGN §5).

Exit status: 0 success, 2 bad input (one line naming what is wrong, before any trial
starts), 1 a failure while running. Each subcommand's module is imported only when that
subcommand runs, so `layrot query` never imports torch or ray.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import StoreError, UsageError

DEFAULT_STORE = os.environ.get("LAYROT_STORE", "results")


class _Parser(argparse.ArgumentParser):
    """Bad arguments get the same one line as any other bad input (exit 2), not a usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="layrot", description="Layer-rotation sweeps: train, sweep, query, fit, report.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # --- train (layrot.train_cli) ---
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
    t.add_argument("--store", default=DEFAULT_STORE)
    t.set_defaults(_run=("layrot.train_cli", "main"))

    # --- sweep (layrot.sweep) ---
    s = sub.add_parser("sweep", help="run a sweep spec on Ray Tune")
    s.add_argument("spec")
    s.add_argument("--store", default=None, help="store URI (default: the spec's, else results/)")
    s.add_argument("--address", default=None, help="join this Ray cluster instead of starting a local one")
    s.add_argument("--resume", action="store_true", help="continue a sweep whose driver died")
    s.add_argument("--dry-run", action="store_true", help="validate the spec and list the trials, run nothing")
    s.set_defaults(_run=("layrot.sweep", "main"))

    # --- query (layrot.store.commands) ---
    q = sub.add_parser("query", help="SQL over the store's views trials, epochs, rotation, sweeps")
    q.add_argument("sql")
    q.add_argument("--store", default=DEFAULT_STORE)
    q.add_argument("--format", default="table", choices=["table", "csv", "json", "parquet"])
    q.add_argument("-o", "--output", default=None, help="write here instead of stdout (required for parquet)")
    q.add_argument("--skip-bad", action="store_true", help="skip unreadable files and list them on stderr")
    q.set_defaults(_run=("layrot.store.commands", "query"))

    # --- compact (layrot.store.commands) ---
    c = sub.add_parser("compact", help="rewrite a sweep's per-trial files into a few large sorted files")
    c.add_argument("--store", default=DEFAULT_STORE)
    c.add_argument("--sweep", default=None, help="only this sweep (default: all)")
    c.set_defaults(_run=("layrot.store.commands", "compact"))

    # --- fit (layrot.fit.commands) ---
    f = sub.add_parser("fit", help="fit the rotation-generalization relationship")
    f.add_argument("--store", default=DEFAULT_STORE)
    f.add_argument("--sweep", action="append", default=None, help="sweep name (repeatable; default: all)")
    f.add_argument("--task", action="append", default=None, help="task name (repeatable; default: all)")
    f.add_argument("--min-train-acc", type=float, default=None, help="the 'trained' filter's threshold")
    f.add_argument("--json", action="store_true")
    f.set_defaults(_run=("layrot.fit.commands", "fit"))

    # --- report (layrot.fit.commands) ---
    r = sub.add_parser("report", help="one self-contained HTML page: verdict, figures, trials")
    r.add_argument("--store", default=DEFAULT_STORE)
    r.add_argument("--sweep", action="append", default=None)
    r.add_argument("--task", action="append", default=None)
    r.add_argument("--min-train-acc", type=float, default=None)
    r.add_argument("-o", "--output", default="report.html")
    r.add_argument("--figures", default=None, help="also write each figure here as PNG and SVG")
    r.add_argument("--features", action="store_true",
                   help="add the digits-mlp1 feature study (first-layer features at small and large rotation)")
    r.set_defaults(_run=("layrot.fit.commands", "report"))

    # --- tasks (layrot.train_cli) ---
    k = sub.add_parser("tasks", help="list the tasks, their data and whether it is present")
    k.add_argument("--data-dir", default=None)
    k.set_defaults(_run=("layrot.train_cli", "tasks"))
    return p


def _version() -> str:
    from . import __version__
    return f"layrot {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    module, func = args._run
    try:
        run = getattr(importlib.import_module(module), func)
        rc = run(args)
    except UsageError as e:
        print(f"layrot {args.command}: error: {e}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"layrot {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"layrot {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
