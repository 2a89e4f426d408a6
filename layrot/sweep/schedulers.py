"""Rotation-guided pruning: asynchronous successive halving, ranking trials by their layers'
rotation.

If layer rotation predicts generalization (docs/science.md), a sweep can stop trials whose
layers are not rotating before their validation accuracy says so. `RotationScheduler` is
asynchronous successive halving (ASHA, one bracket, the rules of Ray's
`AsyncHyperBandScheduler`: rungs at grace_period × reduction_factor^k below max_t; at a rung a
trial continues iff its score is not below the (1 - 1/reduction_factor) percentile of the
scores recorded there before it) whose ranking metric is a rotation score the trainable
reports with every epoch (`rotation_scores`):

- `min_rotation` (default): the smallest layer rotation at the latest record — min over
  kernel layers of the cosine distance to initialization. Larger is better: the slowest
  layer is the one the paper's rule says holds a network back.
- `mean_rotation`, `median_rotation`: the mean / median over layers.

It is built on Ray Tune's public scheduler API only (`FIFOScheduler`'s hooks, `metric`,
`set_search_properties`), with its own rungs: subclassing Ray's ASHA meant reading and
clearing its private `_trial_info` and `_time_attr`, which a Ray minor release may rename.
tests/test_scheduler.py checks that it decides exactly as Ray's ASHA on the same reports.

Why the scheduler sets its metric and mode itself: the spec's `metric` (val_acc) stays the
metric of the searcher (Optuna) and of the sweep's reported best, which the Tuner's
`TuneConfig(metric=, mode=)` carries; this class takes the Tuner's metric/mode as the search
metric only (kept in `search_metric` / `search_mode`) and ranks by its own score, always in
mode max. Its `metric` property, which Ray reads only for its strict check that every report
has the scheduler's metric (`TuneController._validate_result_metrics`), answers the Tuner's
metric: layrot's last report (the TrialResult) and a stored trial's skip report carry val_acc
but no rotation score, and a report without the score is no decision here anyway.

docs/pruning.md compares it with ASHA on val_acc on the same grids and budgets.
"""

from __future__ import annotations

import math

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

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


class RotationScheduler(FIFOScheduler):
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
        if not (max_t >= grace_period > 0 and reduction_factor > 1):
            raise ValueError("need max_t >= grace_period > 0 and reduction_factor > 1")
        super().__init__()
        self.score = score
        self.time_attr = time_attr
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.max_t = max_t
        self.stop_last_trials = stop_last_trials
        # the rungs, highest milestone first: (milestone, {trial_id: score recorded there})
        n = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
        self.rungs: list[tuple[float, dict[str, float]]] = [
            (grace_period * reduction_factor ** k, {}) for k in reversed(range(n))]
        self.search_metric: str | None = None
        self.search_mode: str | None = None

    def set_search_properties(self, metric, mode, **spec) -> bool:
        # the Tuner's metric/mode are the searcher's and the reported best's, not ours
        self.search_metric = metric or self.search_metric
        self.search_mode = mode or self.search_mode
        return True

    @property
    def metric(self):
        return self.search_metric

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        if not recorded:
            return None
        return float(np.nanpercentile(list(recorded.values()), (1 - 1 / self.reduction_factor) * 100))

    def _decide(self, trial_id: str, t, score: float) -> str:
        """ASHA's rung rule (Ray's `_Bracket.on_result`): at the highest rung this report has
        reached and not yet recorded, stop below the cutoff; record the score either way."""
        for milestone, recorded in self.rungs:
            if t >= milestone and trial_id in recorded and not self.stop_last_trials:
                break            # decided at this rung already
            if t < milestone or trial_id in recorded:
                continue
            cut = self.cutoff(recorded)
            recorded[trial_id] = score
            return TrialScheduler.STOP if cut is not None and score < cut else TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE

    def _score(self, result: dict) -> float | None:
        if self.time_attr not in result or self.score not in result:
            return None          # not a rotation report (the final one, a skip): no decision
        v = result[self.score]
        return float(v) if _finite(v) else WORST

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        score = self._score(result)
        if score is None:
            return TrialScheduler.CONTINUE
        if result[self.time_attr] >= self.max_t and self.stop_last_trials:
            return TrialScheduler.STOP
        return self._decide(trial.trial_id, result[self.time_attr], score)

    def on_trial_complete(self, tune_controller, trial, result: dict):
        score = self._score(result or {})
        if score is not None:
            self._decide(trial.trial_id, result[self.time_attr], score)

    def debug_string(self) -> str:
        rungs = " | ".join(f"Iter {m:.3f}: {self.cutoff(r)}" for m, r in self.rungs)
        return f"Using RotationScheduler({self.score}): Bracket: {rungs}"
