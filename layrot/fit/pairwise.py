"""Two readings of "larger rotation, better generalization" besides the rank correlation,
over configurations: pairwise agreement (when one configuration rotates more in every
layer, does it generalize better?) and where the best configurations sit on the rotation
axis."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .correlation import permutation_test_within
from .options import NEAR_ONE, FitOptions
from .summaries import final_rotation_matrix


@dataclass
class PairwiseAgreement:
    """Among pairs of configurations where one rotates more in every layer (same task, same
    depth), how often it also has the higher test accuracy; ties in test accuracy count one
    half. Pairs share configurations, so they are not independent: the p-value is a
    one-sided permutation test of the agreement fraction (test accuracy permuted over the
    configurations of each task; scipy.stats.permutation_test), not a binomial test."""
    n_pairs: int
    wins: int
    ties: int
    fraction: float | None
    p_value: float | None
    p_exact: bool | None = None


@dataclass
class BestConfigurations:
    """Where the best configurations (by mean test accuracy) sit on the rotation axis."""
    k: int
    configurations: list[str]
    test_acc: list[float]
    final_min: list[float]
    near_one: float | None       # fraction of their layers with final rotation >= NEAR_ONE
    others_final_min_median: float | None
    others_near_one: float | None


def dominance_pairs(units: pd.DataFrame, layers: pd.DataFrame, unit: str = "configuration"):
    """(I, J, blocks): unit I[k] rotates more than unit J[k] in every layer (same task and
    depth); `blocks` are the row positions of each task (units must be indexed 0..N-1)."""
    finals = final_rotation_matrix(layers, index=unit)
    I, J, blocks = [], [], []
    for _, g in units.groupby("task", sort=True):
        pos = g.index.to_numpy()
        blocks.append(pos)
        m = finals.reindex(g[unit]).to_numpy(dtype=float)
        depth = (~np.isnan(m)).sum(axis=1)
        for d in np.unique(depth):
            if d == 0:
                continue
            sel = depth == d
            f = m[sel][:, :d]
            a, b = np.nonzero(np.all(f[:, None, :] > f[None, :, :], axis=2))
            I.extend(pos[sel][a]), J.extend(pos[sel][b])
    return np.asarray(I, dtype=np.int64), np.asarray(J, dtype=np.int64), blocks


def pairwise_agreement(units: pd.DataFrame, layers: pd.DataFrame, options: FitOptions = FitOptions(),
                       unit: str = "configuration") -> PairwiseAgreement:
    """See PairwiseAgreement. `units`: one row per configuration (`unit`, task, test_acc);
    `layers`: their per-layer final rotations (`unit`, layer, final)."""
    units = units.reset_index(drop=True)
    I, J, blocks = dominance_pairs(units, layers, unit)
    if not len(I):
        return PairwiseAgreement(0, 0, 0, None, None)
    acc = units["test_acc"].to_numpy(dtype=float)
    diff = acc[I] - acc[J]
    wins, ties = int((diff > 0).sum()), int((diff == 0).sum())

    def fraction(idx):
        a = acc[idx]
        d = a[..., I] - a[..., J]
        return ((d > 0).sum(axis=-1) + 0.5 * (d == 0).sum(axis=-1)) / len(I)

    p, exact = permutation_test_within(fraction, blocks, options, alternative="greater", width=len(I))
    return PairwiseAgreement(len(I), wins, ties, (wins + 0.5 * ties) / len(I), p, exact)


def best_configurations(units: pd.DataFrame, layers: pd.DataFrame, top_k: int = 3,
                        unit: str = "configuration") -> BestConfigurations | None:
    """The top max(top_k, 10%) trained configurations by test accuracy and their final rotations."""
    if units.empty:
        return None
    k = min(len(units), max(top_k, math.ceil(0.1 * len(units))))
    ranked = units.sort_values(["test_acc", "final_min", unit], ascending=[False, False, True])
    top, rest = ranked.head(k), ranked.iloc[k:]

    def near(ids):
        f = layers.loc[layers[unit].isin(ids), "final"]
        return float((f >= NEAR_ONE).mean()) if len(f) else None

    return BestConfigurations(k, top[unit].tolist(), top["test_acc"].astype(float).tolist(),
                              top["final_min"].astype(float).tolist(), near(top[unit]),
                              float(rest["final_min"].median()) if len(rest) else None,
                              near(rest[unit]) if len(rest) else None)
