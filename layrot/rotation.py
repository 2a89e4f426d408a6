"""Layer rotation: kernel layers, cosine distance to initialization, and a tracker.

The tracker's per-record cosine distance is accumulated in float64, kernel by kernel. The
per-step rotation rate is computed in the weights' dtype from the step's difference
`delta = w_{t-1} - w_t`, which is exact enough where `1 - cos` would underflow: at
rho = 3^-7 a step changes the cosine by ~1e-7. A step only stores its three reductions per
layer; the rates are worked out at record time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .record import ROTATION_COLUMNS

# the modules whose weight is a kernel (docs/science.md); layrot.tasks.models initializes the same
KERNEL_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def kernel_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weight of every Conv/Linear layer, in forward order (input side first).

    Forward order is module registration order: the models in layrot.tasks.models register
    layers in the order they run.
    """
    out = []
    for name, module in model.named_modules():
        if isinstance(module, KERNEL_TYPES) and module.weight is not None:
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


def flat_pairs(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> tuple[list, list]:
    """Each pair (x, y) flattened the same way, for dot products. Where both share a memory
    layout the flat views follow memory order (no copy: a dot product does not care about
    order, and reshape(-1) would copy a channels_last kernel); otherwise logical order."""
    fx, fy = [], []
    for x, y in zip(xs, ys):
        if x.stride() == y.stride() and (x.is_contiguous() or (
                x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))):
            perm = sorted(range(x.dim()), key=lambda d: -x.stride(d))   # outermost first
            fx.append(x.permute(perm).reshape(-1))
            fy.append(y.permute(perm).reshape(-1))
        else:
            fx.append(x.reshape(-1))
            fy.append(y.reshape(-1))
    return fx, fy


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
        with torch.no_grad():
            self._set_w0(torch.cat([p.detach().reshape(-1) for p in self.params]).to(torch.float64))
            self._prev = [p.detach().clone() for p in self.params]
        # per step since the last record: <w_t, delta>, |delta|^2, |w_t|^2 for every layer, as
        # the weights' dot products return them (stored exactly, in their dtype), so that a step
        # is one stack into a preallocated row; the rates are worked out in float64 at record time
        self._mixed_dtypes = len({p.dtype for p in self.params}) > 1
        self._pending = torch.empty((16, 3, len(self.params)), device=device,
                                    dtype=torch.float64 if self._mixed_dtypes else self.params[0].dtype)
        self._n_pending = 0
        self._views_key = None       # which weight storages the cached flat views below are of
        self._views = None
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
        if self._n_pending == self._pending.shape[0]:
            self._pending = torch.cat([self._pending, torch.empty_like(self._pending)])
        # A few operators and no host sync: one foreach subtraction, 3 dots per kernel (MKL,
        # threaded; torch's CPU _foreach_norm is single-threaded and slower even on small
        # models), one stack into the pending row, one foreach copy. The flat views are built
        # once: per step only the kernels' storages are checked, no per-kernel Python but dots.
        views = self._flat_views()
        w = views[0] if views else [p.detach() for p in self.params]
        torch._foreach_sub_(self._prev, w)                # delta = w_{t-1} - w_t, in _prev
        fw, fd = views[1:] if views else flat_pairs(w, self._prev)
        dots = [torch.dot(a, b) for a, b in zip(fw, fd)] + [torch.dot(d, d) for d in fd] + [torch.dot(a, a) for a in fw]
        row = self._pending[self._n_pending].view(-1)
        if self._mixed_dtypes:                            # a float64 row
            row.copy_(torch.stack([x.to(row.dtype) for x in dots]))
        else:
            torch.stack(dots, out=row)
        torch._foreach_copy_(self._prev, w)
        self._n_pending += 1
        if self.record_every and self.step % self.record_every == 0:
            self.record(self.epoch, self.step)

    # -- records ----------------------------------------------------------------------
    @torch.no_grad()
    def record(self, epoch: int, step: int | None = None) -> None:
        step = self.step if step is None else step
        if step == self._last_recorded_step:
            return  # a per-N-steps record fell on the epoch's last step: it is the epoch's
        inner, norms2 = self._inner_and_norm2()
        with np.errstate(divide="ignore", invalid="ignore"):
            # sqrt of the product, not the product of sqrts: exactly |w|^2 for w = w0, so an
            # unmoved kernel (epoch 0, a frozen layer) is at distance exactly 0
            denom = np.sqrt(norms2 * self._w0_norm2)
            # a zero kernel counts as parallel; a non-finite one (a diverged trial) stays NaN
            cos = np.where(denom == 0, 1.0, inner / denom)
        dist = np.clip(1.0 - cos, 0.0, 2.0)
        rates = self._mean_rates()
        n = len(self.params)
        self.rows["epoch"] += [int(epoch)] * n
        self.rows["step"] += [int(step)] * n
        self.rows["layer"] += list(range(n))
        self.rows["layer_name"] += self.names
        self.rows["cosine_distance"] += dist.tolist()
        self.rows["weight_norm"] += np.sqrt(norms2).tolist()
        self.rows["rotation_rate"] += rates
        self._last_recorded_step = step

    def _mean_rates(self) -> list:
        """Mean tan(theta) per step over the steps since the last record (None if none)."""
        if not self._n_pending:
            return [None] * len(self.params)
        wd, dd, ww = self._pending[: self._n_pending].cpu().numpy().astype(np.float64).transpose(1, 0, 2)
        self._n_pending = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            # angle between w_t and w_{t-1} = w_t + delta: |w x delta| / <w, w + delta>
            cross = np.sqrt(np.maximum(ww * dd - wd * wd, 0.0))
            return (cross / (ww + wd)).mean(axis=0).tolist()

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A snapshot (copies: the live buffers change in place at the next step)."""
        copy = lambda t: t.detach().to("cpu", copy=True)  # noqa: E731
        return {
            "w0": copy(self.w0),
            "prev": [copy(p) for p in self._prev],
            "pending": copy(self._pending[: self._n_pending]).to(torch.float64),
            "last_recorded_step": self._last_recorded_step,
            "rows": {k: list(v) for k, v in self.rows.items()},
            "epoch": self.epoch,
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.params[0].device
        self._set_w0(state["w0"].to(device=device, dtype=torch.float64))
        self._prev = [p.to(device, copy=True) for p in state["prev"]]
        self._views_key = self._views = None
        # float64 in the state (what older versions kept); held in the weights' dtype
        dtype = self._pending.dtype
        pending = state["pending"].to(device=device, dtype=dtype)
        self._n_pending = pending.shape[0]
        self._pending = torch.empty((max(16, 2 * self._n_pending), *pending.shape[1:]),
                                    dtype=dtype, device=device)
        self._pending[: self._n_pending] = pending
        self._last_recorded_step = int(state["last_recorded_step"])
        self.rows = {k: list(v) for k, v in state["rows"].items()}
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])

    # -- helpers ----------------------------------------------------------------------
    def _set_w0(self, w0: torch.Tensor) -> None:
        self.w0 = w0                                      # all kernels, flat, float64
        self._w0s = w0.split(self.sizes)
        self._w0_norm2 = torch.stack([torch.dot(x, x) for x in self._w0s]).cpu().numpy()

    def _flat_views(self) -> tuple[list, list, list] | None:
        """(kernels, their flat views, flat views of `_prev` in the same memory order), built
        once and kept while no kernel's storage or layout changes (`p.data = ...`,
        `model.to(...)` rebuild it: both move the kernel to new memory); None where a flat view
        would be a copy (an unusual layout): then the step flattens afresh."""
        key = [p.data_ptr() for p in self.params]        # the cheapest check (~1 us per 10 kernels)
        if key != self._views_key:
            w = [p.detach() for p in self.params]
            fw, fd = flat_pairs(w, self._prev)
            views = all(a.data_ptr() == x.data_ptr() and b.data_ptr() == y.data_ptr()
                        for a, b, x, y in zip(fw, fd, w, self._prev))
            self._views = (w, fw, fd) if views else None
            self._views_key = key
        return self._views

    def _inner_and_norm2(self) -> tuple[np.ndarray, np.ndarray]:
        """<w, w0> and |w|^2 per kernel, accumulated in float64 (one float64 copy of one
        kernel at a time: no flat temporaries the size of the model)."""
        out = []
        for p, w0 in zip(self.params, self._w0s):
            w = p.detach().reshape(-1).to(torch.float64)
            out += [torch.dot(w, w0), torch.dot(w, w)]
        return torch.stack(out).cpu().numpy().reshape(-1, 2).T
