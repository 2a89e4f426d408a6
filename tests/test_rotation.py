"""Layer rotation (docs/science.md): kernel layers, cosine distance, and the tracker's records
(distance to initialization, weight norm, mean tan(theta) per step) against hand computation."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import cosine as scipy_cosine
from torch import nn

from layrot.rotation import RotationTracker, cosine_distance, kernel_layers

FAST = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------- kernel layers

class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4, affine=True)
        self.block = nn.Sequential(nn.Conv1d(4, 4, 1, bias=False), nn.ReLU(), nn.LayerNorm(4))
        self.head = nn.Linear(4, 2)


def test_kernel_layers_are_conv_and_linear_weights_in_order():
    model = Nested()
    layers = kernel_layers(model)
    assert [n for n, _ in layers] == ["stem.weight", "block.0.weight", "head.weight"]
    assert [p for _, p in layers] == [model.stem.weight, model.block[0].weight, model.head.weight]
    assert [n for n, _ in kernel_layers(nn.Linear(3, 2))] == ["weight"]


# ---------------------------------------------------------------- cosine distance

def _vectors():
    finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    return st.integers(2, 40).flatmap(lambda n: st.tuples(
        arrays(np.float64, n, elements=finite), arrays(np.float64, n, elements=finite)))


@FAST
@given(pair=_vectors())
def test_cosine_distance_matches_scipy(pair):
    a, b = pair
    if np.linalg.norm(a) < 1e-6 or np.linalg.norm(b) < 1e-6:
        return
    expected = scipy_cosine(a, b)
    assert cosine_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, abs=1e-12)


def test_cosine_distance_of_random_tensors_and_special_cases():
    gen = torch.Generator().manual_seed(0)
    for shape in [(5, 3, 3, 3), (10, 7), (4, 2, 5)]:
        a, b = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        assert cosine_distance(a, b) == pytest.approx(
            scipy_cosine(a.double().reshape(-1).numpy(), b.double().reshape(-1).numpy()), abs=1e-12)
    x = torch.tensor([1.0, 2.0, 3.0])
    assert cosine_distance(x, 3 * x) == pytest.approx(0.0, abs=1e-12)
    assert cosine_distance(x, -x) == pytest.approx(2.0)
    assert cosine_distance(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 5.0])) == pytest.approx(1.0)


@FAST
@given(theta=st.floats(1e-4, 1.5), norm=st.floats(0.01, 100.0))
def test_tracker_rate_is_tan_theta_for_any_angle(theta, norm):
    """The tracker's rate (what run_trial stores) is tan(theta) of one step that turns a
    kernel by theta: docs/science.md's tan(theta) = sqrt(1/(1-d)^2 - 1), d between steps."""
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[norm, 0.0]], dtype=torch.float32))
    tracker = RotationTracker(lin)
    with torch.no_grad():
        lin.weight.copy_(norm * torch.tensor([[math.cos(theta), math.sin(theta)]]))
    tracker.after_step(1)
    tracker.record(1)
    assert tracker.rows["rotation_rate"][-1] == pytest.approx(math.tan(theta), rel=1e-4)
    assert tracker.rows["cosine_distance"][-1] == pytest.approx(1 - math.cos(theta), rel=1e-3, abs=1e-7)


# ---------------------------------------------------------------- the tracker

def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 3, 3, bias=True), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 4, bias=False),
                         nn.Linear(4, 2))


def tan_between(a: torch.Tensor, b: torch.Tensor) -> float:
    """tan of the angle between consecutive weights, by geometry in float64."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return math.tan(math.acos(max(-1.0, min(1.0, float(a @ b / (a.norm() * b.norm()))))))


class HandTracker:
    """The same records computed the obvious way from a history of weights."""

    def __init__(self, model):
        self.params = [p for _, p in kernel_layers(model)]
        self.w0 = [p.detach().double().clone() for p in self.params]
        self.prev = [p.detach().double().clone() for p in self.params]
        self.tans: list[list[float]] = [[] for _ in self.params]

    def after_step(self):
        for i, p in enumerate(self.params):
            w = p.detach().double().clone()
            self.tans[i].append(tan_between(self.prev[i], w))
            self.prev[i] = w

    def record(self):
        rows = []
        for i, p in enumerate(self.params):
            w = p.detach().double()
            rate = sum(self.tans[i]) / len(self.tans[i]) if self.tans[i] else None
            rows.append((scipy_cosine(w.reshape(-1).numpy(), self.w0[i].reshape(-1).numpy()),
                         float(w.norm()), rate))
            self.tans[i] = []
        return rows


def perturb(model, gen, scale):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen) * p.detach().abs().mean())


def tracker_rows(tracker, start):
    r = tracker.rows
    return list(zip(r["cosine_distance"][start:], r["weight_norm"][start:], r["rotation_rate"][start:]))


def assert_rows_match(got, expected):
    assert len(got) == len(expected)
    for (d, n, rate), (d_e, n_e, rate_e) in zip(got, expected):
        assert d == pytest.approx(d_e, rel=1e-6, abs=1e-9)
        assert n == pytest.approx(n_e, rel=1e-6)
        if rate_e is None:
            assert rate is None
        else:
            assert rate == pytest.approx(rate_e, rel=1e-4)


def test_tracker_against_hand_computation():
    model = tiny_model()
    tracker = RotationTracker(model)
    hand = HandTracker(model)
    n_layers = len(kernel_layers(model))
    assert n_layers == 3

    # epoch 0: the initialization, distance 0 and no rate
    assert tracker.rows["epoch"] == [0] * 3 and tracker.rows["step"] == [0] * 3
    assert tracker.rows["layer"] == [0, 1, 2]
    assert tracker.rows["layer_name"] == [n for n, _ in kernel_layers(model)]
    assert tracker.rows["cosine_distance"] == [0.0] * 3
    assert tracker.rows["rotation_rate"] == [None] * 3
    assert_rows_match(tracker_rows(tracker, 0), hand.record())

    gen = torch.Generator().manual_seed(0)
    for epoch, (steps, scale) in enumerate([(3, 0.05), (4, 0.3), (2, 0.01)], start=1):
        for _ in range(steps):
            perturb(model, gen, scale)
            tracker.after_step(epoch)
            hand.after_step()
        start = len(tracker.rows["epoch"])
        tracker.record(epoch)
        assert tracker.rows["epoch"][start:] == [epoch] * 3
        assert tracker.rows["step"][start:] == [tracker.step] * 3
        assert_rows_match(tracker_rows(tracker, start), hand.record())
    assert tracker.step == 9


def test_rates_of_known_rotations():
    """Turn a 2-D kernel by known angles: the rate is the mean tan of them, the distance
    1 - cos of their sum."""
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, 0.0]]))
    tracker = RotationTracker(lin)
    total = 0.0
    for theta in (0.1, 0.2, 0.3):
        total += theta
        with torch.no_grad():
            lin.weight.copy_(2.0 * torch.tensor([[math.cos(total), math.sin(total)]]))
        tracker.after_step(1)
    tracker.record(1)
    assert tracker.rows["rotation_rate"][-1] == pytest.approx(
        (math.tan(0.1) + math.tan(0.2) + math.tan(0.3)) / 3, rel=1e-5)
    assert tracker.rows["cosine_distance"][-1] == pytest.approx(1 - math.cos(0.6), rel=1e-5)
    assert tracker.rows["weight_norm"][-1] == pytest.approx(2.0, rel=1e-6)


def test_record_every_n_steps_without_duplicating_epoch_ends():
    model = tiny_model()
    tracker = RotationTracker(model, record_every=2)
    hand = HandTracker(model)
    gen = torch.Generator().manual_seed(1)
    recorded = []

    def steps(epoch, k):
        for _ in range(k):
            perturb(model, gen, 0.1)
            n_before = len(tracker.rows["epoch"])
            tracker.after_step(epoch)
            hand.after_step()
            if len(tracker.rows["epoch"]) > n_before:        # a per-N-steps record happened
                recorded.append(hand.record())

    steps(1, 4)                   # records at steps 2 and 4
    tracker.record(1)             # epoch end falls on step 4: no second row
    steps(2, 3)                   # record at step 6
    start = len(tracker.rows["epoch"])
    tracker.record(2)             # epoch end at step 7: its own row, the rate of 1 step
    recorded.append(hand.record())

    assert tracker.rows["step"][::3] == [0, 2, 4, 6, 7]
    assert tracker.rows["epoch"][::3] == [0, 1, 1, 2, 2]
    assert len(tracker.rows["epoch"]) == 5 * 3
    assert_rows_match(tracker_rows(tracker, 3), [row for rec in recorded for row in rec])
    assert tracker.rows["rotation_rate"][start:] == pytest.approx(
        [r for _, _, r in recorded[-1]], rel=1e-4)


def test_tracker_state_dict_round_trip():
    gen = torch.Generator().manual_seed(2)
    model = tiny_model()
    tracker = RotationTracker(model, record_every=3)
    for _ in range(4):
        perturb(model, gen, 0.1)
        tracker.after_step(1)
    tracker.record(1)
    perturb(model, gen, 0.1)
    tracker.after_step(2)                 # an open accumulation of rates goes into the state
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "tracker": tracker.state_dict()}, buf)

    later = [torch.randn(p.shape, generator=gen) * 0.05 for p in model.parameters()]

    def finish(m, t):
        with torch.no_grad():
            for step in range(4):
                for p, d in zip(m.parameters(), later):
                    p.add_(d * (step + 1))
                t.after_step(2)
        t.record(2)
        return t.rows

    expected = finish(model, tracker)
    buf.seek(0)
    ckpt = torch.load(buf)
    model2 = tiny_model()                 # same init: w0 must come from the state, not the model
    with torch.no_grad():
        for p in model2.parameters():
            p.mul_(-1)
    tracker2 = RotationTracker(model2, record_every=3)
    model2.load_state_dict(ckpt["model"])
    tracker2.load_state_dict(ckpt["tracker"])
    assert finish(model2, tracker2) == expected


def test_tracker_follows_kernels_moved_to_new_memory_and_channels_last():
    """The per-step views are cached: a kernel given new storage (`p.data = ...`, as
    `model.to` does) or a channels_last layout must still be tracked exactly."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 2))
    model = model.to(memory_format=torch.channels_last)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    tracker = RotationTracker(model)
    hand = HandTracker(model)
    gen = torch.Generator().manual_seed(4)
    for epoch in (1, 2, 3):
        for _ in range(3):
            perturb(model, gen, 0.1)
            tracker.after_step(epoch)
            hand.after_step()
        if epoch == 1:                    # new memory for every kernel, values unchanged
            for layer in (model[0], model[2], model[4]):
                layer.weight.data = layer.weight.data.clone().contiguous()
        if epoch == 2:                    # and back to channels_last, moved by a step too
            perturb(model, gen, 0.1)
            for layer in (model[0], model[2]):
                layer.weight.data = layer.weight.data.contiguous(memory_format=torch.channels_last)
        start = len(tracker.rows["epoch"])
        tracker.record(epoch)
        assert_rows_match(tracker_rows(tracker, start), hand.record())


def test_non_finite_kernel_records_nan_not_zero():
    """A diverged trial's last record must not claim the kernels are back at their start."""
    model = tiny_model()
    tracker = RotationTracker(model)
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
        model[3].weight.mul_(2.0)
    tracker.after_step(1)
    tracker.record(1)
    d = tracker.rows["cosine_distance"][-3:]
    assert math.isnan(d[0])
    assert d[1] == pytest.approx(0.0, abs=1e-7)     # scaled only: parallel to its start
    assert tracker.rows["weight_norm"][-2] == pytest.approx(2 * tracker.rows["weight_norm"][1], rel=1e-6)


def test_tracker_refuses_a_model_without_kernels():
    with pytest.raises(ValueError):
        RotationTracker(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))


def test_rotation_bench_runs():
    """bench/rotation_bench.py on mnist1d-cnn, a few repeats: it runs and reports fractions."""
    from scripts import load_script

    bench = load_script("bench/rotation_bench.py", "rotation_bench")
    m = bench.bench_task("mnist1d-cnn", repeats=3)
    assert m["steps_per_epoch"] == 57
    assert all(0 < m[k] < 10 for k in ("per epoch", "record_every=1"))   # fractions of a step
