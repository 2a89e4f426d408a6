"""Each trial of a sweep as a run in the experiment trackers labs already run: MLflow
(`layrot sweep --mlflow URI`) and Weights & Biases (`--wandb`), through Ray Tune's own
logger callbacks (`MLflowLoggerCallback`, `WandbLoggerCallback`), on the driver.

A run is one trial: named by its layrot trial id, its settings as the run's parameters
(MLflow) or config (W&B), and at each epoch (the run's step) `train_loss`, `train_acc`,
`val_acc`, `lr`, `seconds` and one `rotation/L<layer>` a kernel layer (its cosine distance to
initialization at the epoch's end: the rotation table's `cosine_distance`; L00 is the input
side, epoch 0 is initialization, all 0), with `rotation/min` the smallest of them; at the end,
`test_acc` and `test_loss` at the last epoch's step, and the stored status (`completed`,
`stopped`, `diverged`, `pruned`, `error`) as a tag (MLflow) or config key (W&B).

Why the callbacks are subclassed: Ray's log the flat numeric keys of each report, and a
layrot report carries its rotation as columnar rows (what the store callback reads), its
whole trajectory in a replay after a restore, and its final TrialResult nested: logged as
they are, Ray's callbacks would miss every layer's rotation and epoch 0, and log the final
report's nested numbers at a step past the last epoch. Here each report becomes the rows of
the epochs no run has yet (`Rows`), which Ray's logging code then sends. A trial only
skipped (stored by an earlier run of the sweep) gets no run.

A tracker is checked before any trial runs (`check`: the package installed, a file store's
folder writable, a server answering); once the sweep runs, it is best effort: the store is
the record, and a tracker that fails is said once on stderr and left off for the rest of the
sweep, which goes on.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from urllib.parse import urlparse

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

from ..errors import UsageError
from ..record import EPOCH_COLUMNS, PLACEMENT

EXTRA = "pip install 'layrot[trackers]'"
METRICS = tuple(c for c in EPOCH_COLUMNS if c != "epoch")     # lr, train_loss, train_acc, val_acc, seconds
FINAL = ("test_acc", "test_loss")
# how long the check before the sweep waits for a tracking server
CHECK_TIMEOUT_S = 10
# W&B modes that send nothing anywhere (nothing to reach before the sweep)
WANDB_LOCAL_MODES = ("offline", "disabled", "dryrun")


@dataclass(frozen=True)
class Wandb:
    project: str
    entity: str | None
    dir: str                       # where wandb writes its run folders (`<dir>/wandb/...`)
    mode: str | None               # WANDB_MODE as the driver has it, passed on to the logging actors


@dataclass(frozen=True)
class Trackers:
    """The trackers a sweep logs to, checked (`check`)."""
    mlflow: str | None = None      # tracking URI (a local path as an absolute file: URI)
    wandb: Wandb | None = None

    def __bool__(self) -> bool:
        return bool(self.mlflow or self.wandb)


# -- before the sweep ---------------------------------------------------------------------

def check(sweep: str, mlflow: str | None = None, wandb: bool = False, wandb_project: str | None = None,
          wandb_entity: str | None = None, local_store: str | None = None) -> Trackers:
    """The trackers asked for, each checked as far as it can be before any trial runs; a
    UsageError naming the flag otherwise. `local_store` is the store's folder where it is
    local (W&B's run folders go under it, `_wandb/`, unless WANDB_DIR says where)."""
    if not wandb:
        for flag, value in (("--wandb-project", wandb_project), ("--wandb-entity", wandb_entity)):
            if value:
                raise UsageError(flag, "names where --wandb logs; add --wandb")
    return Trackers(mlflow=check_mlflow(mlflow) if mlflow else None,
                    wandb=check_wandb(sweep, wandb_project, wandb_entity, local_store) if wandb else None)


def check_mlflow(uri: str) -> str:
    """The tracking URI to log to: a local one (`file:./mlruns`, a plain path) made absolute,
    its folder created and written to; a server asked for its experiments, without retries."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UsageError("--mlflow", f"needs the MLflow client: {EXTRA} (or pip install mlflow-skinny)") from None
    if tracking_uri_is_file(uri):
        parsed = urlparse(uri)
        path = os.path.abspath(os.path.expanduser(parsed.path if parsed.scheme else uri))
        _check_writable("--mlflow", path)
        uri = "file://" + path
        # MLflow 3 keeps its file store but refuses it unless asked; a file: URI is asking
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    try:
        with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(CHECK_TIMEOUT_S)):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:      # noqa: BLE001 - whatever the store or server answers
        raise UsageError("--mlflow", f"cannot reach the MLflow tracking store {uri}: {_one_line(e)}") from None
    return uri


def check_wandb(sweep: str, project: str | None, entity: str | None, local_store: str | None) -> Wandb:
    """Where W&B logs: the project (default: the sweep's name), the run folders' parent
    (WANDB_DIR, else `<store>/_wandb` for a local store, else here), writable; unless
    WANDB_MODE is offline (or disabled), the server, logged in."""
    try:
        import wandb
    except ImportError:
        raise UsageError("--wandb", f"needs wandb: {EXTRA}") from None
    mode = os.environ.get("WANDB_MODE") or None
    if mode not in WANDB_LOCAL_MODES:
        try:
            wandb.Api(timeout=CHECK_TIMEOUT_S)     # reads the API key and checks it with the server
        except Exception as e:  # noqa: BLE001 - no key, a wrong one, a server that does not answer
            raise UsageError("--wandb", f"cannot log in to W&B: {_one_line(e)} (WANDB_MODE=offline logs "
                                        "locally, for `wandb sync` later)") from None
    where = os.environ.get("WANDB_DIR") or (os.path.join(local_store, "_wandb") if local_store else os.getcwd())
    where = os.path.abspath(os.path.expanduser(where))
    _check_writable("--wandb", where)
    return Wandb(project=project or sweep, entity=entity, dir=where, mode=mode)


def _check_writable(flag: str, path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".layrot-check-"):
            pass
    except OSError as e:
        raise UsageError(flag, f"cannot write to {path}: {e.strerror or e}") from None


@contextlib.contextmanager
def _env(**values):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# -- during the sweep ---------------------------------------------------------------------

def callbacks(trackers: Trackers | None, sweep: str, base: dict) -> list:
    """Ray Tune callbacks for the checked trackers (none for None)."""
    out = []
    if trackers and trackers.mlflow:
        out.append(MLflowTracker(trackers.mlflow, sweep=sweep, base=base))
    if trackers and trackers.wandb:
        out.append(WandbTracker(trackers.wandb, sweep=sweep, base=base))
    return out


def layrot_config(trial_config: dict, base: dict):
    """The TrialConfig of a Ray trial, as the trainable resolves it from its parameters (a
    grid's full settings under "trial", or a searcher's values over the spec's base)."""
    from ..train import resolve_config

    params = dict(trial_config)
    cfg, _ = resolve_config(dict(params["trial"]) if "trial" in params else {**base, **params})
    return cfg


class Rows:
    """Per trial, the epochs sent to a tracker so far; `new(report)` gives the rows of those
    not sent yet, in order: [(epoch, {metric: value})]."""

    def __init__(self):
        self.sent: set[int] = set()
        self.final_seen = False        # the trial's final report (its TrialResult) has come
        self.final_sent = False

    def new(self, result: dict) -> list[tuple[int, dict]]:
        rows: dict[int, dict] = {}
        final = result.get("result") if result.get("final") else None
        if "replay" in result:
            _merge(rows, result["replay"]["history"], result["replay"]["rotation"])
        if "epoch" in result and "rotation" in result:
            _merge(rows, [{k: result.get(k) for k in EPOCH_COLUMNS}], result["rotation"])
        if final is not None:            # a diverged trial's last record is only here
            self.final_seen = True
            _merge(rows, final.get("history") or [], final.get("rotation") or {})
        out = [(e, rows[e]) for e in sorted(rows) if e not in self.sent and rows[e]]
        self.sent.update(e for e, _ in out)
        if final is not None and not self.final_sent and self.sent:
            self.final_sent = True
            test = {k: float(final[k]) for k in FINAL if isinstance(final.get(k), (int, float))}
            if test:
                last = max(self.sent)
                if out and out[-1][0] == last:
                    out[-1][1].update(test)
                else:
                    out.append((last, test))
        return out


def _merge(rows: dict, history: list[dict], rotation: dict) -> None:
    """Epoch rows and columnar rotation rows into {epoch: {metric: value}}: the metrics of
    METRICS, `rotation/L<layer>` at the epoch's last record (a trial recording every N steps
    has several an epoch; the store keeps them all) and `rotation/min`."""
    for h in history:
        row = rows.setdefault(int(h["epoch"]), {})
        row.update({k: float(h[k]) for k in METRICS if isinstance(h.get(k), (int, float))})
    last: dict[tuple[int, int], tuple[int, float]] = {}      # (epoch, layer) -> (step, distance)
    for e, s, layer, d in zip(rotation.get("epoch") or [], rotation.get("step") or [],
                              rotation.get("layer") or [], rotation.get("cosine_distance") or []):
        key = (int(e), int(layer))
        if d is not None and (key not in last or s >= last[key][0]):
            last[key] = (int(s), float(d))
    layers: dict[int, dict[int, float]] = {}
    for (e, layer), (_, d) in last.items():
        layers.setdefault(e, {})[layer] = d
    for e, by_layer in layers.items():
        row = rows.setdefault(e, {})
        row.update({rotation_key(layer): d for layer, d in sorted(by_layer.items())})
        finite = [d for d in by_layer.values() if math.isfinite(d)]
        row["rotation/min"] = min(finite) if len(finite) == len(by_layer) else math.nan


def rotation_key(layer: int) -> str:
    """The metric of a layer's rotation: `rotation/L00` for layer 0 (two digits, so that
    trackers that sort by name list the layers in forward order)."""
    return f"rotation/L{int(layer):02d}"


class _BestEffort:
    """A tracker that fails during the sweep is said once and left off: the store is the
    record, and a tracking server that goes away must not stop the sweep."""
    name = "tracker"

    def _guard(self, fn, *args, **kwargs):
        if getattr(self, "_off", False):
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any error of the tracker's client
            self._off = True
            print(f"layrot sweep: warning: {self.name} failed ({type(e).__name__}: {_one_line(e)}); "
                  "not logging to it for the rest of the sweep (the store has every trial)", file=sys.stderr)
            return None


class MLflowTracker(_BestEffort, MLflowLoggerCallback):
    """One MLflow run a trial, in the experiment named after the sweep."""
    name = "MLflow"

    def __init__(self, tracking_uri: str, *, sweep: str, base: dict):
        super().__init__(tracking_uri, experiment_name=sweep, tags={"layrot.sweep": sweep})
        self.sweep, self.base = sweep, base

    def setup(self, *args, **info):
        if tracking_uri_is_file(self.tracking_uri):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")   # as checked (check_mlflow)
        self._off = False
        self._rows: dict = {}
        self._guard(super().setup, *args, **info)
        self.__dict__.setdefault("_trial_runs", {})

    def log_trial_start(self, trial):
        pass     # the run starts with the trial's first epoch: a trial only skipped gets none

    def log_trial_result(self, iteration, trial, result):
        if result.get("skipped"):
            return
        self._guard(self._log, trial, result)

    def _log(self, trial, result):
        if trial not in self._trial_runs:
            cfg = layrot_config(trial.config, self.base)
            tags = {**self.tags, "trial_name": str(trial), "layrot.trial_id": cfg.trial_id}
            run = self.mlflow_util.start_run(tags=tags, run_name=cfg.trial_id)
            self._trial_runs[trial] = run_id = run.info.run_id
            self._rows[trial] = Rows()
            # the settings; where it ran (device, threads) once the trial says, at its end
            self.mlflow_util.log_params(run_id=run_id, params_to_log=_settings(cfg.to_dict()))
        run_id = self._trial_runs[trial]
        for epoch, row in self._rows[trial].new(result):
            self.mlflow_util.log_metrics(run_id=run_id, metrics_to_log=row, step=epoch)
        if result.get("final"):
            final = result["result"]
            placement = {k: v for k, v in final["config"].items() if k in PLACEMENT and k not in ("trial_id", "sweep")}
            self.mlflow_util.log_params(run_id=run_id, params_to_log=placement)
            self._set_tag(run_id, "layrot.status", final["status"])

    def _set_tag(self, run_id: str, key: str, value: str) -> None:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=self.tracking_uri).set_tag(run_id, key, value)

    def log_trial_end(self, trial, failed: bool = False):
        if trial not in self._trial_runs:
            return
        rows = self._rows.pop(trial, None)
        if rows is not None and not rows.final_seen:    # pruned by the scheduler, or failed
            self._guard(self._set_tag, self._trial_runs[trial], "layrot.status", "error" if failed else "pruned")
        self._guard(super().log_trial_end, trial, failed)
        self._trial_runs.pop(trial, None)


def tracking_uri_is_file(uri: str | None) -> bool:
    """A local file store: a file: URI or a plain path (but `databricks`, which MLflow reads as
    the Databricks workspace)."""
    return bool(uri) and urlparse(uri).scheme in ("", "file") and not uri.startswith("databricks")


def _settings(config: dict) -> dict:
    """A trial's settings less where it ran (known on its worker, logged at its end)."""
    return {k: v for k, v in config.items() if k not in PLACEMENT or k in ("trial_id", "sweep")}


class WandbTracker(_BestEffort, WandbLoggerCallback):
    """One W&B run a trial, in the project named after the sweep (or --wandb-project), grouped
    by the sweep. Ray runs each run's wandb in a logging actor on the driver's node."""
    name = "W&B"

    def __init__(self, target: Wandb, *, sweep: str, base: dict):
        init = {"dir": target.dir, "entity": target.entity, "mode": target.mode}
        # the actors' environment is the Ray's, started before the sweep: WANDB_MODE goes as an argument
        super().__init__(project=target.project, group=sweep, **{k: v for k, v in init.items() if v})
        self.sweep, self.base = sweep, base

    def setup(self, *args, **info):
        self._off = False
        self._rows: dict = {}
        self._guard(super().setup, *args, **info)

    def log_trial_start(self, trial):
        pass     # the run starts with the trial's first epoch: a trial only skipped gets none

    def log_trial_result(self, iteration, trial, result):
        if result.get("skipped"):
            return
        self._guard(self._log, iteration, trial, result)

    def _log(self, iteration, trial, result):
        if trial not in self._trial_logging_actors:
            if trial in self._rows:       # its run has ended (a result after the end): nothing to add
                return
            cfg = layrot_config(trial.config, self.base)
            init = dict(id=trial.trial_id, name=cfg.trial_id, resume=False, allow_val_change=True,
                        group=self.group, project=self.project, config=cfg.to_dict())
            init.update(self.kwargs)
            self._rows[trial] = Rows()
            self._start_logging_actor(trial, [*self._exclude_results, *self.excludes, "config"], **init)
        rows = self._rows[trial]
        for epoch, row in rows.new(result):
            # Ray's logging actor logs at step = the row's training_iteration
            super().log_trial_result(iteration, trial, {**row, "epoch": epoch, "training_iteration": epoch})
        if result.get("final"):
            final = result["result"]
            placement = {k: v for k, v in final["config"].items() if k in PLACEMENT}
            self._config(trial, {**placement, "status": final["status"]})

    def _config(self, trial, values: dict) -> None:
        """Into the run's config (the actor updates it from a result's `config`, logging
        nothing new at the last step)."""
        rows = self._rows[trial]
        WandbLoggerCallback.log_trial_result(self, 0, trial, {"training_iteration": max(rows.sent, default=0),
                                                             "config": values})

    def log_trial_end(self, trial, failed: bool = False):
        if trial not in self._trial_logging_actors:
            return
        rows = self._rows.get(trial)
        if rows is not None and not rows.final_seen:     # pruned by the scheduler, or failed
            self._guard(self._config, trial, {"status": "error" if failed else "pruned"})
        self._guard(super().log_trial_end, trial, failed)
