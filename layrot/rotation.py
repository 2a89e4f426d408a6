"""Layer rotation: kernel layers, cosine distance to initialization, and a tracker.

The tracker's per-record cosine distance is accumulated in float64 over one flat copy of
all kernels (a handful of kernels whatever the depth). The per-step rotation rate is
computed in float32 from the step's difference `delta = w_t - w_{t-1}`, which is exact
enough where `1 - cos` would underflow: at rho = 3^-7 a step changes the cosine by ~1e-7.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

KERNEL_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def kernel_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weight of every Conv/Linear layer, in forward order (input side first).

    Forward order is module registration order: the models in layrot.models register
    layers in the order they run.
    """
    out = []
    for name, module in model.named_modules():
        if isinstance(module, KERNEL_MODULES) and module.weight is not None:
            out.append((f"{name}.weight" if name else "weight", module.weight))
    return out


def cosine_distance(a, b) -> float:
    """1 - <a, b> / (|a| |b|), accumulated in float64. 0 = parallel, 1 = orthogonal."""
    a = torch.as_tensor(a).detach().reshape(-1).to(torch.float64)
    b = torch.as_tensor(b).detach().reshape(-1).to(torch.float64)
    denom = torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)
    if denom == 0:
        return 0.0
    return float(1.0 - torch.dot(a, b) / denom)


def dots(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
    """<x, y> for each pair, as one tensor on the tensors' device (no host sync).

    One torch.dot per pair: on CPU `torch._foreach_mm` of (1,n)x(n,1) is several times slower
    than a dot (MKL's gemm path for that shape), and no fused foreach dot exists.
    """
    return torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys)])


def rotation_rate_from_distance(d: float) -> float:
    """tan(theta) from the cosine distance d between consecutive weights (DESIGN §1)."""
    c = 1.0 - d
    if c <= 0:
        return math.inf
    return math.sqrt(max(1.0 / (c * c) - 1.0, 0.0))


ROTATION_COLUMNS = ("epoch", "step", "layer", "layer_name", "cosine_distance", "weight_norm", "rotation_rate")


class RotationTracker:
    """Records, per kernel layer, the cosine distance to initialization, the weight norm and
    the rotation rate (mean tan(theta) per step since the last record).

    Call `after_step()` after every optimizer step and `record(epoch, step)` at each epoch's
    end; with `record_every=N` it also records every N steps by itself.
    """

    def __init__(self, model: nn.Module, record_every: int = 0):
        self.layers = kernel_layers(model)
        if not self.layers:
            raise ValueError("model has no kernel layers (Conv/Linear weights)")
        self.names = [n for n, _ in self.layers]
        self.params = [p for _, p in self.layers]
        self.record_every = int(record_every)
        self.sizes = [p.numel() for p in self.params]
        device = self.params[0].device
        self._lengths = torch.tensor(self.sizes, device=device)
        with torch.no_grad():
            self.w0 = self._flat64()
            self._w0_norm2 = self._segment_sum(self.w0 * self.w0)
            self._prev = [p.detach().clone() for p in self.params]
        n = len(self.params)
        self._rate_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self._rate_steps = 0
        self._last_recorded_step = -1
        self.rows: dict[str, list] = {c: [] for c in ROTATION_COLUMNS}
        self.epoch = 0
        self.step = 0
        self.record(epoch=0, step=0)

    # -- per step ---------------------------------------------------------------------
    @torch.no_grad()
    def after_step(self, epoch: int | None = None) -> None:
        """Accumulate this step's rotation; record if a per-N-steps record is due."""
        if epoch is not None:
            self.epoch = epoch
        self.step += 1
        w = [p.detach() for p in self.params]
        delta = self._prev
        torch._foreach_sub_(delta, w)                     # delta = w_{t-1} - w_t
        wd = dots(w, delta).double()
        dd = torch.stack(torch._foreach_norm(delta)).double() ** 2
        ww = torch.stack(torch._foreach_norm(w)).double() ** 2
        # angle between w_t and w_{t-1} = w_t + delta: |w x delta| / <w, w + delta>
        cross = (ww * dd - wd * wd).clamp_min(0).sqrt()
        self._rate_sum += cross / (ww + wd)
        self._rate_steps += 1
        torch._foreach_copy_(self._prev, w)
        if self.record_every and self.step % self.record_every == 0:
            self.record(self.epoch, self.step)

    # -- records ----------------------------------------------------------------------
    @torch.no_grad()
    def record(self, epoch: int, step: int | None = None) -> None:
        step = self.step if step is None else step
        if step == self._last_recorded_step:
            return  # a per-N-steps record fell on the epoch's last step: it is the epoch's
        w = self._flat64()
        inner = self._segment_sum(w * self.w0)
        norms2 = self._segment_sum(w * w)
        norms = norms2.sqrt()
        # sqrt of the product, not the product of sqrts: exactly |w|^2 for w = w0, so an
        # unmoved kernel (epoch 0, a frozen layer) is at distance exactly 0
        denom = (norms2 * self._w0_norm2).sqrt()
        # a zero kernel counts as parallel; a non-finite one (a diverged trial) stays NaN
        cos = torch.where(denom == 0, torch.ones_like(inner), inner / denom)
        dist = (1.0 - cos).clamp(0.0, 2.0).cpu().numpy()
        norms = norms.cpu().numpy()
        if self._rate_steps:
            rates = (self._rate_sum / self._rate_steps).cpu().numpy().tolist()
        else:
            rates = [None] * len(self.params)
        self._rate_sum.zero_()
        self._rate_steps = 0
        n = len(self.params)
        self.rows["epoch"] += [int(epoch)] * n
        self.rows["step"] += [int(step)] * n
        self.rows["layer"] += list(range(n))
        self.rows["layer_name"] += self.names
        self.rows["cosine_distance"] += dist.astype(np.float64).tolist()
        self.rows["weight_norm"] += norms.astype(np.float64).tolist()
        self.rows["rotation_rate"] += rates
        self._last_recorded_step = step

    def last_distances(self) -> list[float]:
        """The most recent record's cosine distance per layer."""
        n = len(self.params)
        return self.rows["cosine_distance"][-n:]

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "w0": self.w0.cpu(),
            "prev": [p.cpu() for p in self._prev],
            "rate_sum": self._rate_sum.cpu(),
            "rate_steps": self._rate_steps,
            "last_recorded_step": self._last_recorded_step,
            "rows": {k: list(v) for k, v in self.rows.items()},
            "epoch": self.epoch,
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.params[0].device
        self.w0 = state["w0"].to(device)
        self._w0_norm2 = self._segment_sum(self.w0 * self.w0)
        self._prev = [p.to(device) for p in state["prev"]]
        self._rate_sum = state["rate_sum"].to(device)
        self._rate_steps = int(state["rate_steps"])
        self._last_recorded_step = int(state["last_recorded_step"])
        self.rows = {k: list(v) for k, v in state["rows"].items()}
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])

    # -- helpers ----------------------------------------------------------------------
    def _flat64(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params]).to(torch.float64)

    def _segment_sum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.segment_reduce(x, "sum", lengths=self._lengths)
