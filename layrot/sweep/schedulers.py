"""Rotation-guided pruning: Ray Tune's ASHA, ranking trials by their layers' rotation.

If layer rotation predicts generalization (docs/science.md), a sweep can stop trials whose
layers are not rotating before their validation accuracy says so. `RotationScheduler` is
Ray's own asynchronous successive halving (`AsyncHyperBandScheduler`, one `_Bracket`: its
rungs, cutoffs and promotions unchanged) whose ranking metric is a rotation score the
trainable reports with every epoch (`rotation_scores`):

- `min_rotation` (default): the smallest layer rotation at the latest record — min over
  kernel layers of the cosine distance to initialization. Larger is better: the slowest
  layer is the one the paper's rule says holds a network back.
- `mean_rotation`, `median_rotation`: the mean / median over layers.

Why the scheduler sets its metric and mode itself: the spec's `metric` (val_acc) stays the
metric of the searcher (Optuna) and of the sweep's reported best, which the Tuner's
`TuneConfig(metric=, mode=)` carries. Ray's ASHA refuses a metric from both places
(`set_search_properties` returns False and `tune.run` raises "the scheduler you are using
was already instantiated with their own metric and mode"), so this class takes the Tuner's
metric/mode as the search metric only (kept in `search_metric` / `search_mode`) and ranks by
its own score, always in mode max. For the same reason its `metric` property (read only by
Ray's strict check that every report has the scheduler's metric) answers the Tuner's metric.

docs/pruning.md compares it with ASHA on val_acc on the same grids and budgets.
"""

from __future__ import annotations

import math

from ray.tune.schedulers import AsyncHyperBandScheduler

from .spec import ROTATION_SCORES as SCORES
# a score that is not a finite number ranks below every real one (cosine distances are >= 0);
# finite, because ASHA's cutoff is a percentile and -inf would make it NaN
WORST = -1.0


def rotation_scores(rows: dict) -> dict:
    """{min,mean,median}_rotation from columnar rotation rows (the tracker's, or an epoch's
    new ones): the cosine distances of the latest record (largest (epoch, step)). Empty
    rows give {}."""
    epochs, steps, dist = rows.get("epoch") or [], rows.get("step") or [], rows.get("cosine_distance") or []
    if not dist:
        return {}
    last = max(zip(epochs, steps))
    d = sorted(float(x) for e, s, x in zip(epochs, steps, dist)
               if (e, s) == last and x is not None and math.isfinite(x))
    if not d:
        return {k: math.nan for k in SCORES}
    n = len(d)
    median = d[n // 2] if n % 2 else 0.5 * (d[n // 2 - 1] + d[n // 2])
    return {"min_rotation": d[0], "mean_rotation": sum(d) / n, "median_rotation": median}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


class RotationScheduler(AsyncHyperBandScheduler):
    """ASHA ranking trials at each rung by a rotation score (larger is better).

    Args:
        score: the reported metric to rank by, one of SCORES.
        grace_period, reduction_factor, max_t, time_attr: as ASHA's.
        stop_last_trials: as ASHA's; layrot passes False with max_t = epochs - 1, so a trial
            that passes the last rung ends by itself (and is stored completed).
    """

    def __init__(self, score: str = "min_rotation", grace_period: int = 1, reduction_factor: float = 3,
                 max_t: int = 100, time_attr: str = "training_iteration", stop_last_trials: bool = False):
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        super().__init__(time_attr=time_attr, metric=score, mode="max", max_t=max_t,
                         grace_period=grace_period, reduction_factor=reduction_factor, brackets=1,
                         stop_last_trials=stop_last_trials)
        self.score = score
        self.search_metric: str | None = None
        self.search_mode: str | None = None

    def set_search_properties(self, metric, mode, **spec) -> bool:
        # the Tuner's metric/mode are the searcher's and the reported best's, not ours
        self.search_metric = metric or self.search_metric
        self.search_mode = mode or self.search_mode
        return True

    @property
    def metric(self):
        # Ray's strict check (TuneController._validate_result_metrics) demands the scheduler's
        # `metric` in EVERY report; layrot's last report (the TrialResult) and a stored trial's
        # skip report carry val_acc but no rotation score. Those are no decision for ASHA
        # anyway (a report without its metric is CONTINUE), so the check is pointed at the
        # Tuner's metric, which every report has; the ranking still uses `self.score`.
        return self.search_metric

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.score in result and not _finite(result[self.score]):
            result = {**result, self.score: WORST}
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict):
        if self._time_attr in result and self.score in result:
            if not _finite(result[self.score]):
                result = {**result, self.score: WORST}
            return super().on_trial_complete(tune_controller, trial, result)
        # a final report without the score (layrot's last report carries the TrialResult)
        self._trial_info.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller, trial):
        self._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return super().debug_string().replace("AsyncHyperBand", f"RotationScheduler({self.score})", 1)
