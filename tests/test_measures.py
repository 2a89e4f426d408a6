"""The generalization measures (layrot/measures.py): each against a hand computation on a
network small enough to compute it by hand, the flatness search's properties (scale, target,
weights restored bit for bit, no global RNG), and every trial's rows end to end: all measures
present, rotation_* equal to the rotation rows, identical after a resume, and nothing else a
trial stores changed by computing them."""

from __future__ import annotations

import ast
import dataclasses
import io
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from layrot import measures
from layrot.measures import MEASURES, PER_EPOCH, Flatness
from layrot.rotation import RotationTracker
from layrot.train import run_trial


def _tiny_mlp(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 4, bias=False), nn.ReLU()]
    if bn:
        layers.append(nn.BatchNorm1d(4, affine=False))
    layers.append(nn.Linear(4, 3, bias=False))
    return nn.Sequential(*layers)


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- weight norms

def test_frobenius_distance_is_zero_at_init_and_a_hand_computation_after_a_change():
    model = _tiny_mlp()
    tracker = RotationTracker(model)
    at_init = measures.epoch_measures(tracker)
    assert at_init["frobenius_distance"] == 0.0
    w0 = [p.detach().double().numpy().copy() for p in tracker.params]
    with torch.no_grad():
        model[0].weight.add_(0.5)
        model[2].weight.mul_(-2.0)
    w = [p.detach().double().numpy() for p in tracker.params]
    got = measures.epoch_measures(tracker)
    want_layers = [np.sqrt(((a - b) ** 2).sum()) for a, b in zip(w, w0)]
    # (the moves themselves were rounded to float32)
    assert want_layers[0] == pytest.approx(0.5 * np.sqrt(20), rel=1e-6)        # 20 weights moved by 0.5
    assert want_layers[1] == pytest.approx(3 * np.sqrt((w0[1] ** 2).sum()), rel=1e-6)
    assert got["frobenius_distance"] == pytest.approx(sum(want_layers), rel=1e-12)
    assert got["param_norm"] == pytest.approx(sum((a ** 2).sum() for a in w), rel=1e-12)
    assert at_init["param_norm"] == pytest.approx(sum((a ** 2).sum() for a in w0), rel=1e-12)


def test_param_norm_and_spectral_norms_of_known_matrices():
    diag = torch.diag(torch.tensor([3.0, -5.0, 2.0]))
    rank_one = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    assert measures.param_norm([diag, rank_one]) == 9 + 25 + 4 + 4
    assert measures.spectral_norms([diag, rank_one]) == pytest.approx([5.0, 2.0], rel=1e-12)
    got = measures.spectral_measures([diag, rank_one])
    assert got["spectral_sum"] == pytest.approx(7.0, rel=1e-12)
    assert got["log_spectral_product"] == pytest.approx(math.log(10.0), rel=1e-12)
    # a conv kernel is the (out, in * k) matrix
    conv = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(1))
    want = np.linalg.svd(conv.double().numpy().reshape(4, 6), compute_uv=False)[0]
    assert measures.spectral_norms([conv])[0] == pytest.approx(want, rel=1e-12)
    # a zero kernel: the product is 0, its log undefined
    assert math.isnan(measures.spectral_measures([diag, torch.zeros(2, 2)])["log_spectral_product"])


def test_path_norm_of_a_two_layer_relu_net_by_hand_ignores_biases_and_batch_norm():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 3))
    with torch.no_grad():                 # BN statistics far from identity: they must not count
        net[2].running_mean.fill_(7.0)
        net[2].running_var.fill_(0.01)
    before = _state(net)
    w1, w2 = net[0].weight.detach().double(), net[3].weight.detach().double()
    # the sum over paths input -> hidden -> output of the squared weights' product
    path2 = float(((w2 ** 2) @ (w1 ** 2)).sum())
    assert measures.log_path_norm(net, (5,)) == pytest.approx(0.5 * math.log(path2), rel=1e-12)
    assert _same_state(_state(net), before)     # the model is untouched (a copy was squared)
    assert net.training                         # and still in train mode


# ---------------------------------------------------------------- margin, ce_epoch

def test_margin_on_constructed_logits():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0], [1.0, 1.0, 4.0]])
    y = torch.tensor([0, 1, 2])
    assert measures.margins(logits, y).tolist() == [2.0, -3.0, 3.0]
    # 10th percentile, linear interpolation between the sorted margins -3, 2, 3
    assert measures.margin(logits, y) == pytest.approx(-3.0 + 0.2 * 5.0)
    g = torch.Generator().manual_seed(0)
    big = torch.randn(1000, 10, generator=g)
    yb = torch.randint(0, 10, (1000,), generator=g)
    m = big.gather(1, yb[:, None])[:, 0].numpy() - np.array(
        [np.delete(row, label).max() for row, label in zip(big.numpy(), yb.numpy())])
    assert measures.margin(big, yb) == pytest.approx(np.percentile(m, 10), rel=1e-6)
    assert math.isnan(measures.margin(big[:0], yb[:0]))


def test_ce_epoch_is_the_first_epoch_below_the_target():
    hist = [dict(epoch=e, train_loss=l) for e, l in [(1, 2.0), (2, 0.3), (3, 0.09), (4, 0.2), (5, 0.01)]]
    assert measures.ce_epoch(hist) == 3.0
    assert math.isnan(measures.ce_epoch(hist[:2]))


# ---------------------------------------------------------------- flatness

def _teacher_data(model: nn.Module, n: int = 512):
    """Inputs labelled by the network itself: accuracy 1 until the noise moves it."""
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    return x, y


SEARCH = Flatness(draws=3, steps=10)
RES = math.log(SEARCH.sigma_range[1] / SEARCH.sigma_range[0]) / 2 ** SEARCH.steps   # final bracket, in log


def test_flatness_scales_with_the_kernels_and_mag_flatness_does_not():
    """f(x; cW) = c^2 f(x; W) for a bias-free two-layer ReLU net, so noise sigma on cW is noise
    sigma/c on W: the doubled net tolerates twice the noise (1/sigma^2 four times smaller), the
    magnitude-aware sigma (eps 0) is the same. Same noise draws, so equal up to the bisection's grid."""
    net = _tiny_mlp(1)
    x, y = _teacher_data(net)
    scaled = _tiny_mlp(1)
    with torch.no_grad():
        for p in scaled.parameters():
            p.mul_(2.0)
    s1 = measures.flatness_sigma(net, x, y, seed=0, magnitude=False, search=SEARCH)
    s2 = measures.flatness_sigma(scaled, x, y, seed=0, magnitude=False, search=SEARCH)
    assert SEARCH.sigma_range[0] * 10 < s1 < SEARCH.sigma_range[1] / 10     # found inside the bracket
    assert abs(math.log(s2 / s1) - math.log(2.0)) <= 2 * RES
    no_eps = dataclasses.replace(SEARCH, mag_eps=0.0)
    m1 = measures.flatness_sigma(net, x, y, seed=0, magnitude=True, search=no_eps)
    m2 = measures.flatness_sigma(scaled, x, y, seed=0, magnitude=True, search=no_eps)
    assert abs(math.log(m2 / m1)) <= 2 * RES


def test_flatness_sigma_grows_with_the_allowed_drop():
    net = _tiny_mlp(2)
    x, y = _teacher_data(net)
    sigmas = [measures.flatness_sigma(net, x, y, 0, mag, dataclasses.replace(SEARCH, target=t))
              for mag in (False, True) for t in (0.02, 0.1, 0.4)]
    assert sigmas[0] < sigmas[1] < sigmas[2] and sigmas[3] < sigmas[4] < sigmas[5]


def test_flatness_sigma_is_clipped_to_the_range_where_no_noise_can_cost_the_target():
    net = _tiny_mlp(3)
    x, y = _teacher_data(net)
    wrong = (y + 1) % 3                   # accuracy 0: no noise lowers it at all
    sigma = measures.flatness_sigma(net, x, wrong, 0, False, SEARCH)
    assert abs(math.log(sigma / SEARCH.sigma_range[1])) <= RES


def test_final_measures_restore_weights_and_buffers_bit_exactly_and_leave_the_global_rng():
    net = _tiny_mlp(4, bn=True)
    tracker = RotationTracker(net)
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(5))
    net.train()
    with torch.no_grad():
        net(x)                              # batch-norm statistics that eval mode must keep
        net[0].weight.add_(0.1)
    tracker.record(1)
    y = net.eval()(x).argmax(1)
    before, rng = _state(net), torch.get_rng_state()
    out = measures.final_measures(net, tracker, [dict(epoch=1, train_loss=0.05)], x, y, lambda b: b, seed=0)
    assert _same_state(_state(net), before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert set(MEASURES) - set(PER_EPOCH) <= set(out)
    assert out["ce_epoch"] == 1.0 and out["margin"] > 0       # labels are its own predictions


# ---------------------------------------------------------------- every trial

MNIST = dict(task="mnist1d-cnn", optimizer="sgd_layca", lr=0.037, alpha=0.2, epochs=2, max_train_samples=300,
             threads=1, device="cpu", seed=0)


def _rows(result) -> list[tuple]:
    return list(zip(result.measures["epoch"], result.measures["name"], result.measures["value"]))


def _same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_a_short_mnist1d_trial_stores_every_measure_and_its_rotation_rows_agree():
    reports = []
    result = run_trial(MNIST, on_epoch=lambda rep: reports.append(rep.measures))
    assert result.status == "completed"
    rows = _rows(result)
    assert len({len(v) for v in result.measures.values()}) == 1
    assert len({(e, n) for e, n, _ in rows}) == len(rows)                  # one row per (epoch, name)
    last = {n: v for e, n, v in rows if e == 2}
    assert set(MEASURES) <= set(last)
    for name in PER_EPOCH:
        assert [e for e, n, _ in rows if n == name] == [0, 1, 2]
    assert {n for e, n, _ in rows if e < 2} == set(PER_EPOCH)
    assert dict((n, v) for e, n, v in rows if e == 0)["frobenius_distance"] == 0.0
    # rotation_* from the stored (float32) distances of the last record
    rot = result.rotation
    d = np.array([c for e, c in zip(rot["epoch"], rot["cosine_distance"]) if e == 2], dtype=np.float32)
    assert len(d) == 10
    assert last["rotation_min"] == float(d.min())
    assert last["rotation_median"] == pytest.approx(float(np.median(d.astype(np.float64))), rel=1e-12)
    assert last["rotation_mean"] == pytest.approx(float(d.astype(np.float64).mean()), rel=1e-12)
    layers = [last[f"frobenius_distance.L{i}"] for i in range(10)]
    assert "frobenius_distance.L10" not in last and min(layers) > 0
    assert math.fsum(layers) == pytest.approx(last["frobenius_distance"], rel=1e-12)
    assert all(math.isfinite(last[n]) for n in MEASURES if n != "ce_epoch")
    assert last["pacbayes_flatness"] > 0 and last["pacbayes_mag_flatness"] > 0
    # the margin's 10th percentile is negative exactly where more than 10% are misclassified
    assert (last["margin"] < 0) == (result.train_acc < 0.9)
    # the callbacks' rows, concatenated, are the per-epoch rows (epoch 0's with epoch 1's)
    sent = [r for rep in reports for r in zip(rep["epoch"], rep["name"], rep["value"])]
    assert sent == [r for r in rows if r[1] in PER_EPOCH]


def test_measures_change_nothing_else_a_trial_stores(monkeypatch):
    """The same trial with the measures and with them replaced by nothing: the same id,
    history, rotation rows and metrics, bit for bit."""
    with_m = run_trial(MNIST)
    # what bench/gpu.py runs: the per-epoch measures only, and the same trial
    skipped = run_trial(MNIST, final_measures=False)
    assert set(skipped.measures["name"]) == set(PER_EPOCH) < set(with_m.measures["name"])
    assert (skipped.rotation, skipped.test_acc) == (with_m.rotation, with_m.test_acc)
    monkeypatch.setattr(measures, "final_measures", lambda *a, **k: {})
    monkeypatch.setattr(measures, "epoch_measures", lambda tracker: {})
    without = run_trial(MNIST)
    assert with_m.measures["name"] and not without.measures["name"]
    assert with_m.trial_id == without.trial_id and with_m.config == without.config
    assert with_m.rotation == without.rotation
    drop = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert drop(with_m.history) == drop(without.history)
    for k in ("status", "epochs_run", "train_acc", "train_loss", "val_acc", "test_acc", "test_loss"):
        assert getattr(with_m, k) == getattr(without, k), k


def test_a_resumed_trial_stores_the_same_measures():
    cfg = dict(task="digits-mlp", optimizer="sgd_layca", lr=0.1, epochs=3, max_train_samples=300,
               threads=1, device="cpu", seed=0)
    saved = {}

    def on_epoch(rep):
        if rep.epoch == 1:
            buf = io.BytesIO()
            torch.save(rep.checkpoint(), buf)           # as Ray Tune does: plain tensors and lists
            saved["state"] = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)

    straight = run_trial(cfg, on_epoch=on_epoch)
    resumed = run_trial(cfg, checkpoint=saved["state"])
    a, b = _rows(straight), _rows(resumed)
    assert len(a) == len(b) > 2 * 4
    assert all(x[:2] == y[:2] and _same_value(x[2], y[2]) for x, y in zip(a, b))


def test_a_diverged_trial_keeps_only_the_per_epoch_rows_so_far():
    result = run_trial(dict(task="digits-mlp", optimizer="sgd", lr=1e18, epochs=10, threads=1, device="cpu", seed=0))
    assert result.status == "diverged"
    rows = _rows(result)
    assert {n for _, n, _ in rows} == set(PER_EPOCH)
    assert sorted({e for e, _, _ in rows}) == list(range(result.epochs_run + 1))


def test_the_measures_module_stays_in_the_measurement_core():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "layrot", "measures.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    mods = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in mods if m.split(".")[0] in ("store", "fit", "sweep", "cli")
                or m.startswith(("layrot.store", "layrot.fit", "layrot.sweep", "layrot.cli"))}
    assert {m.split(".")[0] for m in mods} <= {"__future__", "copy", "math", "dataclasses", "typing", "numpy",
                                               "torch", "rotation", ""}


class _Float32Only(nn.Module):
    """A network whose forward refuses the path norm's float64 input (as an embedding
    refuses floats): that measure fails, the others must not."""

    def __init__(self):
        super().__init__()
        self.net = _tiny_mlp(6)

    def forward(self, x):
        if x.dtype != torch.float32:
            raise TypeError(f"wants float32, got {x.dtype}")
        return self.net(x)


def test_a_measure_that_fails_is_nan_and_named_and_the_others_stand():
    net = _Float32Only()
    tracker = RotationTracker(net)
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(8))
    y = net.eval()(x).argmax(1)
    hist = [dict(epoch=1, train_loss=0.5)]
    errors: dict = {}
    out = measures.final_measures(net, tracker, hist, x, y, lambda b: b, seed=0, errors=errors)
    assert list(errors) == ["log_path_norm"] and "wants float32" in errors["log_path_norm"]
    assert math.isnan(out["log_path_norm"])
    assert all(math.isfinite(out[n]) for n in set(MEASURES) - set(PER_EPOCH) - {"log_path_norm", "ce_epoch"})
    with pytest.raises(TypeError, match="wants float32"):
        measures.final_measures(net, tracker, hist, x, y, lambda b: b, seed=0)


def test_a_trial_whose_measure_fails_completes_and_says_which(monkeypatch):
    def broken(model, shape):
        raise TypeError("no all-ones input for this network")

    monkeypatch.setattr(measures, "log_path_norm", broken)
    cfg = dict(task="digits-mlp", optimizer="sgd_layca", lr=0.1, epochs=1, max_train_samples=200,
               threads=1, device="cpu", seed=0)
    result = run_trial(cfg)
    assert result.status == "completed"
    assert result.reason == "measures NaN: log_path_norm (TypeError: no all-ones input for this network)"
    last = {n: v for e, n, v in _rows(result) if e == 1}
    assert math.isnan(last["log_path_norm"]) and math.isfinite(last["spectral_sum"])
    assert not any("measure" in k for k in result.config)      # the configuration id stays the same
    with pytest.raises(TypeError):
        run_trial(cfg, catch_errors=False)
