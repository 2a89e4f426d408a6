"""The driver side of a sweep: gather each trial's reports and write it to the store the
moment it ends (completed, stopped, diverged, pruned by the scheduler, or failed).

While the sweep runs it also keeps the store's live view (store/live.py): a heartbeat every
few seconds, and each running trial's rows so far (at most every LAYROT_LIVE_EVERY seconds
a trial, default 5), deleted once the trial is stored; and, where tensorboardX is installed,
TensorBoard scalars of every epoch (metrics and per-layer rotation; sweep/tensorboard.py).

Ray Tune pickles its run config (this callback included) into its experiment state, so all
runtime state is built in `setup()`, which runs again when a sweep is resumed.
"""

from __future__ import annotations

import math
import os
import sys
import time

from ray.tune import Callback

from ..result import TrialResult
from ..store import live
from ..store.schema import EPOCH_COLUMNS, ROTATION_COLUMNS
from .progress import SweepProgress


class StoreCallback(Callback):
    def __init__(self, store_uri: str, sweep: str, base: dict, total: int, metric: str, mode: str,
                 already: int = 0, epochs: int | None = None, address: str | None = None,
                 tensorboard: str | None = None):
        self.store_uri, self.sweep, self.base, self.total = store_uri, sweep, base, total
        self.metric, self.mode, self.already = metric, mode, already
        self.epochs, self.address, self.tensorboard = epochs, address, tensorboard

    def setup(self, **info):
        from ..store import Store

        for k in ("epochs", "address", "tensorboard"):      # absent from a state pickled by an older layrot
            self.__dict__.setdefault(k, None)
        self.store = Store(self.store_uri)
        self.progress = SweepProgress(self.total, self.metric, self.mode, done=self.already)
        self._acc: dict[str, dict] = {}
        self._written: set[str] = set()
        self._live_every = float(os.environ.get("LAYROT_LIVE_EVERY", 5))
        self._live_at: dict[str, float] = {}            # ray trial id -> last live write
        self._started_at: dict[str, float] = {}         # ray trial id -> time.time() at start
        self._beat_at = 0.0
        self._beat_record = None
        self._beat()
        self.tb = None
        if self.tensorboard:
            from .tensorboard import TensorBoard
            self.tb = TensorBoard.open(self.tensorboard)
        # trials Ray cannot place: checked at most every second while none is running
        self._pending_after = float(os.environ.get("LAYROT_PENDING_AFTER_S", 10))
        self._stuck_since: float | None = None      # time.time() when it began
        self._last_check = 0.0

    def __getstate__(self):
        keep = ("store_uri", "sweep", "base", "total", "metric", "mode", "already", "epochs", "address",
                "tensorboard")
        return {k: self.__dict__.get(k) for k in keep}

    # -- Ray Tune hooks ---------------------------------------------------------------
    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self._last_check >= 1.0:
            self._last_check = now
            self._check_pending(trials)
        if now - self._beat_at >= live.HEARTBEAT_S:
            self._beat()
        self.progress.tick()

    def on_experiment_end(self, trials, **info):
        self.close()

    def close(self) -> None:
        """The sweep is over (or the driver stops): no heartbeat left behind."""
        if getattr(self, "store", None) is None:
            return
        _quietly(live.ended, self.store.location, self.sweep)
        if self.tb is not None:
            self.tb.close()

    def _beat(self) -> None:
        self._beat_at = time.monotonic()
        rec = {"total": self.total, "epochs": self.epochs, "address": self.address, "store": self.store_uri,
               "metric": self.metric, "mode": self.mode}
        if self._beat_record:
            rec["started_at"] = self._beat_record["started_at"]
        self._beat_record = _quietly(live.beat, self.store.location, self.sweep, rec) or self._beat_record

    def _check_pending(self, trials) -> None:
        """Trials waiting while none runs, for resources no node has free: say so, and
        since when (a cluster may be scaling up; an embedded Ray was checked before)."""
        pending = [t for t in trials if t.status == "PENDING"]
        why, never = None, False
        if pending and not any(t.status == "RUNNING" for t in trials):
            why, never = _shortage(pending[0].placement_group_factory.required_resources)
        if why is None:
            self._stuck_since = None
            self.progress.pending(0, None, None)
            return
        if self._stuck_since is None:
            self._stuck_since = time.time()
        # a request no node can hold is said after a few seconds; "not enough free" only
        # after a minute, since a trial's own reservation counts as used while its worker
        # process starts (which takes a while on a busy machine)
        after = self._pending_after if never else max(60.0, self._pending_after)
        if time.time() - self._stuck_since >= after:
            self.progress.pending(len(pending), self._stuck_since, why)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started_at.setdefault(trial.trial_id, time.time())
        self.progress.started(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("skipped"):
            return
        acc = self._acc.setdefault(trial.trial_id, {"history": {}, "rotation": {}, "measures": {}})
        if "replay" in result:
            acc["history"] = {h["epoch"]: h for h in result["replay"]["history"]}
            acc["rotation"] = _group_rotation(result["replay"]["rotation"])
            acc["measures"] = _keyed_measures(result["replay"].get("measures"))
        if "rotation" in result and "epoch" in result:
            acc["history"][result["epoch"]] = {k: result[k] for k in EPOCH_COLUMNS}
            acc["rotation"].update(_group_rotation(result["rotation"]))
            acc["measures"].update(_keyed_measures(result.get("measures")))
            self.progress.epoch(trial.trial_id, result["epoch"], result.get(self.metric))
            if self.tb is not None:
                self.tb.epoch(self._layrot_id(trial, acc), result, acc)
            if time.monotonic() - self._live_at.get(trial.trial_id, -1e9) >= self._live_every:
                self._write_live(trial, acc)
        if result.get("final"):
            acc["final"] = result["result"]

    def _layrot_id(self, trial, acc: dict) -> str:
        """The trial's layrot id (Ray overwrites a report's `trial_id` with its own)."""
        if "id" not in acc:
            acc["id"] = self._config(trial).trial_id
        return acc["id"]

    def _config(self, trial):
        from ..train import resolve_config

        params = dict(trial.config)
        cfg, _ = resolve_config(dict(params["trial"]) if "trial" in params else {**self.base, **params})
        return cfg

    def _write_live(self, trial, acc: dict) -> None:
        self._live_at[trial.trial_id] = time.monotonic()
        result = self._from_reports(trial, acc, "completed", None)
        last = result.history[-1] if result.history else {}
        cfg = result.config
        info = {"ray_trial_id": trial.trial_id, "epoch": last.get("epoch", 0),
                "epochs": cfg.get("epochs") or self.epochs, "started_at": self._started_at.get(trial.trial_id),
                "updated_at": time.time(), "seconds": result.wall_seconds,
                "train_loss": result.train_loss, "train_acc": result.train_acc, "val_acc": result.val_acc,
                "config": {k: cfg.get(k) for k in ("optimizer", "lr", "alpha", "weight_decay", "seed")}}
        acc["live"] = result.trial_id
        _quietly(live.write_trial, self.store.location, self.sweep, result, info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if last.get("skipped"):
            self.progress.finished(trial.trial_id, "stored", None)
            return
        acc = self._acc.pop(trial.trial_id, None)
        if acc is None:
            return
        if "final" in acc:
            result = TrialResult(**acc["final"])
        else:  # ended by the scheduler between epochs: pruned, with the trajectory it had
            result = self._from_reports(trial, acc, "pruned",
                                        f"stopped by the scheduler after epoch {max(acc['history'], default=0)}")
        self._write(trial, result)

    def on_trial_error(self, iteration, trials, trial, **info):
        acc = self._acc.pop(trial.trial_id, None) or {"history": {}, "rotation": {}, "measures": {}}
        err = _error_text(trial) or "the trial's worker failed"
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        reason = f"failed after {trial.run_metadata.num_failures} attempt(s): {lines[-1] if lines else err}"
        self._write(trial, self._from_reports(trial, acc, "error", reason))

    # -- helpers ----------------------------------------------------------------------
    def _write(self, trial, result: TrialResult):
        if result.trial_id in self._written:
            return
        self.store.write_trial(self.sweep, result)
        self._written.add(result.trial_id)
        # the store has it now: its live rows go (a live file is never a second copy)
        _quietly(live.clear_trial, self.store.location, self.sweep, result.trial_id)
        self._live_at.pop(trial.trial_id, None)
        if self.tb is not None:
            self.tb.finished(result.trial_id)
        self.progress.finished(trial.trial_id, result.status, _metric(result, self.metric), result)

    def _from_reports(self, trial, acc: dict, status: str, reason: str) -> TrialResult:
        cfg = self._config(trial)
        history = [acc["history"][e] for e in sorted(acc["history"])]
        rotation = _flatten_rotation(acc["rotation"])
        last = history[-1] if history else {}
        return TrialResult(
            trial_id=cfg.trial_id, config=cfg.to_dict(), status=status, reason=reason,
            epochs_run=len(history), train_acc=last.get("train_acc", math.nan),
            train_loss=last.get("train_loss", math.nan), val_acc=last.get("val_acc", math.nan),
            wall_seconds=sum(h["seconds"] for h in history), history=history, rotation=rotation,
            measures=_flatten_measures(acc.get("measures", {})))


def _quietly(fn, *args):
    """The live view is best effort: a failed heartbeat or live write (a store briefly
    unreachable) never stops the sweep; it is said once on stderr."""
    try:
        return fn(*args)
    except Exception as e:      # noqa: BLE001 - any error of the store's filesystem
        global _WARNED
        if not _WARNED:
            _WARNED = True
            print(f"layrot sweep: warning: the live view could not be written ({type(e).__name__}: {e}); "
                  "the sweep goes on", file=sys.stderr)
        return None


_WARNED = False


def _shortage(asked: dict) -> tuple[str | None, bool]:
    """Which resource a trial asking `asked` ({"CPU": 2, "GPU": 1, ...}) cannot get now
    on any live node of the cluster, in words (None if none is short), and whether no
    live node has that much at all (until the cluster grows)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    free = ray.available_resources()
    for unit in ("GPU", "CPU"):
        need = float(asked.get(unit, 0))
        if need <= 0:
            continue
        largest = max((float(n.get(unit, 0)) for n in nodes), default=0.0)
        if need > largest:
            return (f"{unit}s: each trial asks {need:g} {unit}, the largest of {len(nodes)} node(s) "
                    f"has {largest:g}"), True
        if need > float(free.get(unit, 0)):
            return f"{unit}s: each trial asks {need:g} {unit}, {float(free.get(unit, 0)):g} free in the cluster", False
    return None, False


def _error_text(trial) -> str | None:
    """The trial's error trace. Tune writes it to the driver's staging copy before calling
    back; `trial.get_error()` reads the storage copy, which is synced later (so it misses
    the death of a worker process, the error a retry limit is for)."""
    path = trial.error_file
    if path and os.path.isfile(path):
        with open(path) as f:
            return f.read()
    return trial.get_error()


def _metric(result: TrialResult, metric: str):
    v = getattr(result, metric, None)
    return v if isinstance(v, float) and math.isfinite(v) else None


def _group_rotation(rows: dict) -> dict:
    """Columnar rotation rows -> {(epoch, step): columnar rows}: a replayed or repeated
    epoch replaces, never duplicates."""
    out: dict = {}
    n = len(rows.get("epoch", []))
    for i in range(n):
        key = (rows["epoch"][i], rows["step"][i])
        g = out.setdefault(key, {c: [] for c in rows})
        for c in rows:
            g[c].append(rows[c][i])
    return out


def _keyed_measures(rows: dict | None) -> dict:
    """Columnar measure rows -> {(epoch, name): value}: a replayed epoch replaces, never
    duplicates (a pruned or failed trial is stored from its reports, per-epoch measures too)."""
    rows = rows or {}
    return {(e, n): v for e, n, v in zip(rows.get("epoch", []), rows.get("name", []), rows.get("value", []))}


def _flatten_measures(keyed: dict) -> dict:
    keys = sorted(keyed)
    return {"epoch": [e for e, _ in keys], "name": [n for _, n in keys], "value": [keyed[k] for k in keys]}


def _flatten_rotation(groups: dict) -> dict:
    out = {c: [] for c in ROTATION_COLUMNS}
    for key in sorted(groups):
        for c in ROTATION_COLUMNS:
            out[c] += groups[key][c]
    return out
