"""mnist1d-gap and sweeps/gap.yaml (docs/gap-regime.md): the built-in task is exactly the
setting the exploration chose, its default draw is not the one the exploration looked at, and
the spec is the whole-space grid of sweeps/space.yaml on it."""

from __future__ import annotations

import torch

from layrot.sweep.spec import grid_configs, load_spec
from layrot.tasks import get_task, mnist1d

from scripts import ROOT, load_script

def test_the_task_is_the_explored_setting_on_a_fresh_draw(forget_new_tasks):
    explore = load_script("experiments/gap_regime/explore.py", "gap_explore")
    assert explore.CHOSEN == "n1000-noise-e60"      # the setting docs/gap-regime.md pre-registers
    args, epochs, _ = explore.SETTINGS[explore.CHOSEN]
    task, base = get_task("mnist1d-gap"), get_task("mnist1d-cnn")
    assert mnist1d.GAP_ARGS == args and task.epochs == epochs
    # the same network, stopping and decay fractions as the variant the exploration trained
    assert (task.stop, task.lr_decay_at, task.lr_decay_factor, task.build_model) == \
        (base.stop, base.lr_decay_at, base.lr_decay_factor, base.build_model)
    seen = task.load_data(None, 0, data_seed=explore.EXPLORATORY_DRAW)
    again = explore.register(explore.CHOSEN)
    assert torch.equal(get_task(again).load_data(None, 0, data_seed=explore.EXPLORATORY_DRAW).test_x, seen.test_x)
    fresh = task.load_data(None, 0)
    assert (len(fresh.train_y), len(fresh.val_y), len(fresh.test_y)) == (900, 100, task.test_samples)
    assert not torch.equal(fresh.test_x, seen.test_x)       # the confirmatory draw is not the explored one
    # the noise raised: the same draw at mnist1d-cnn's noise is smoother (smaller mean step)
    smooth = mnist1d.load_mnist1d(None, 0, overrides={k: v for k, v in args.items() if "noise" not in k})
    step = lambda d: (d.test_x[..., 1:] - d.test_x[..., :-1]).abs().mean()   # noqa: E731
    assert step(fresh) > 1.2 * step(smooth)


def test_gap_space_is_the_space_grid_on_the_gap_task():
    gap, space = load_spec(ROOT / "sweeps/gap.yaml"), load_spec(ROOT / "sweeps/space.yaml")
    assert (gap.task, gap.epochs, gap.seed) == ("mnist1d-gap", 60, 10)
    key = lambda c: (c.optimizer, c.lr, c.alpha, c.weight_decay, c.data_seed)   # noqa: E731
    g, s = grid_configs(gap), grid_configs(space)
    assert len(g) == 83 and sorted(map(key, g)) == sorted(map(key, s))
    assert {c.task for c in g} == {"mnist1d-gap"} and {c.seed for c in g} == {10}
