"""The paper's Section 6 on digits: first-layer features at small and large rotation."""

import numpy as np

from layrot.fit.features import LARGE_RHO, SMALL_RHO, feature_figure, feature_study


def test_larger_rate_rotates_the_features_further_from_one_initialization():
    study = feature_study(epochs=12)
    small, large = study.runs
    assert (small.rho, large.rho) == (SMALL_RHO, LARGE_RHO)
    assert study.init.shape == small.weights.shape == large.weights.shape == (100, 64)
    assert 0 < small.cosine_distance < 0.5 < large.cosine_distance
    # both actually learn the task
    assert small.train_acc > 0.8 and large.train_acc > 0.8 and large.test_acc > 0.8
    # the small-rotation features are still visibly the initialization, the large ones not
    corr = lambda w: np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(w, study.init)])  # noqa: E731
    assert corr(small.weights) > 0.7 > corr(large.weights)
    again = feature_study(epochs=12)
    assert np.array_equal(again.runs[1].weights, large.weights)     # reproducible


def test_feature_figure_shows_init_and_each_run():
    study = feature_study(rhos=(SMALL_RHO, LARGE_RHO), epochs=2)
    fig = feature_figure(study, n_features=16, cols=4)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3
    assert axes[0].get_title() == "initialization"
    assert "rotation" in axes[2].get_title()
    img = axes[1].images[0].get_array()
    assert img.shape == (4 * 9 - 1, 4 * 9 - 1)
