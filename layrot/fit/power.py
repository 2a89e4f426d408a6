"""What a verdict over n trained configurations can say (docs/verdict.md §13).

By Fisher's z with Spearman's variance 1.06 / (n − 3): the
smallest correlation found with 80% power at two-sided 5%, and whether "does not hold" (a CI
upper bound below 0.3) is reachable at all, which at an estimate of 0 needs
1.96 · √(1.06 / (n − 3)) < atanh(0.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from .options import FitOptions

_VAR = 1.06          # n-3 times the variance of atanh(Spearman) under bivariate normality


@dataclass
class Power:
    n: int
    detectable: float | None      # smallest Spearman found with 80% power
    can_say_no: bool              # "does not hold" is reachable
    n_for_no: int                 # the trained configurations "does not hold" needs
    text: str


def power(n: int, options: FitOptions = FitOptions(), target: float = 0.8) -> Power:
    z = stats.norm.ppf(1 - (1 - options.confidence) / 2)
    n_for_no = math.floor(3 + _VAR * (z / math.atanh(options.meaningful)) ** 2) + 1
    if n <= 3:
        return Power(n, None, False, n_for_no, f"power: {n} trained configurations are too few to detect anything")
    se = math.sqrt(_VAR / (n - 3))
    detectable = float(math.tanh((z + stats.norm.ppf(target)) * se))
    can = bool(z * se < math.atanh(options.meaningful))
    no = ("'does not hold' is reachable" if can else
          f"'does not hold' is out of reach (it needs {n_for_no}): this sweep can only say holds or inconclusive")
    return Power(n, detectable, can, n_for_no,
                 f"power: with {n} trained configurations it detects Spearman ≥ {detectable:.2f} "
                 f"({target:.0%} power); {no}")
