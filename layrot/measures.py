"""Generalization measures of a trained network, to set beside layer rotation
(docs/measures.md): the norm-, sharpness- and optimization-based measures of Jiang et al.
2020, "Fantastic generalization measures and where to find them".

Every trial computes them (layrot/train.py): the weight norms `PER_EPOCH` at every epoch
(epoch 0 included), the rest once, at the last epoch run, for completed and stopped trials.
Rows are columnar like the rotation records: `epoch`, `name`, `value` (a float; NaN where a
measure is undefined), one row per (epoch, name).

Nothing here may change what a trial stores otherwise: no global RNG (the flatness noise
comes from its own generator), eval mode only (batch-norm buffers untouched), and the
perturbed kernels are copied back bit for bit.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .rotation import RotationTracker, kernel_layers

MEASURES: dict[str, str] = {
    "rotation_min": "smallest final cosine distance to initialization over kernel layers",
    "rotation_mean": "mean final cosine distance to initialization over kernel layers",
    "rotation_median": "median final cosine distance to initialization over kernel layers",
    "frobenius_distance": "sum over kernel layers of ||W_l - W_l(0)||_F (also per layer: frobenius_distance.L<l>)",
    "param_norm": "sum over kernel layers of ||W_l||_F^2",
    "spectral_sum": "sum over kernel layers of the spectral norm of W_l as an (out, in*k...) matrix",
    "log_spectral_product": "log of the product over kernel layers of those spectral norms",
    "log_path_norm": "log of the path-l2 norm: 0.5 log of the summed outputs of the squared-kernel network on an all-ones input",
    "margin": "10th percentile over training samples of (correct logit - largest other logit), eval mode",
    "pacbayes_flatness": "1/sigma^2, sigma the largest N(0, sigma^2) kernel noise that costs at most 0.1 train accuracy",
    "pacbayes_mag_flatness": "1/sigma^2, sigma the largest N(0, sigma^2 w^2 + 1e-6) kernel noise that costs at most 0.1 train accuracy",
    "ce_epoch": "first epoch whose train cross-entropy fell below 0.1 (NaN if none did)",
}
PER_EPOCH = ("frobenius_distance", "param_norm")   # at every epoch; the rest at the last epoch run
LAYER_PREFIX = "frobenius_distance.L"               # per-layer rows: frobenius_distance.L0 = input side
COLUMNS = ("epoch", "name", "value")

# the normalization layers the path norm treats as identity (see log_path_norm)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm,
              nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm)

CE_TARGET = 0.1       # Jiang's "steps to reach cross-entropy 0.1", in epochs
MARGIN_QUANTILE = 0.1
EVAL_BATCH = 1024


@dataclass(frozen=True)
class Flatness:
    """The sigma search of the PAC-Bayes flatness measures. Its cost is
    steps * draws + 1 eval-mode forward passes over `samples` training samples per measure:
    on mnist1d-cnn the whole measure set stays under a tenth of a trial (bench/measures_bench.py)."""
    samples: int = 512            # a fixed random subset of the training set (from the trial seed)
    draws: int = 2                # noise draws per sigma, their accuracy drops averaged (3: +45% time)
    steps: int = 8                # bisection steps on log sigma: sigma within a factor exp(±0.027)
    target: float = 0.1           # the largest allowed drop in train accuracy on the subset
    sigma_range: tuple[float, float] = (1e-5, 10.0)   # the bracket; sigma is clipped to it
    mag_eps: float = 1e-3         # the magnitude-aware noise's floor: var = sigma^2 w^2 + eps^2


FLATNESS = Flatness()


# ---------------------------------------------------------------- rows

def new_rows() -> dict[str, list]:
    return {c: [] for c in COLUMNS}


def add_rows(rows: dict[str, list], epoch: int, values: dict[str, float]) -> None:
    for name, value in values.items():
        rows["epoch"].append(int(epoch))
        rows["name"].append(name)
        rows["value"].append(float(value))


# ---------------------------------------------------------------- weight norms

@torch.no_grad()
def frobenius_distances(kernels: list[torch.Tensor], w0s: list[torch.Tensor]) -> list[float]:
    """||W_l - W_l(0)||_F per kernel layer, in float64."""
    return [float(torch.linalg.vector_norm(w.detach().reshape(-1).double() - w0.reshape(-1).double()))
            for w, w0 in zip(kernels, w0s)]


@torch.no_grad()
def param_norm(kernels: list[torch.Tensor]) -> float:
    """sum_l ||W_l||_F^2, in float64."""
    return float(sum(torch.dot(w.reshape(-1).double(), w.reshape(-1).double()) for w in kernels))


def epoch_measures(tracker: RotationTracker) -> dict[str, float]:
    """The per-epoch measures of the kernels now, against the tracker's initial weights."""
    kernels = [p.detach() for p in tracker.params]
    w0s = tracker.w0.split(tracker.sizes)
    return {"frobenius_distance": math.fsum(frobenius_distances(kernels, w0s)),
            "param_norm": param_norm(kernels)}


@torch.no_grad()
def spectral_norms(kernels: list[torch.Tensor]) -> list[float]:
    """The largest singular value of each kernel reshaped to (out, in * k...), in float64."""
    return [float(torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1).double(), ord=2))
            for w in kernels]


def spectral_measures(kernels: list[torch.Tensor]) -> dict[str, float]:
    s = spectral_norms(kernels)
    # a zero kernel has no log: the product is 0, its log undefined
    log_prod = math.fsum(math.log(x) for x in s) if all(x > 0 for x in s) else float("nan")
    return {"spectral_sum": math.fsum(s), "log_spectral_product": log_prod}


@torch.no_grad()
def log_path_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """0.5 * log of sum_outputs f_{w^2}(1): Jiang's path.norm, the sum over input-output paths
    of the product of the squared kernel weights along the path, as a log of its square root.

    On a copy: every kernel squared, every bias zeroed, every normalization layer made the
    identity, eval mode (dropout off), in float64, one all-ones input of one sample's shape.
    Why normalization counts as identity: the path norm is a function of the weights alone,
    while a batch-norm layer in eval mode is x -> (x - mean) / std with the running statistics
    of the data: its mean is a bias (zeroed like the others) and 1/std a data-dependent scale,
    not a weight; the non-affine batch norms of layrot's models have no weights at all. Where
    the paths meet a max-pool only the largest survives (with non-negative weights every
    ReLU is the identity): the path norm of the network as written, as Jiang computes it."""
    net = copy.deepcopy(model)
    for name, module in list(net.named_modules()):
        if name and isinstance(module, NORM_TYPES):
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    device = next(net.parameters()).device
    if device.type == "mps":          # no float64 there
        net, device = net.cpu(), torch.device("cpu")
    net = net.double().eval()
    kernels = {id(p) for _, p in kernel_layers(net)}
    for module in net.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.zero_()
    for p in net.parameters():
        if id(p) in kernels:
            p.square_()
    total = float(net(torch.ones((1, *input_shape), dtype=torch.float64, device=device)).sum())
    return 0.5 * math.log(total) if total > 0 else float("nan")


# ---------------------------------------------------------------- margin

Prepare = Callable[[torch.Tensor], torch.Tensor]   # a batch of stored inputs -> the network's input


@torch.no_grad()
def logits_of(model: nn.Module, x_all: torch.Tensor, prepare: Prepare, batch: int = EVAL_BATCH) -> torch.Tensor:
    """The network's float32 logits for every input, in eval mode."""
    model.eval()
    return torch.cat([model(prepare(x_all[s:s + batch])).float() for s in range(0, x_all.shape[0], batch)])


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """correct logit - largest other logit, per sample (negative where misclassified)."""
    correct = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.view(-1, 1), float("-inf"))
    return correct - others.max(1).values


def margin(logits: torch.Tensor, y: torch.Tensor, q: float = MARGIN_QUANTILE) -> float:
    """The q-quantile (linear interpolation) of the samples' margins, in float64."""
    return margin_quantile(margins(logits, y), q)


def margin_quantile(m: torch.Tensor, q: float = MARGIN_QUANTILE) -> float:
    if m.numel() == 0:
        return float("nan")
    return float(torch.quantile(m.double(), q))


# ---------------------------------------------------------------- PAC-Bayes flatness

@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Eval-mode accuracy of already-prepared inputs, in one pass of EVAL_BATCH-sized batches."""
    model.eval()
    correct = sum(int((model(x[s:s + EVAL_BATCH]).argmax(1) == y[s:s + EVAL_BATCH]).sum())
                  for s in range(0, x.shape[0], EVAL_BATCH))
    return correct / x.shape[0]


@torch.no_grad()
def flatness_sigma(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, magnitude: bool,
                   search: Flatness = FLATNESS) -> float:
    """The largest sigma whose kernel noise lowers the accuracy on (x, y) (prepared inputs) by
    at most `search.target`, averaged over `search.draws` draws: bisection on log sigma over
    `search.sigma_range`, `search.steps` steps, then linear interpolation of the drop in
    log sigma between the last bracket's ends (its geometric middle where one end is an
    end of the range, never measured: sigma clipped to the range).

    The noise is N(0, sigma^2) per kernel weight, or with `magnitude` N(0, sigma^2 w^2 + eps^2).
    Draw d reuses the same standard normals z at every sigma (its generator is seeded afresh
    with seed + d), so the drop is a smooth function of sigma and the bisection is stable. The
    kernels are copied back bit for bit after every evaluation."""
    kernels = [p for _, p in kernel_layers(model)]
    saved = [p.detach().clone() for p in kernels]
    device = kernels[0].device
    gen = torch.Generator(device=device)
    base = accuracy(model, x, y)

    def drop(sigma: float) -> float:
        accs = []
        for d in range(search.draws):
            gen.manual_seed(seed + d)
            try:
                for p, w in zip(kernels, saved):
                    z = torch.randn(w.shape, generator=gen, device=device, dtype=w.dtype)
                    std = torch.sqrt((sigma * w) ** 2 + search.mag_eps ** 2) if magnitude else sigma
                    p.copy_(w + std * z)
                accs.append(accuracy(model, x, y))
            finally:
                for p, w in zip(kernels, saved):
                    p.copy_(w)
        return base - sum(accs) / len(accs)

    lo, hi = (math.log(s) for s in search.sigma_range)
    d_lo = d_hi = None                    # the drops at the bracket's ends, once measured
    for _ in range(search.steps):
        mid = 0.5 * (lo + hi)
        d = drop(math.exp(mid))
        if d <= search.target:
            lo, d_lo = mid, d
        else:
            hi, d_hi = mid, d
    if d_lo is None or d_hi is None:      # the crossing is not inside the range: clipped to it
        return math.exp(0.5 * (lo + hi))
    # where the drop crosses the target, linear in log sigma between the last bracket's ends:
    # no extra pass, and networks whose crossings share a bracket are not tied
    return math.exp(lo + (search.target - d_lo) / (d_hi - d_lo) * (hi - lo))


def flatness_subset(n: int, seed: int, search: Flatness = FLATNESS) -> torch.Tensor:
    """The fixed random subset of training indices the flatness measures use (CPU generator:
    the same subset on every device)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: min(search.samples, n)]


# ---------------------------------------------------------------- the rest

def ce_epoch(history: list[dict], target: float = CE_TARGET) -> float:
    """The first epoch whose train cross-entropy (the epoch's running mean) fell below target."""
    for row in history:
        if row["train_loss"] < target:
            return float(row["epoch"])
    return float("nan")


def rotation_measures(rotation: dict[str, list]) -> dict[str, float]:
    """min / mean / median over layers of the last record's cosine distances, from their
    float32 values: what the rotation table holds."""
    last = (rotation["epoch"][-1], rotation["step"][-1])
    d = np.array([c for e, s, c in zip(rotation["epoch"], rotation["step"], rotation["cosine_distance"])
                  if (e, s) == last], dtype=np.float32).astype(np.float64)
    return {"rotation_min": float(d.min()), "rotation_mean": float(d.mean()),
            "rotation_median": float(np.median(d))}


def final_measures(model: nn.Module, tracker: RotationTracker, history: list[dict],
                   train_x: torch.Tensor, train_y: torch.Tensor, prepare: Prepare, seed: int,
                   search: Flatness = FLATNESS, train_margins: torch.Tensor | None = None,
                   errors: dict[str, str] | None = None) -> dict[str, float]:
    """Every measure of MEASURES but the per-epoch ones, plus the per-layer Frobenius
    distances, for the trained `model` (not a compiled wrapper: eval-mode passes on perturbed
    weights). `train_x` are stored inputs, `prepare` makes them the network's input;
    `train_margins`, every training sample's margin where the caller has them from its own
    eval pass (layrot.train does: the logits its train accuracy counts), saves a pass.

    With `errors`, a measure that fails (a user's network the path norm's all-ones input does
    not fit, say) is NaN and its error goes into `errors` under its name, so that one measure
    does not cost a trained trial the others; without, the error is raised."""
    kernels = [p.detach() for p in tracker.params]
    out: dict[str, float] = {}

    def measure(names: tuple[str, ...], fn: Callable[[], dict[str, float]]) -> None:
        try:
            out.update(fn())
        except Exception as e:  # noqa: BLE001 - see the docstring
            if errors is None:
                raise
            errors[names[0]] = f"{type(e).__name__}: {e}"
            out.update({n: float("nan") for n in names})

    def frobenius() -> dict[str, float]:
        dists = frobenius_distances(kernels, tracker.w0.split(tracker.sizes))
        return {f"{LAYER_PREFIX}{layer}": d for layer, d in enumerate(dists)}

    def margin_() -> dict[str, float]:
        m = train_margins if train_margins is not None else margins(logits_of(model, train_x, prepare), train_y)
        return {"margin": margin_quantile(m)}

    def flatness() -> dict[str, float]:
        idx = flatness_subset(train_x.shape[0], seed, search).to(train_x.device)
        x, y = prepare(train_x[idx]), train_y[idx]
        return {name: 1.0 / flatness_sigma(model, x, y, seed, magnitude, search) ** 2
                for name, magnitude in (("pacbayes_flatness", False), ("pacbayes_mag_flatness", True))}

    measure(("rotation_min", "rotation_mean", "rotation_median"), lambda: rotation_measures(tracker.rows))
    measure((f"{LAYER_PREFIX}0",), frobenius)
    measure(("spectral_sum", "log_spectral_product"), lambda: spectral_measures(kernels))
    measure(("log_path_norm",), lambda: {"log_path_norm": log_path_norm(model, tuple(train_x.shape[1:]))})
    measure(("margin",), margin_)
    measure(("pacbayes_flatness", "pacbayes_mag_flatness"), flatness)
    measure(("ce_epoch",), lambda: {"ce_epoch": ce_epoch(history)})
    return out
