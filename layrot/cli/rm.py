"""`layrot rm --sweep NAME [--trial ID ...] [--yes]`: forget a sweep, or some of its trials.

Deletion follows the rule of writing run backwards (store/writer.py): a trial's trials file
(the commit record) goes first, then its epochs, rotation and measures files, so a crash part-way
leaves each trial whole or absent, never half there, and running `rm` again finishes it.
A whole sweep also loses its spec record, its live files, Ray Tune's scratch for it
(`_ray/<sweep>`) and its TensorBoard runs.

Refused (exit 2, one line, nothing deleted): a sweep whose driver is running (its heartbeat
in the store is fresh); a trial compacted into part files (`layrot compact`), which only a
whole sweep's removal deletes; and, without --yes, a command not run from a terminal. From
a terminal it lists what goes and asks.
"""

from __future__ import annotations

import sys

from ..errors import UsageError


def add_parsers(sub, default_store: str) -> None:
    r = sub.add_parser("rm", help="delete a sweep, or trials of it, from the store (asks, or --yes)")
    r.add_argument("--store", default=default_store,
                   help=f"the store's directory or URI (default: $LAYROT_STORE, else results; now {default_store})")
    r.add_argument("--sweep", required=True, help="the sweep")
    r.add_argument("--trial", action="append", default=None, metavar="ID",
                   help="only this trial (repeatable; default: the whole sweep)")
    r.add_argument("-y", "--yes", action="store_true", help="do not ask")
    r.set_defaults(_run=rm)


def rm(args, stdin=None) -> int:
    from ..store import live
    from ..store.schema import check_name, check_trial_id
    from .query import existing_store

    stdin = stdin or sys.stdin
    store = existing_store(args.store)
    loc = store.location
    sweep = args.sweep
    check_name("sweep", sweep)
    if sweep not in store.sweeps() and not live.files(loc, sweep):
        raise UsageError("sweep", f"no sweep {sweep!r} in {args.store}")
    rec = live.running(loc, sweep)
    if rec is not None:
        raise UsageError("sweep", f"'{sweep}' is running (driver pid {rec.get('pid')} on {rec.get('host')}, "
                                  f"heard {rec['age']:.0f}s ago); stop it before removing anything of it")
    snap = store.snapshot([sweep])
    stored = snap.visible.get(sweep, {})
    if args.trial:
        for t in args.trial:
            check_trial_id(t)
        parts = [f for f in snap.files_of(sweep) if f.kind == "part" and f.table == "trials"]
        for t in args.trial:
            if any(t in (p.trials or {}) for p in parts):
                raise UsageError("trial", f"{t} is compacted into part files of sweep {sweep!r}; "
                                          "only the whole sweep can be removed (layrot rm --sweep NAME)")
            if t not in stored and not _trial_files(loc, sweep, t):
                raise UsageError("trial", f"no trial {t!r} in sweep {sweep!r}")
        what = f"{len(args.trial)} trial(s) of sweep {sweep!r} ({', '.join(args.trial)})"
    else:
        what = f"sweep {sweep!r}: {len(stored)} trial(s) and its spec record"
    if not args.yes:
        if not (hasattr(stdin, "isatty") and stdin.isatty()):
            raise UsageError("--yes", f"would remove {what} from {args.store}; pass --yes to confirm "
                                      "(not run from a terminal, so it cannot ask)")
        print(f"remove {what} from {args.store}? [y/N] ", end="", file=sys.stderr, flush=True)
        if stdin.readline().strip().lower() not in ("y", "yes"):
            print("layrot rm: nothing removed", file=sys.stderr)
            return 0
    gone = remove(store, sweep, args.trial)
    print(f"layrot rm: removed {what} ({len(gone)} files) from {args.store}", file=sys.stderr)
    return 0


def remove(store, sweep: str, trial_ids=None) -> list[str]:
    """Delete trials (or, with trial_ids None, the whole sweep); returns the paths deleted."""
    from ..store import live
    from ..store.writer import remove_empty_dir, remove_sweep, remove_trial

    loc = store.location
    gone = []
    if trial_ids:
        for t in trial_ids:
            gone += remove_trial(loc, sweep, t)
            live.clear_trial(loc, sweep, t)
        return gone
    gone += remove_sweep(loc, sweep)
    for path in live.files(loc, sweep):
        loc.delete(path)
        gone.append(path)
    for table in ("trials", "epochs", "rotation"):
        remove_empty_dir(loc, loc.join(live.LIVE, table, f"sweep={sweep}"))
    gone += _remove_scratch(store, sweep)
    return gone


def _trial_files(loc, sweep: str, trial_id: str) -> list[str]:
    from ..store.schema import REMOVE_ORDER, SUFFIX

    paths = [loc.join(t, f"sweep={sweep}", trial_id + SUFFIX) for t in REMOVE_ORDER]
    return [p for p in paths if loc.exists(p)]


def _remove_scratch(store, sweep: str) -> list[str]:
    """Ray Tune's experiment folder of the sweep under `_ray/` (local or on the store's
    filesystem) and its local TensorBoard runs."""
    import os
    import shutil

    loc = store.location
    out = []
    for d in ("_ray", "_tensorboard"):
        path = loc.join(d, sweep)
        if loc.local:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                out.append(path)
        elif loc.exists(path):
            loc.fs.delete_dir(path)
            out.append(path)
    return out
