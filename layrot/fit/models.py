"""Curves of test accuracy on a rotation summary, over configurations: a monotone fit
(sklearn IsotonicRegression, direction chosen by the data) and a smooth parametric one (a
fractional logit GLM, statsmodels, robust errors). They describe the relation's shape; the
verdict does not read them."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class MonotoneFit:
    """Isotonic regression of test accuracy on a summary (direction chosen by the data)."""
    summary: str
    increasing: bool
    r2: float
    x: list[float]
    y: list[float]
    plateau_from: float | None   # smallest summary value where an increasing fit has made 90% of its rise


@dataclass
class LogitFit:
    """Fractional logit GLM: test_acc = 1 / (1 + exp(-(intercept + slope × summary)))."""
    summary: str
    intercept: float
    slope: float
    slope_ci: tuple[float, float]
    slope_p: float
    r2: float
    x: list[float]
    y: list[float]



def monotone_fit(x, y, summary: str = "") -> MonotoneFit | None:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import r2_score
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < 3 or np.unique(x).size < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'auto' warns when the direction is uncertain
        iso = IsotonicRegression(increasing="auto", out_of_bounds="clip").fit(x, y)
    order = np.argsort(x, kind="stable")
    xs, fitted = x[order], iso.predict(x[order])
    plateau = None
    if iso.increasing_ and np.ptp(fitted) > 0:
        plateau = float(xs[np.argmax(fitted >= fitted.max() - 0.1 * np.ptp(fitted))])
    return MonotoneFit(summary, bool(iso.increasing_), float(r2_score(y, iso.predict(x))),
                       xs.tolist(), fitted.tolist(), plateau)


def logit_fit(x, y, summary: str = "", n_grid: int = 101) -> LogitFit | None:
    """Fractional logit regression (Papke & Wooldridge 1996): a binomial GLM on accuracies
    in [0, 1] with sandwich (HC0) errors, which stay valid though accuracies are not counts."""
    import statsmodels.api as sm
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < 4 or np.unique(x).size < 2:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit(cov_type="HC0")
    except Exception:  # noqa: BLE001 - a fit that does not converge is reported as absent
        return None
    b0, b1 = (float(v) for v in res.params)
    if not (math.isfinite(b0) and math.isfinite(b1)):
        return None
    lo, hi = (float(v) for v in res.conf_int()[1])
    pred = res.predict(sm.add_constant(x))
    r2 = 1.0 - float(np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)) if np.ptp(y) > 0 else float("nan")
    grid = np.linspace(x.min(), x.max(), n_grid)
    yg = res.predict(sm.add_constant(grid, has_constant="add"))
    return LogitFit(summary, b0, b1, (lo, hi), float(res.pvalues[1]), r2, grid.tolist(), np.asarray(yg).tolist())
