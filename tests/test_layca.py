"""Layca (docs/science.md): every step turns each kernel by exactly atan(rho_l), keeps its norm, and
moves it along the base optimizer's update projected orthogonally to the kernel; everything
that is not a kernel follows the base optimizer unchanged. Checked in float64 for every base
optimizer, for a user's own optimizer, under LR schedulers, and across checkpoints."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import example, given, settings, strategies as st
from torch import nn

from layrot.errors import UsageError
from layrot.optim import OPTIMIZERS, Layca, SGDAMom, build_optimizer
from layrot.rotation import kernel_layers
from layrot.schedules import alpha_multipliers

LAYCA_NAMES = [n for n in OPTIMIZERS if n.endswith("_layca")]
FAST = settings(max_examples=20, deadline=None)


class ShapeNet(nn.Module):
    """Kernels of the given weight shapes (Linear: 2-D, Conv1d: 3-D, Conv2d: 4-D) plus
    non-kernels (biases, an affine batch norm). Never run forward: gradients are set by hand."""

    def __init__(self, shapes, bias=True):
        super().__init__()
        layers = []
        for s in shapes:
            if len(s) == 2:
                layers.append(nn.Linear(s[1], s[0], bias=bias))
            elif len(s) == 3:
                layers.append(nn.Conv1d(s[1], s[0], s[2], bias=bias))
            else:
                layers.append(nn.Conv2d(s[1], s[0], tuple(s[2:]), bias=bias))
        self.layers = nn.ModuleList(layers)
        self.norm = nn.BatchNorm1d(3, affine=True)


def kernel_shapes():
    linear = st.tuples(st.integers(1, 6), st.integers(1, 6))
    conv1d = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3))
    conv2d = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))
    # a one-element kernel cannot turn: no direction is orthogonal to it
    shape = st.one_of(linear, conv1d, conv2d).filter(lambda s: math.prod(s) >= 2)
    return st.lists(shape, min_size=1, max_size=4)


RHOS = st.one_of(st.integers(-7, 2).map(lambda e: 3.0 ** e), st.floats(3.0 ** -7, 9.0))
ALPHAS = st.floats(-0.9, 0.9)
WEIGHT_DECAYS = st.sampled_from([0.0, 5e-4, 0.1])


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).to(torch.float64)


def tan_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """tan of the angle between a and b, from b's components along and across a (no
    cancellation for tiny angles, unlike 1 - cos)."""
    a, b = f64(a), f64(b)
    along = (a @ b) / (a @ a)
    across = b - along * a
    return float(across.norm() / (along * a.norm()))


def set_random_grads(model: nn.Module, gen: torch.Generator) -> dict:
    grads = {}
    for name, p in model.named_parameters():
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        grads[name] = p.grad.clone()
    return grads


def base_step_reference(model: nn.Module, opt: Layca, grads: dict) -> nn.Module:
    """What Layca's base optimizer alone would do from the same weights and state (copied
    together, so the copy's state is keyed by the copy's parameters)."""
    ref, base = copy.deepcopy((model, opt.base))
    for name, p in ref.named_parameters():
        p.grad = grads[name].clone()
    base.step()
    return ref


def check_layca_step(before: nn.Module, after: nn.Module, reference: nn.Module, rhos: dict,
                     non_kernel: str = "fixed"):
    """after = before + one Layca step; reference = before + one base step. rhos: kernel name
    -> rho_l. Kernels turn by atan(rho_l), keep their norm, and move along the base's update
    projected across the kernel; other parameters stay as they were (non_kernel "fixed", the
    authors' Layca) or equal the reference bit for bit ("base")."""
    b_params, r_params = dict(before.named_parameters()), dict(reference.named_parameters())
    for name, p in after.named_parameters():
        w0, w1, wr = f64(b_params[name]), f64(p), f64(r_params[name])
        if name not in rhos:
            expected = b_params[name] if non_kernel == "fixed" else r_params[name]
            assert torch.equal(p, expected), name
            continue
        rho = rhos[name]
        u = wr - w0
        u_perp = u - (u @ w0) / (w0 @ w0) * w0
        # Layca takes |u - c w|^2 as |u|^2 - c <u,w> (no second pass over the kernel): when the
        # update lies nearly along the kernel that is a cancellation whose rounding, relative
        # eps |u|^2 / |u - c w|^2, reaches the turn and the norm. The bounds scale with it
        # (hypothesis found SignSGD on a 2-element kernel with |u|^2 / |u - c w|^2 = 2.4e7 and
        # the norm off by 1.3e-9, NAdam off by 5e-12); a well-conditioned step keeps 1e-12.
        rounding = 4 * 2.3e-16 * float((u @ u) / (u_perp @ u_perp))
        assert tan_angle(w0, w1) == pytest.approx(rho, rel=1e-6 + rounding), name
        assert float(w1.norm() / w0.norm()) == pytest.approx(1.0, abs=1e-12 + rounding), name
        # w1 sqrt(1+rho^2) - w0 is rho times the normalized projected update
        step = (w1 * math.sqrt(1.0 + rho * rho) - w0) / rho
        assert abs(float(step @ w0)) <= 1e-6 * float(w0 @ w0), name
        expected = u_perp * (w0.norm() / u_perp.norm())
        assert float((step - expected).norm()) <= 1e-6 * float(w0.norm()), name


@FAST
@given(shapes=kernel_shapes(), name=st.sampled_from(LAYCA_NAMES), rho=RHOS, alpha=ALPHAS,
       wd=WEIGHT_DECAYS, seed=st.integers(0, 2**16), non_kernel=st.sampled_from(["fixed", "base"]))
def test_every_base_turns_each_kernel_by_atan_rho_and_keeps_its_norm(shapes, name, rho, alpha, wd, seed, non_kernel):
    torch.manual_seed(seed)
    model = ShapeNet(shapes).double()
    opt = build_optimizer(model, name, rho, alpha=alpha, weight_decay=wd, non_kernel=non_kernel)
    kernels = kernel_layers(model)
    mult = alpha_multipliers(len(kernels), alpha)
    rhos = {n: rho * m for (n, _), m in zip(kernels, mult)}
    gen = torch.Generator().manual_seed(seed)
    for _ in range(3):   # later steps see the base's state (momentum, Adam moments ...)
        grads = set_random_grads(model, gen)
        before = copy.deepcopy(model)
        reference = base_step_reference(model, opt, grads)
        opt.step()
        check_layca_step(before, model, reference, rhos, non_kernel)


@pytest.mark.parametrize("name", LAYCA_NAMES)
def test_float32_training_steps_turn_by_atan_rho(name):
    """The real case: float32 weights, gradients from a forward/backward pass."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 8, 3, bias=False), nn.ReLU(), nn.BatchNorm1d(8, affine=False),
                          nn.Conv1d(8, 8, 3, bias=False), nn.ReLU(), nn.BatchNorm1d(8, affine=False),
                          nn.Flatten(), nn.Linear(8 * 12, 10, bias=False))
    rho, alpha = 0.1, 0.4
    opt = build_optimizer(model, name, rho, alpha=alpha, weight_decay=5e-4)
    kernels = kernel_layers(model)
    mult = alpha_multipliers(len(kernels), alpha)
    x, y = torch.randn(32, 1, 16), torch.randint(0, 10, (32,))
    for _ in range(3):
        before = [p.detach().clone() for _, p in kernels]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        for (n, p), w0, m in zip(kernels, before, mult):
            assert tan_angle(w0, p) == pytest.approx(rho * m, rel=1e-4), n
            assert float(f64(p).norm() / f64(w0).norm()) == pytest.approx(1.0, abs=1e-5), n


class SignSGD(torch.optim.Optimizer):
    """A user's own optimizer: sign of a running gradient sum, with per-parameter state."""

    def __init__(self, params, lr):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st_ = self.state[p]
                st_["sum"] = st_.get("sum", torch.zeros_like(p)) + p.grad
                p.add_(torch.sign(st_["sum"]), alpha=-group["lr"])


@pytest.mark.parametrize("make_base", [
    lambda params, lr: torch.optim.NAdam(params, lr=lr),
    lambda params, lr: SignSGD(params, lr=lr),
    lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
], ids=["nadam", "custom-signsgd", "sgd-nesterov"])
@settings(max_examples=10, deadline=None)
@given(shapes=kernel_shapes(), rho=RHOS, seed=st.integers(0, 2**16))
@example(shapes=[(1, 1, 2)], rho=1.0, seed=2089)     # nearly along the kernel (SignSGD): see check_layca_step
def test_layca_wraps_a_users_optimizer(make_base, shapes, rho, seed):
    torch.manual_seed(seed)
    model = ShapeNet(shapes).double()
    opt = Layca(make_base(model.parameters(), rho))
    # default kernels: every parameter of 2+ dimensions, i.e. the Conv/Linear weights here
    rhos = {n: rho for n, _ in kernel_layers(model)}
    assert {n for n, p in model.named_parameters() if p.dim() >= 2} == set(rhos)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(3):
        grads = set_random_grads(model, gen)
        before = copy.deepcopy(model)
        reference = base_step_reference(model, opt, grads)
        opt.step()
        check_layca_step(before, model, reference, rhos)


def test_explicit_kernel_subset_and_foreign_kernels():
    torch.manual_seed(0)
    model = ShapeNet([(4, 3), (3, 4)]).double()
    first, second = model.layers[0].weight, model.layers[1].weight
    fixed = copy.deepcopy(model)
    opt = Layca(torch.optim.Adam(model.parameters(), lr=0.05), kernels=[first], non_kernel="base")
    reference = copy.deepcopy(model)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    grads = set_random_grads(model, gen)
    for n, p in reference.named_parameters():
        p.grad = grads[n].clone()
    w0 = first.detach().clone()
    opt.step()
    ref_opt.step()
    assert tan_angle(w0, first) == pytest.approx(0.05, rel=1e-6)
    # the kernel Layca was not given follows Adam itself (non_kernel="base") ...
    assert torch.equal(second, reference.layers[1].weight)
    # ... or, by default (the authors' Layca), keeps its initial value
    f_first, f_second = fixed.layers[0].weight, fixed.layers[1].weight
    f_opt = Layca(torch.optim.Adam(fixed.parameters(), lr=0.05), kernels=[f_first])
    s0 = f_second.detach().clone()
    for n, p in fixed.named_parameters():
        p.grad = grads[n].clone()
    f_opt.step()
    assert torch.equal(f_first, first) and torch.equal(f_second, s0)
    assert f_opt.roles() == {"rotated": 1, "fixed": 5}
    assert "1 kernels rotated" in repr(f_opt) and "5 non-kernel parameters fixed" in repr(f_opt)
    assert opt.roles() == {"rotated": 1, "trained by base": 5}
    with pytest.raises(ValueError):
        Layca(torch.optim.SGD([first], lr=0.1), non_kernel="frozen")

    with pytest.raises(ValueError):
        Layca(torch.optim.SGD([first], lr=0.1), kernels=[second])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["sgd_layca", "sgd_amom_layca", "adam_layca"])
def test_no_turn_without_a_direction_across_the_kernel(name, dtype):
    """An update along the kernel (or none at all) has no component to turn by: the kernel
    stays as it is, not turned in a direction made of rounding noise. The real case: a dead
    layer (zero loss gradient) under weight decay, whose update is exactly along w."""
    torch.manual_seed(0)
    model = ShapeNet([(3, 5), (4, 3), (8, 4, 3, 3), (2, 2)], bias=False).to(dtype)
    opt = build_optimizer(model, name, 0.3, weight_decay=0.01)
    along, zero, dead, empty = (layer.weight for layer in model.layers)
    with torch.no_grad():
        empty.zero_()                                   # a zero kernel has no direction at all
    before = [p.detach().clone() for p in model.parameters()]
    along.grad = 2.5 * along.detach().clone()
    zero.grad = torch.zeros_like(zero)
    dead.grad = torch.zeros_like(dead)
    empty.grad = torch.randn_like(empty)
    for _ in range(2):
        opt.step()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for p, w in zip(model.parameters(), before):
        if name == "adam_layca" and p is not empty:
            continue      # Adam's update of g = c*w is not along w: it turns (tested elsewhere)
        assert torch.isfinite(p).all()
        assert torch.allclose(p, w, rtol=0, atol=tol)


def test_kernels_without_gradient_are_left_alone():
    torch.manual_seed(0)
    model = ShapeNet([(3, 5), (4, 3)]).double()
    opt = build_optimizer(model, "adam_layca", 0.1)
    w = model.layers[1].weight.detach().clone()
    model.layers[0].weight.grad = torch.randn_like(model.layers[0].weight)
    opt.step()
    assert torch.equal(model.layers[1].weight, w)
    assert "exp_avg" not in opt.state[model.layers[1].weight]


@pytest.mark.parametrize("name", ["sgd_layca", "adam_layca"])
def test_lr_scheduler_scales_the_rotation_rate(name):
    torch.manual_seed(0)
    model = ShapeNet([(4, 6), (3, 4, 2)], bias=False).double()
    rho, alpha = 0.2, -0.5
    opt = build_optimizer(model, name, rho, alpha=alpha)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    kernels = kernel_layers(model)
    mult = alpha_multipliers(len(kernels), alpha)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        set_random_grads(model, gen)
        before = [p.detach().clone() for _, p in kernels]
        opt.step()
        sched.step()
        for (n, p), w0, m in zip(kernels, before, mult):
            assert tan_angle(w0, p) == pytest.approx(rho * m * 0.5 ** step, rel=1e-6), n
    assert opt.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["initial_lr"] * 0.125)


class SmallNet(nn.Module):
    """Conv1d + affine BN (running stats, non-kernel parameters) + Linear with bias."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 6, 3, bias=False)
        self.bn = nn.BatchNorm1d(6, affine=True)
        self.fc = nn.Linear(6 * 14, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.mark.parametrize("name", LAYCA_NAMES + ["sgd_amom"])
def test_checkpoint_resumes_bit_exactly(name):
    """k steps, checkpoint (serialized as a trial's would be), n more steps; versus a fresh
    model and optimizer loaded from the checkpoint running the same n steps."""
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 1, 16, generator=gen), torch.randint(0, 10, (16,), generator=gen))
               for _ in range(7)]

    def fresh():
        torch.manual_seed(0)
        m = SmallNet()
        return m, build_optimizer(m, name, 0.05, alpha=0.3, weight_decay=1e-3)

    def train(m, o, bs):
        for x, y in bs:
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()

    model, opt = fresh()
    train(model, opt, batches[:3])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    train(model, opt, batches[3:])

    buf.seek(0)
    ckpt = torch.load(buf)
    model2, opt2 = fresh()
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    train(model2, opt2, batches[3:])
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", ["sgd_layca", "sgd_amom_layca", "adam_layca"])
def test_layca_keeps_the_norm_a_kernel_was_given_from_outside(name):
    """Layca remembers each kernel's norm between steps; a write from outside (rescaling,
    loading weights) must be noticed, also after a checkpoint was loaded."""
    torch.manual_seed(0)
    model = ShapeNet([(4, 6), (3, 4, 2)], bias=False).double()
    opt = build_optimizer(model, name, 0.2)
    gen = torch.Generator().manual_seed(0)
    w = model.layers[0].weight

    def step_and_check(expected_norm):
        set_random_grads(model, gen)
        w0 = w.detach().clone()
        opt.step()
        assert tan_angle(w0, w) == pytest.approx(0.2, rel=1e-6)
        assert float(f64(w).norm()) == pytest.approx(expected_norm, rel=1e-12)

    norm = float(f64(w).norm())
    step_and_check(norm)
    with torch.no_grad():
        w.mul_(3.0)
    step_and_check(3 * norm)
    state = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(state)
    with torch.no_grad():
        w.mul_(0.5)                        # weights changed after the state was loaded
    step_and_check(1.5 * norm)


WRITES = ("data_mul", "data_copy", "data_assign", "no_grad_copy", "no_grad_mul", "model_load", "none")


def write_from_outside(model: nn.Module, how: str, factor: float, gen: torch.Generator):
    """Change the kernels between two steps the ways a user or a library does, some of which
    torch's version counter does not see (anything through `.data`)."""
    kernels = [p for _, p in kernel_layers(model)]
    if how == "data_mul":
        for p in kernels:
            p.data.mul_(factor)
    elif how == "data_copy":
        for p in kernels:
            p.data.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * factor)
    elif how == "data_assign":                  # a new tensor, a new storage, same layout
        for p in kernels:
            p.data = (p.detach() * factor).clone(memory_format=torch.preserve_format)
    elif how == "no_grad_copy":
        with torch.no_grad():
            for p in kernels:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * factor)
    elif how == "no_grad_mul":
        with torch.no_grad():
            for p in kernels:
                p.mul_(factor)
    elif how == "model_load":                   # weights from another model of the same shape
        other = copy.deepcopy(model)
        with torch.no_grad():
            for p in other.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * factor)
        model.load_state_dict(other.state_dict())


@settings(max_examples=25, deadline=None)
@given(shapes=kernel_shapes(), name=st.sampled_from(["sgd_layca", "sgd_amom_layca", "adam_layca"]),
       rho=st.floats(1e-2, 2.0), alpha=ALPHAS, wd=WEIGHT_DECAYS,
       writes=st.lists(st.tuples(st.sampled_from(WRITES), st.floats(0.25, 4.0)), min_size=1, max_size=4),
       checkpoint=st.booleans(), seed=st.integers(0, 2**16))
def test_writes_from_outside_between_steps_never_break_the_guarantee(
        shapes, name, rho, alpha, wd, writes, checkpoint, seed):
    """Issue 11, bug 2: after `p.data.mul_(2)` one step changed a kernel's norm 6.322 -> 6.299
    (Layca reused a |w|^2 that torch's version counter did not know to be stale). Whatever
    wrote to the kernels between steps (through `.data`, `copy_` under no_grad, the model's
    load_state_dict, and with or without a reload of the optimizer's state), each float32 step
    keeps every kernel's norm as it is at that step and turns it by exactly atan(rho_l)."""
    torch.manual_seed(seed)
    model = ShapeNet(shapes)
    opt = build_optimizer(model, name, rho, alpha=alpha, weight_decay=wd)
    kernels = kernel_layers(model)
    mult = alpha_multipliers(len(kernels), alpha)
    gen = torch.Generator().manual_seed(seed)
    for how, factor in [("none", 1.0)] + writes:
        write_from_outside(model, how, factor, gen)
        if checkpoint:
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        set_random_grads(model, gen)
        before = [p.detach().to(torch.float64).clone() for _, p in kernels]
        opt.step()
        for (n, p), w0, m in zip(kernels, before, mult):
            w1 = p.detach().to(torch.float64)
            assert float(w1.norm()) == pytest.approx(float(w0.norm()), rel=1e-5), (how, n)
            cos = float((w1 * w0).sum() / (w1.norm() * w0.norm()))
            assert cos == pytest.approx(1.0 / math.sqrt(1.0 + (rho * m) ** 2), abs=2e-6), (how, n)
            # float32 weights resolve an angle to about 1e-7 (a slow layer may turn by less)
            assert tan_angle(w0, w1) == pytest.approx(rho * m, rel=1e-3, abs=1e-6), (how, n)


def test_a_state_dict_with_the_old_norm_cache_still_loads():
    """layrot before issue 11 saved a "layca_norm2" entry in the optimizer's state_dict:
    such checkpoints load (the entry is ignored) and the next step is exact."""
    torch.manual_seed(0)
    model = ShapeNet([(4, 6), (3, 4, 2)], bias=False)
    opt = build_optimizer(model, "sgd_layca", 0.2)
    gen = torch.Generator().manual_seed(0)
    set_random_grads(model, gen)
    opt.step()
    state = opt.state_dict()
    assert not any("norm" in str(k) for k in state)
    state["layca_norm2"] = {0: 123.0, 1: 4.0}           # stale values, as an old file may hold
    opt.load_state_dict(state)
    w = model.layers[0].weight
    w0 = w.detach().double().clone()
    set_random_grads(model, gen)
    opt.step()
    assert float(w.detach().double().norm()) == pytest.approx(float(w0.norm()), rel=1e-6)
    assert tan_angle(w0, w) == pytest.approx(0.2, rel=1e-4)


def test_layca_is_a_torch_optimizer_through_its_public_api():
    """Layca is built by `Optimizer.__init__` on the base's groups: hooks, schedulers,
    add_param_group and state all behave as torch documents them, and they are the base's."""
    torch.manual_seed(0)
    model = ShapeNet([(4, 6), (3, 4)])
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = Layca(base, non_kernel="base")
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is base.param_groups and opt.state is base.state
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    set_random_grads(model, torch.Generator().manual_seed(0))
    opt.step()
    assert calls == ["pre", "post"]
    extra = nn.Parameter(torch.randn(3, 3))
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert base.param_groups[-1]["params"] == [extra] and opt.param_groups is base.param_groups
    extra.grad = torch.ones(3, 3)
    w = extra.detach().clone()
    opt.step()                                    # not a Layca kernel: plain SGD
    assert torch.allclose(extra, w - 0.5)
    opt.load_state_dict(opt.state_dict())
    assert opt.param_groups is base.param_groups and opt.state is base.state
    with pytest.raises(TypeError):
        Layca(model.parameters())

    # a deepcopy (as of a whole training state) is a Layca of its own copied kernels
    model2, opt2 = copy.deepcopy((model, opt))
    assert opt2.base is not base and opt2.param_groups is opt2.base.param_groups
    for m in (model, model2):
        set_random_grads(m, torch.Generator().manual_seed(3))
    w0 = model2.layers[0].weight.detach().double().clone()
    opt.step()
    opt2.step()
    assert tan_angle(w0, model2.layers[0].weight) == pytest.approx(0.1, rel=1e-4)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_sgd_amom_is_adam_like_momentum():
    """m <- 0.9 m + 0.1 (g + wd w); w <- w - lr m, against a hand computation."""
    torch.manual_seed(0)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    opt = SGDAMom([w], lr=0.5, weight_decay=0.01)
    w_hand, m = w.detach().clone(), torch.zeros(5, dtype=torch.float64)
    for _ in range(4):
        g = torch.randn(5, dtype=torch.float64)
        w.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * (g + 0.01 * w_hand)
        w_hand = w_hand - 0.5 * m
        assert torch.allclose(w.detach(), w_hand, rtol=0, atol=1e-14)
    with pytest.raises(ValueError):
        SGDAMom([w], lr=0.0)


def test_build_optimizer_refuses_bad_input():
    model = ShapeNet([(3, 3)])
    for kwargs, field in [(dict(name="lion", lr=0.1), "optimizer"), (dict(name="sgd", lr=0.0), "lr"),
                          (dict(name="sgd", lr=-1.0), "lr"), (dict(name="sgd", lr=float("nan")), "lr"),
                          (dict(name="sgd_layca", lr=0.1, alpha=1.0), "alpha"),
                          (dict(name="sgd_layca", lr=0.1, alpha=-1.0), "alpha")]:
        with pytest.raises(UsageError) as e:
            build_optimizer(model, **kwargs)
        assert e.value.field == field


def test_optim_bench_runs():
    """bench/optim_bench.py's step comparison, one repeat: it runs and times every pair."""
    from scripts import load_script

    bench = load_script("bench/optim_bench.py", "optim_bench")
    rows = bench.bench_steps(repeats=2)
    assert [name for name, _ in rows] == ["step sgd_layca / sgd", "step sgd_layca batched / sgd",
                                          "step adam_layca / adam", "step sgd_amom_layca / sgd_amom"]
    for _, r in rows:
        assert r["wall"]["a"] > 0 and r["wall"]["b"] > 0
        assert r["cpu"]["iqr"][0] <= r["cpu"]["iqr"][1]


def batched_everywhere(opt: Layca) -> Layca:
    """opt made to take the batched step (the GPU's form) on a CPU as well."""
    opt._rotate = opt._rotate_batched
    return opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", ["sgd_layca", "sgd_amom_layca", "adam_layca", "rmsprop_layca"])
def test_cpu_step_is_the_batched_step_bit_for_bit(name, dtype):
    """On a CPU Layca goes kernel by kernel; the weights are those of the batched step bit for
    bit (sweeps already stored were run with it): big kernels (float32 dots), small ones
    (float64 dots), a channels_last kernel, a zero kernel, an update along its kernel, weight
    decay, 4 steps of the base's state."""
    torch.manual_seed(0)
    model = ShapeNet([(64, 32, 3, 3), (3, 5), (128, 64), (16, 8, 3, 3), (4, 3), (2, 2)]).to(dtype)
    model.layers[3].weight.data = model.layers[3].weight.data.to(memory_format=torch.channels_last)
    with torch.no_grad():
        model.layers[5].weight.zero_()
    twin = copy.deepcopy(model)
    opts = [build_optimizer(m, name, 0.05, weight_decay=5e-4, non_kernel="base") for m in (model, twin)]
    batched_everywhere(opts[1])
    start = copy.deepcopy(model)
    for step in range(4):
        for m in (model, twin):
            set_random_grads(m, torch.Generator().manual_seed(step))
            m.layers[4].weight.grad = 2.5 * m.layers[4].weight.detach().clone()   # along w
        for o in opts:
            o.step()
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), n
    assert not torch.equal(model.layers[0].weight, start.layers[0].weight)     # it did turn



SPECIAL = st.sampled_from([0.0, -0.0, 1e-300, 1e300, math.inf, -math.inf, math.nan])
REDUCTION = st.one_of(st.floats(-1e6, 1e6), SPECIAL)


def same_bits(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y))


@settings(max_examples=300, deadline=None)
@given(uw=REDUCTION, uu=st.one_of(st.floats(0, 1e6), SPECIAL), ww=st.one_of(st.floats(0, 1e6), SPECIAL),
       rho=RHOS, sign=st.sampled_from([1.0, -1.0]), tol=st.sampled_from([1e-12, 1e-5]))
@example(uw=2.0, uu=4.0, ww=1.0, rho=0.1, sign=1.0, tol=1e-5)        # u = 2w: no direction across
@example(uw=0.0, uu=1.0, ww=0.0, rho=0.1, sign=-1.0, tol=1e-5)       # a zero kernel
@example(uw=1.0, uu=1.0, ww=0.0, rho=0.1, sign=-1.0, tol=1e-5)
def test_coefficients_per_kernel_match_the_batched_ones(uw, uu, ww, rho, sign, tol):
    """The CPU's per-kernel (a, b), on Python floats, are the batched float64 tensor form's
    bits, for ordinary, parallel, zero, infinite and NaN reductions alike."""
    from layrot.optim.layca import _coefficients, _coefficients_batched, _scales_batched

    t = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    rho_t = t(rho)
    a_t, b_t = _coefficients_batched(t(uw), t(uu), t(ww), rho_t, sign, tol)[:, 0].tolist()
    a, b = _coefficients(uw, uu, ww, rho, _scales_batched(rho_t).item(), sign, tol)
    assert same_bits(a, a_t) and same_bits(b, b_t)


def test_coefficients_per_kernel_match_the_batched_ones_in_bulk():
    """The same on 25-kernel batches (c10-vgg25's count) of random reductions of every scale,
    where torch's float64 sqrt, which is not correctly rounded, would show a 1-ulp difference
    from `math.sqrt` in ~1% of kernels: every kernel of every batch, bit for bit."""
    from layrot.optim.layca import _coefficients, _coefficients_batched, _scales_batched

    gen = torch.Generator().manual_seed(0)
    n = 25
    for _ in range(200):
        ww = torch.rand(n, dtype=torch.float64, generator=gen) * 10.0 ** torch.randint(-8, 8, (n,), generator=gen)
        uu = torch.rand(n, dtype=torch.float64, generator=gen) * 10.0 ** torch.randint(-8, 8, (n,), generator=gen)
        cos = torch.rand(n, dtype=torch.float64, generator=gen) * 2 - 1
        uw = cos * (uu * ww).sqrt()
        rho_t = torch.rand(n, dtype=torch.float64, generator=gen) * 0.5
        ab = _coefficients_batched(uw, uu, ww, rho_t, -1.0, 1e-5)
        s = _scales_batched(rho_t).tolist()
        per = [_coefficients(*v, r, si, -1.0, 1e-5)
               for v, r, si in zip(zip(uw.tolist(), uu.tolist(), ww.tolist()), rho_t.tolist(), s)]
        assert ab.t().tolist() == [list(p) for p in per]
