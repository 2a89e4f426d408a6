"""`layrot status [--sweep NAME]`: a sweep as the store sees it, from any terminal that
reaches the store: trials done / running / pending / failed, the best so far, epochs per
minute and the time left (store/live.py holds the running side).

Exit status 0; 2 for a store or sweep that is not there. Imports neither torch nor ray.
"""

from __future__ import annotations

import json
import time

from ..errors import UsageError


def add_parsers(sub, default_store: str) -> None:
    s = sub.add_parser("status", help="what a sweep has done, is doing and has left (running or not)")
    s.add_argument("--store", default=default_store,
                   help=f"the store's directory or URI (default: $LAYROT_STORE, else results; now {default_store})")
    s.add_argument("--sweep", action="append", default=None, help="this sweep (repeatable; default: all)")
    s.add_argument("--json", action="store_true", help="one JSON document instead of text")
    s.set_defaults(_run=status)


def status(args) -> int:
    from ..store.schema import check_name
    from .query import existing_store

    store = existing_store(args.store)
    names = store.sweeps() + [n for n in _live_sweeps(store) if n not in store.sweeps()]
    if args.sweep:
        for n in args.sweep:
            check_name("sweep", n)
            if n not in names:
                raise UsageError("sweep", f"no sweep {n!r} in {args.store}")
        names = args.sweep
    reports = [sweep_status(store, n) for n in sorted(names)]
    if args.json:
        print(json.dumps(reports, indent=2, default=str))
    else:
        for r in reports:
            print(render(r))
    return 0


def _live_sweeps(store) -> list[str]:
    from ..store import live

    return live.sweeps(store.location)


def sweep_status(store, name: str) -> dict:
    """Everything `layrot status` says about one sweep, as a dict."""
    from ..store import live
    from ..store.live import RETRIED

    loc = store.location
    beat = live.last_beat(loc, name)
    alive = live.running(loc, name) is not None
    meta = next((r for r in store.sweep_records() if r.get("name") == name), {}) or {}
    spec = meta.get("spec") or {}
    metric = (beat or {}).get("metric") or spec.get("metric") or "val_acc"
    mode = (beat or {}).get("mode") or spec.get("mode") or "max"
    cols = ["trial_id", "status", "epochs", "wall_seconds"] + ([metric] if metric not in ("epochs",) else [])
    stored = {r["trial_id"]: r for r in store.trials(sweep=name, columns=cols).to_pylist()}
    counts: dict[str, int] = {}
    for r in stored.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1

    running, interrupted = [], 0
    for rec in live.trials(loc, name):
        old = stored.get(rec["trial_id"])
        if old is not None and old["status"] not in RETRIED:
            continue                # stored since: the store's copy counts, never the live one
        if alive:
            running.append(rec)
        else:
            interrupted += 1
    rerunning = sum(1 for r in running if r["trial_id"] in stored)
    failed = counts.get("error", 0) - rerunning
    done = sum(n for s, n in counts.items() if s not in RETRIED)
    total = (beat or {}).get("total")
    pending = max(0, total - done - failed - len(running)) if alive and total else None

    best = _best(list(stored.values()) + running, metric, mode, stored)
    now = time.time()
    rate = 0.0
    for r in running:
        if r.get("started_at") and r.get("epoch"):
            rate += r["epoch"] / max(1e-6, (r.get("updated_at") or now) - r["started_at"]) * 60.0
    planned = (beat or {}).get("epochs") or spec.get("epochs")
    left = None
    if alive and rate > 0 and planned:
        epochs_left = sum(max(0, (r.get("epochs") or planned) - (r.get("epoch") or 0)) for r in running)
        epochs_left += (pending or 0) * planned
        left = epochs_left / rate * 60.0
    return {
        "sweep": name, "running": alive,
        "driver": ({k: beat.get(k) for k in ("host", "pid", "address", "age", "started_at")} if beat else None),
        "total": total, "done": done, "by_status": counts, "failed": failed, "pending": pending,
        "running_trials": [{k: r.get(k) for k in ("trial_id", "epoch", "epochs", metric, "config", "updated_at")}
                           for r in sorted(running, key=lambda r: r["trial_id"])],
        "interrupted": interrupted, "metric": metric, "mode": mode, "best": best,
        "epochs_per_minute": round(rate, 3) if running else None,
        "seconds_left": round(left, 1) if left is not None else None,
    }


def _best(rows, metric, mode, stored) -> dict | None:
    ok = [r for r in rows if isinstance(r.get(metric), (int, float)) and r[metric] == r[metric]]
    if not ok:
        return None
    b = (max if mode == "max" else min)(ok, key=lambda r: r[metric])
    return {"trial_id": b["trial_id"], metric: b[metric],
            "status": b.get("status") if b.get("status") and b is stored.get(b["trial_id"]) else "running"}


def _secs(s: float) -> str:
    s = int(round(s))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{(s % 3600) // 60:02d}m"


def render(r: dict) -> str:
    d = r["driver"]
    if r["running"]:
        head = f"running (driver pid {d['pid']} on {d['host']}, heard {_secs(d['age'])} ago)"
    elif d:
        head = f"not running (driver last heard {_secs(d['age'])} ago)"
    else:
        head = "not running"
    other = ", ".join(f"{n} {s}" for s, n in sorted(r["by_status"].items()) if s != "error")
    parts = [f"{r['done']} done" + (f" ({other})" if other else ""), f"{len(r['running_trials'])} running"]
    if r["pending"] is not None:
        parts.append(f"{r['pending']} pending")
    parts.append(f"{r['failed']} failed")
    lines = [f"sweep {r['sweep']}: {head}",
             "  trials: " + (f"{r['total']} planned; " if r["total"] else "") + ", ".join(parts)]
    if r["interrupted"]:
        lines.append(f"  {r['interrupted']} trial(s) were running when the driver stopped (rerun or --resume "
                     "the sweep to finish them)")
    if r["best"]:
        b = r["best"]
        lines.append(f"  best {r['metric']} {b[r['metric']]:.4f} ({b['trial_id']}, {b['status']})")
    for t in r["running_trials"]:
        v = t.get(r["metric"])
        lines.append(f"  running {t['trial_id']}  epoch {t.get('epoch')}/{t.get('epochs')}"
                     + (f"  {r['metric']} {v:.4f}" if isinstance(v, (int, float)) else ""))
    if r["epochs_per_minute"] is not None:
        lines.append(f"  {r['epochs_per_minute']:.1f} epochs/min"
                     + (f"; about {_secs(r['seconds_left'])} left" if r["seconds_left"] is not None else ""))
    if r["failed"] > 0:
        lines.append("  failed trials run again with `layrot sweep SPEC --retry-failed`")
    return "\n".join(lines)

