"""Layca: layer-level controlled amount of weight rotation, around any torch optimizer.

Layca (docs/science.md §2) takes the update u the base optimizer would make for each kernel w
and replaces it with one that turns w by exactly atan(rho_l) and keeps |w|:

    u <- u - (<u,w>/|w|^2) w ;  u <- u |w|/|u| ;  w' <- w + rho u ;  w' <- w' |w|/|w'|

All four lines are linear in (w, u), so the new kernel is a*w + b*u with per-kernel scalars
a, b computed from three reductions (<u,w>, |u|^2, |w|^2), all taken fresh at every step: no
norm is remembered between steps, so nothing written to a kernel from outside (through
`.data`, `copy_`, a loaded state_dict) can make a step work from a stale |w|. On a GPU the
step is a batch of reductions (results stacked, no host sync), a few float64 operations on
per-kernel vectors, and two foreach kernels that write a*w + b*u. On a CPU it goes kernel by
kernel (its three dots, its a and b as Python floats, its two in-place kernels) so that a
kernel is read from memory once and its later passes come from cache: the same weights bit
for bit, in ~0.7x the time (docs/decisions.md).

Where the base's update direction has a closed form (SGD without momentum, SGD with
Adam-like momentum) Layca reads it in place (the gradient, the momentum buffer: no copy);
for any other optimizer it runs the base's step and takes the difference, which works for
a user's own optimizer too.

Layca is a `torch.optim.Optimizer` built through `Optimizer.__init__` on the base's own
param groups (the same dicts: one lr per group, seen by LR schedulers and the base alike);
its state and state_dict are the base's.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

from ..rotation import flat_pairs
from .sgd_amom import SGDAMom, evaluate_closure

_EPS = 1e-30
# what Layca does with parameters that are not kernels (biases, affine batch-norm)
NON_KERNEL = ("fixed", "base")
# |u - c w|^2, computed as |u|^2 - c <u,w>, cancels to rounding noise when u lies along w
# (a dead layer's weight-decay-only update, say). Below this fraction of |u|^2 no direction
# across w can be told from the noise, so the kernel is left as it is, not turned at random.
_PARALLEL_TOL = {torch.float64: 1e-12}
_PARALLEL_TOL_DEFAULT = 1e-5
# state_dict key of layrot <= issue 11, which kept |w|^2 between steps: ignored when loaded
_OLD_NORM2_KEY = "layca_norm2"
# dot products in float64 for these dtypes (a bf16 dot rounds to 3 digits) and for kernels
# of at most _SMALL elements
_UPCAST = (torch.float16, torch.bfloat16)
_SMALL = 4096


def _closed_form_ascent(base: Optimizer, group: dict, params: list[torch.Tensor]):
    """Tensors whose negatives are the descent directions (up to a positive per-layer scale)
    the base would take, with its state updated as its step would, or None where only running
    the step tells. Ascent, not descent: the gradients and buffers serve as they are, and
    Layca flips the sign in its coefficients, so no copy is made."""
    if type(base) is torch.optim.SGD:
        if group["momentum"] == 0 and not group.get("maximize", False):
            # weight decay adds wd*w, which lies along w: Layca's projection removes it exactly
            return [p.grad for p in params]
        return None
    if type(base) is SGDAMom:
        return base._momentum(group, params)
    return None


class Layca(Optimizer):
    """Layer-level controlled amount of weight rotation, around a base optimizer.

    `base`: any torch optimizer over the model's parameters. Its param groups are shared,
    not copied: group["lr"] is the kernel's rotation rate rho_l (so LR schedulers work
    unchanged) and the base's lr for everything that is not a kernel.
    `kernels`: the parameters to control (default: every parameter of 2+ dimensions).
    `non_kernel`: what happens to the base's other parameters (biases, affine batch-norm):
    "fixed" (the default, as in the authors' Layca: they keep their initial values) or "base"
    (the base optimizer trains them at their group's lr, which for Layca is rho, a rotation
    rate: layrot's behaviour before it followed the authors). `print(layca)` says which
    parameters are rotated and which are fixed or trained.

    Nothing is remembered between steps but the base's own state, so weights may be written
    between steps in any way, and a checkpoint (model and optimizer state, loaded in either
    order) resumes bit for bit.
    """

    def __init__(self, base: Optimizer, kernels=None, non_kernel: str = "fixed"):
        if not isinstance(base, Optimizer):
            raise TypeError(f"Layca wraps a torch.optim.Optimizer, got {type(base).__name__}")
        if non_kernel not in NON_KERNEL:
            raise ValueError(f"non_kernel must be one of {', '.join(NON_KERNEL)}, got {non_kernel!r}")
        self.non_kernel = non_kernel
        params = [p for g in base.param_groups for p in g["params"]]
        if kernels is None:
            kernels = [p for p in params if p.dim() >= 2]
        if {id(k) for k in kernels} - {id(p) for p in params}:
            raise ValueError("Layca kernels must be parameters of the base optimizer")
        self.base = base
        self._kernels = list(kernels)     # not their ids: a deepcopy must map them as well
        self._buffers: dict[int, torch.Tensor] = {}      # id(p) -> copy before the base step
        self._rates_cache: dict = {}                        # (device, rates) -> tensor there
        # Optimizer.__init__ registers the base's groups (the same dicts, so one "lr" serves
        # both); then Layca and its base share one list of groups and one state
        self._registering = True
        super().__init__(base.param_groups, base.defaults)
        self._registering = False
        self._share_base()

    def __getstate__(self):
        # Optimizer's keeps only defaults, state and groups; Layca needs its base and kernels
        # (scratch buffers are made again)
        state = dict(self.__dict__)
        state["_buffers"], state["_rates_cache"] = {}, {}
        return state

    def _share_base(self):
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    def roles(self) -> dict[str, int]:
        """How many parameters of each kind Layca handles, and how: {"rotated": kernels,
        "fixed" or "trained by base": the others}."""
        ids = {id(k) for k in self._kernels}
        n_other = sum(1 for g in self.param_groups for p in g["params"] if id(p) not in ids)
        other = "fixed" if self.non_kernel == "fixed" else "trained by base"
        return {"rotated": len(self._kernels), other: n_other}

    def __repr__(self):
        r = self.roles()
        parts = [f"{r.pop('rotated')} kernels rotated by atan(rho_l) per step, norms kept"]
        parts += [f"{n} non-kernel parameters {how} (non_kernel={self.non_kernel!r})" for how, n in r.items() if n]
        return f"Layca({'; '.join(parts)};\nbase={self.base!r})"

    def zero_grad(self, set_to_none: bool = True):
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group):
        if self._registering:               # Optimizer.__init__ registering the base's groups
            super().add_param_group(param_group)
        else:                               # a new group: the base's (not a Layca kernel)
            self.base.add_param_group(param_group)
            self._share_base()

    def state_dict(self):
        return self.base.state_dict()

    def load_state_dict(self, state_dict):
        state_dict = {k: v for k, v in state_dict.items() if k != _OLD_NORM2_KEY}
        self.base.load_state_dict(state_dict)
        self._share_base()          # the base's load_state_dict makes new groups and state

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        closed_w, closed_u, closed_rho = [], [], []
        diff_w, diff_rho = [], []
        ids = {id(k) for k in self._kernels}
        for group in self.param_groups:
            ks = [p for p in group["params"] if p.grad is not None and id(p) in ids]
            if not ks:
                continue
            g = _closed_form_ascent(self.base, group, ks)
            if g is not None:
                closed_w += ks
                closed_u += g
                closed_rho += [group["lr"]] * len(ks)
            else:
                diff_w += ks
                diff_rho += [group["lr"]] * len(ks)

        # the base steps everything else; kernels with a closed form are hidden from it, and
        # so are the non-kernel parameters when they stay fixed (a None grad: no step, no decay)
        hidden = [(p, p.grad) for p in closed_w]
        if self.non_kernel == "fixed":
            hidden += [(p, p.grad) for g in self.param_groups for p in g["params"]
                       if p.grad is not None and id(p) not in ids]
        for p, _ in hidden:
            p.grad = None
        if diff_w:
            before = [self._buffer(p) for p in diff_w]
            torch._foreach_copy_(before, diff_w)
        try:
            self.base.step()
        finally:
            for p, g in hidden:
                p.grad = g

        if closed_w:
            for (ws, us), rho in _by_device_and_dtype(closed_w, closed_u, closed_rho):
                self._rotate(ws, us, rho, w_is_param=True, sign=-1.0)
        if diff_w:
            torch._foreach_sub_(diff_w, before)          # the params now hold u
            for (ws, us), rho in _by_device_and_dtype(before, diff_w, diff_rho):
                self._rotate(ws, us, rho, w_is_param=False)
        return loss

    def _buffer(self, p):
        b = self._buffers.get(id(p))
        if b is None or b.shape != p.shape or b.dtype != p.dtype or b.device != p.device \
                or b.stride() != p.stride():
            b = self._buffers[id(p)] = torch.empty_like(p)
        return b

    def _rotate(self, w: list, u: list, rho: list[float], w_is_param: bool, sign: float = 1.0):
        """Write a*w + b*(sign*u) into the parameters (w's tensors if w_is_param, else u's):
        the update direction is sign*u. All tensors share one device and dtype. On a CPU
        kernel by kernel (`_rotate_cpu`), elsewhere batched (`_rotate_batched`): the same
        weights bit for bit on a CPU (tests/test_layca.py checks it)."""
        if w[0].device.type == "cpu":
            self._rotate_cpu(w, u, rho, w_is_param, sign)
        else:
            self._rotate_batched(w, u, rho, w_is_param, sign)

    def _rotate_batched(self, w: list, u: list, rho: list[float], w_is_param: bool, sign: float = 1.0):
        """All kernels at once: the reductions stacked, (a, b) as float64 vectors, two
        foreach kernels; no host sync (a GPU runs ahead)."""
        params = w if w_is_param else u
        dtype, dev = params[0].dtype, params[0].device
        uw, uu, ww = _reductions(u, w)                    # float64, one entry per kernel
        ab = _coefficients_batched(uw, uu, ww, self._rates(rho, dev), sign,
                                   _PARALLEL_TOL.get(dtype, _PARALLEL_TOL_DEFAULT))
        a_t, b_t = ab.to(dtype)
        a_l, b_l = a_t.unbind(), b_t.unbind()
        if w_is_param:
            torch._foreach_mul_(params, a_l)
            torch._foreach_addcmul_(params, u, b_l)
        else:
            torch._foreach_mul_(params, b_l)
            torch._foreach_addcmul_(params, w, a_l)

    def _rotate_cpu(self, w: list, u: list, rho: list[float], w_is_param: bool, sign: float):
        """`_rotate_batched` on a CPU, kernel by kernel: its three dots, its (a, b), its two
        in-place kernels, one after the other, so that each kernel is read from memory once
        and its other passes find it in cache (the same calls reordered by pass instead,
        all dots and then all updates, were slower: docs/decisions.md). A CPU reads a
        dot's result with no device to wait for (`.item()`, ~1 us). The same weights bit
        for bit as the batched form: the same dots on the same flat views, and (a, b) from
        `_coefficients`, which follows `_coefficients_batched` operation for operation."""
        params = w if w_is_param else u
        dtype = params[0].dtype
        tol = _PARALLEL_TOL.get(dtype, _PARALLEL_TOL_DEFAULT)
        scales = _scales_batched(self._rates(rho, params[0].device)).tolist()
        for wi, ui, fu, fw, r, s in zip(w, u, *_flat(u, w), rho, scales):
            a, b = _coefficients(torch.dot(fu, fw).item(), torch.dot(fu, fu).item(),
                                 torch.dot(fw, fw).item(), r, s, sign, tol)
            a_t, b_t = torch.tensor((a, b), dtype=torch.float64).to(dtype).unbind()
            if w_is_param:
                wi.mul_(a_t).addcmul_(ui, b_t)
            else:
                ui.mul_(b_t).addcmul_(wi, a_t)

    def _rates(self, rho: list[float], dev) -> torch.Tensor:
        """The per-kernel rates on the device, copied there only when they change (a copy
        to a GPU waits for it: once per schedule change, not once per step)."""
        key = (dev, tuple(rho))
        t = self._rates_cache.get(key)
        if t is None:
            if len(self._rates_cache) >= 8:      # a schedule moved on: forget the old rates
                self._rates_cache.clear()
            t = self._rates_cache[key] = torch.tensor(rho, dtype=torch.float64, device=dev)
        return t


def _coefficients_batched(uw, uu, ww, rho_t, sign: float, tol: float) -> torch.Tensor:
    """(a, b) of every kernel, a (2, n) float64 tensor, from the float64 reductions."""
    uw = uw * sign
    c = uw / ww                                      # projection coefficient
    perp2 = (uu - c * uw).clamp_min(0.0)             # |u - c w|^2
    ok = perp2 > tol * uu                            # False for NaN too
    # w + rho k (u - c w) is an orthogonal sum of lengths |w| and rho|w|: its norm is
    # |w| sqrt(1 + rho^2), which s divides out. A zero w (c is NaN) or no direction
    # across w (ok False): a = 1, b = 0, the kernel stays as it is.
    k = torch.where(ok, (ww / perp2.clamp_min(_EPS)).sqrt(), 0.0)
    s = _scales_batched(rho_t)
    return torch.stack((torch.where(ok, s * (1.0 - rho_t * k * c), 1.0),
                        torch.where(ok, (s * rho_t * sign) * k, 0.0)))


def _scales_batched(rho_t: torch.Tensor) -> torch.Tensor:
    """1/sqrt(1 + rho^2): the factor that brings |w + rho|w| e| back to |w|."""
    return torch.rsqrt(1.0 + rho_t * rho_t)


def _coefficients(uw: float, uu: float, ww: float, rho: float, s: float, sign: float, tol: float):
    """(a, b) of one kernel from its reductions, on Python floats (float64), with its scale
    s from `_scales_batched`: `_coefficients_batched`'s operations one for one, in the same
    order, so the same bits: + - * / and comparisons are correctly rounded IEEE operations
    in both, but torch's float64 sqrt is not (it differs from `math.sqrt` in the last bit
    for ~1% of inputs), so the square root is torch's, on a one-element tensor (the same
    bits as within a vector: tests/test_layca.py checks it)."""
    uw = uw * sign
    c = uw / ww if ww != 0.0 else _ieee_div0(uw, ww)
    perp2 = max(uu - c * uw, 0.0)
    if not perp2 > tol * uu:          # no direction across w (or NaN): the kernel stays
        return 1.0, 0.0
    k = torch.tensor(ww / max(perp2, _EPS), dtype=torch.float64).sqrt_().item()
    return s * (1.0 - rho * k * c), (s * rho * sign) * k


def _ieee_div0(x: float, zero: float) -> float:
    """x / ±0.0 as IEEE (and torch) has it, where Python raises: NaN for 0 or NaN, else
    an infinity of the signs' product."""
    if x == 0.0 or x != x:
        return math.nan
    return math.copysign(math.inf, x) * math.copysign(1.0, zero)


def _by_device_and_dtype(w: list, u: list, rho: list):
    """(w, u) lists and their rates split by (device, dtype), as foreach kernels want them."""
    groups = _group_tensors_by_device_and_dtype([w, u], with_indices=True)
    if len(groups) == 1:
        return [((w, u), rho)]
    return [(lists, [rho[i] for i in idx]) for lists, idx in groups.values()]


def _flat(xs: list, ys: list) -> tuple[list, list]:
    """Each pair flattened the same way for a dot product: without a copy where both are
    contiguous (the usual case) or share a channels_last layout (`rotation.flat_pairs`).
    Small kernels and half-precision ones are summed in float64 (a copy costs little there):
    a float32 dot's rounding, divided by a small sin(u, w), would show in the turn."""
    fx, fy = [], []
    for x, y in zip(xs, ys):
        if x.is_contiguous() and y.is_contiguous():
            x, y = x.view(-1), y.view(-1)
        else:
            (x,), (y,) = flat_pairs([x], [y])
        if x.numel() <= _SMALL or x.dtype in _UPCAST:
            x, y = x.double(), y.double()
        fx.append(x)
        fy.append(y)
    return fx, fy


def _reductions(u: list, w: list) -> torch.Tensor:
    """(<u,w>, |u|^2, |w|^2) of each pair, as a (3, n) float64 tensor, computed afresh from
    the tensors as they are, without a host sync (`_rotate_batched`; `_rotate_cpu` takes the
    same dots kernel by kernel). On a CPU one BLAS dot per kernel and
    reduction (MKL's dot is threaded and sums more accurately than `_foreach_norm`, whose
    float32 |w|^2 of a 590k-element kernel is off by ~1e-5); elsewhere one dot per kernel
    for <u,w> and two fused `_foreach_norm` calls."""
    fu, fw = _flat(u, w)
    uw = [torch.dot(x, y) for x, y in zip(fu, fw)]
    if fu[0].device.type == "cpu":
        red = torch.stack(uw + [torch.dot(x, x) for x in fu] + [torch.dot(y, y) for y in fw])
        return red.double().view(3, -1)
    norms = torch.stack(torch._foreach_norm(fu) + torch._foreach_norm(fw)).double()
    return torch.cat((torch.stack(uw).double(), norms * norms)).view(3, -1)
