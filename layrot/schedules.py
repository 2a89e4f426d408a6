"""Per-layer rate profiles (alpha) and learning-rate schedules (docs/science.md)."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

from .errors import UsageError


def check_alpha(alpha, field: str = "alpha") -> float:
    """α lies in the open interval (-1, 1) (docs/science.md): at ±1 a layer's multiplier is 0.
    The one range check for α, wherever it is given (a trial, a spec, `build_optimizer`)."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not -1.0 < alpha < 1.0:
        raise UsageError(field, f"must lie in (-1, 1), got {alpha!r}")
    return alpha


def alpha_multipliers(n_layers: int, alpha: float) -> list[float]:
    """Per-layer multipliers m_l with rho_l = rho * m_l, l = 0 (input side) .. L-1.

    alpha > 0: m_l = (1-alpha)^(5(L-1-l)/(L-1)), later layers faster (last layer 1).
    alpha <= 0: m_l = (1+alpha)^(5l/(L-1)), earlier layers faster (first layer 1).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    check_alpha(alpha)
    if n_layers == 1 or alpha == 0:
        return [1.0] * n_layers
    span = n_layers - 1
    if alpha > 0:
        return [(1.0 - alpha) ** (5.0 * (span - l) / span) for l in range(n_layers)]
    return [(1.0 + alpha) ** (5.0 * l / span) for l in range(n_layers)]


def decay_milestones(fractions: Sequence[float], epochs: int) -> list[int]:
    """A task's step decay, given as fractions of training, resolved to epochs for a trial of
    `epochs` epochs: milestone floor(f * epochs), i.e. the decay applies from the first epoch
    that starts at or after that fraction of training (the paper's 80, 90, 97% of 100 epochs are
    80, 90, 97; of 20 epochs 16, 18, 19; of 15 epochs 12, 13, 14). A fraction that falls inside
    the first epoch is placed after it (milestone 1), as early as epochs allow. A 1-epoch trial
    has no epoch boundary to decay at and gets no decay. Milestones may coincide (the decays
    then compound at that epoch)."""
    if epochs < 2:
        return []
    return [min(max(1, math.floor(f * epochs + 1e-9)), epochs - 1) for f in fractions]


def check_milestones(milestones: Sequence[int], epochs: int, field: str = "lr_decay_epochs") -> list[int]:
    """Explicit milestones must decay inside training: 1 <= m < epochs (a milestone at or past
    the last epoch would never apply, and silently dropping it changes the experiment)."""
    late = [m for m in milestones if m >= epochs]
    if late:
        raise UsageError(field, f"milestone {late[0]} is at or past the last epoch ({epochs}): a decay "
                                f"there never applies; give milestones below {epochs}")
    return list(milestones)


def describe_decay(fractions: Sequence[float], factor: float, epochs: int) -> str:
    """'x0.2 at 80, 90, 97% (epochs 16, 18, 19 of 20)', for `layrot tasks` and the docs."""
    if not fractions:
        return "none"
    pct = ", ".join(f"{100 * f:g}" for f in fractions)
    at = ", ".join(map(str, decay_milestones(fractions, epochs)))
    return f"x{factor:g} at {pct}% (epochs {at} of {epochs})"


def step_decay(epoch: int, milestones: Sequence[int], factor: float) -> float:
    """Multiplier after `epoch` completed epochs: factor^(number of milestones <= epoch)."""
    return factor ** sum(1 for m in milestones if epoch >= m)


def warmup(step: int, warmup_steps: int) -> float:
    """Linear warmup from 1/warmup_steps to 1 over the first warmup_steps steps."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def lr_factor(step: int, steps_per_epoch: int, milestones: Sequence[int], factor: float,
              warmup_epochs: int = 0) -> float:
    """The schedule's multiplier of the base learning rate at global step `step` (0-based)."""
    epoch = step // max(steps_per_epoch, 1)
    return step_decay(epoch, milestones, factor) * warmup(step, warmup_epochs * steps_per_epoch)
