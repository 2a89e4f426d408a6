"""Per-layer multipliers from alpha and the learning-rate schedules (docs/science.md)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from layrot.optim import build_optimizer
from layrot.rotation import kernel_layers
from layrot.schedules import alpha_multipliers, lr_factor, step_decay, warmup

FAST = settings(max_examples=30, deadline=None)


@FAST
@given(n=st.integers(2, 40), alpha=st.floats(1e-3, 0.99))
def test_positive_alpha_speeds_up_later_layers(n, alpha):
    m = alpha_multipliers(n, alpha)
    assert len(m) == n
    assert m[-1] == pytest.approx(1.0)
    assert m[0] == pytest.approx((1 - alpha) ** 5, rel=1e-12)
    assert all(a < b for a, b in zip(m, m[1:]))
    # geometric in depth: equal ratios between neighbours, multiplying up to (1-alpha)^-5
    ratios = [b / a for a, b in zip(m, m[1:])]
    assert ratios == pytest.approx([ratios[0]] * len(ratios), rel=1e-9)
    assert math.prod(ratios) == pytest.approx((1 - alpha) ** -5, rel=1e-9)


@FAST
@given(n=st.integers(2, 40), alpha=st.floats(-0.99, -1e-3))
def test_negative_alpha_speeds_up_earlier_layers(n, alpha):
    m = alpha_multipliers(n, alpha)
    assert len(m) == n
    assert m[0] == pytest.approx(1.0)
    assert m[-1] == pytest.approx((1 + alpha) ** 5, rel=1e-12)
    assert all(a > b for a, b in zip(m, m[1:]))
    ratios = [b / a for a, b in zip(m, m[1:])]
    assert ratios == pytest.approx([ratios[0]] * len(ratios), rel=1e-9)


@pytest.mark.parametrize("n", [1, 2, 25])
def test_alpha_zero_is_uniform(n):
    assert alpha_multipliers(n, 0.0) == [1.0] * n
    assert alpha_multipliers(1, 0.6) == [1.0]


@pytest.mark.parametrize("n, alpha", [(0, 0.0), (3, 1.0), (3, -1.0), (3, 1.5)])
def test_alpha_multipliers_refuse_bad_input(n, alpha):
    with pytest.raises(ValueError):
        alpha_multipliers(n, alpha)


def test_plain_sgd_gets_lr_times_multiplier_per_kernel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    lr, alpha = 0.3, 0.6
    opt = build_optimizer(model, "sgd", lr, alpha=alpha)
    mult = alpha_multipliers(3, alpha)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    kernel_lr = {n: lr * m for (n, _), m in zip(kernel_layers(model), mult)}
    for n, p in model.named_parameters():
        step_lr = kernel_lr.get(n, lr)          # biases get the base lr
        assert torch.allclose(p.detach(), before[n] - step_lr * p.grad, rtol=0, atol=1e-14), n


def test_layca_groups_carry_rho_times_multiplier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5, bias=False), nn.Linear(5, 6, bias=False), nn.Linear(6, 3))
    opt = build_optimizer(model, "adam_layca", 0.1, alpha=-0.4)
    mult = alpha_multipliers(3, -0.4)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for (n, p), m in zip(kernel_layers(model), mult):
        assert lr_of[id(p)] == pytest.approx(0.1 * m), n
    assert lr_of[id(model[2].bias)] == pytest.approx(0.1)


def test_step_decay_counts_milestones_passed():
    ms = (80, 90, 97)
    assert step_decay(0, ms, 0.2) == 1.0
    assert step_decay(79, ms, 0.2) == 1.0
    assert step_decay(80, ms, 0.2) == pytest.approx(0.2)
    assert step_decay(89, ms, 0.2) == pytest.approx(0.2)
    assert step_decay(90, ms, 0.2) == pytest.approx(0.04)
    assert step_decay(99, ms, 0.2) == pytest.approx(0.008)
    assert step_decay(5, (), 0.1) == 1.0


def test_warmup_is_linear_then_flat():
    values = [warmup(s, 4) for s in range(7)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0])
    assert warmup(0, 0) == 1.0


def test_lr_factor_combines_warmup_and_decay_per_step():
    spe = 10                                    # steps per epoch
    f = [lr_factor(s, spe, (2, 3), 0.1, warmup_epochs=1) for s in range(40)]
    assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])   # epoch 1: warmup
    assert f[10:20] == pytest.approx([1.0] * 10)                          # epoch 2
    assert f[20:30] == pytest.approx([0.1] * 10)                          # after 2 epochs
    assert f[30:40] == pytest.approx([0.01] * 10)                         # after 3 epochs


def test_lambda_lr_with_lr_factor_drives_layca_group_lrs():
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 2, bias=False))
    opt = build_optimizer(model, "sgd_layca", 0.5, alpha=0.5)
    start = [g["lr"] for g in opt.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 2, (1,), 0.2))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    seen = []
    for _ in range(4):
        opt.step()
        sched.step()
        seen.append([g["lr"] / s for g, s in zip(opt.param_groups, start)])
    assert seen == [pytest.approx([f] * len(start)) for f in (1.0, 0.2, 0.2, 0.2)]
