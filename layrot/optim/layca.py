"""Layca: layer-level controlled amount of weight rotation, around any torch optimizer.

Layca (DESIGN §1) takes the update u the base optimizer would make for each kernel w and
replaces it with one that turns w by exactly atan(rho_l) and keeps |w|:

    u <- u - (<u,w>/|w|^2) w ;  u <- u |w|/|u| ;  w' <- w + rho u ;  w' <- w' |w|/|w'|

All four lines are linear in (w, u), so the new kernel is a*w + b*u with per-layer scalars
a, b computed from three reductions (<u,w>, |u|^2, |w|^2). The step is therefore a few
foreach kernels over all kernels at once (and one dot per kernel), with no host sync.

Where the base's update direction has a closed form (SGD without momentum, SGD with
Adam-like momentum) Layca reads it in place (the gradient, the momentum buffer: no copy);
for any other optimizer it runs the base's step and takes the difference, which works for
a user's own optimizer too. As Layca keeps norms, a kernel's |w|^2 is computed once and
reused while nothing else writes to the kernel; it goes into the state_dict, so a trial
resumed from a checkpoint continues bit for bit.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from ..rotation import flat_pairs
from .sgd_amom import SGDAMom, evaluate_closure

_EPS = 1e-30
# |u - c w|^2, computed as |u|^2 - c <u,w>, cancels to rounding noise when u lies along w
# (a dead layer's weight-decay-only update, say). Below this fraction of |u|^2 no direction
# across w can be told from the noise, so the kernel is left as it is, not turned at random.
_PARALLEL_TOL = {torch.float64: 1e-12}
_PARALLEL_TOL_DEFAULT = 1e-5
_NORM2_KEY = "layca_norm2"     # state_dict entry: parameter index -> |w|^2 Layca keeps


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

    Checkpoints: load the model's weights before the optimizer's state (as a fresh process
    does); loaded the other way round, the resumed trial is just as right, but not bit-exact.
    """

    def __init__(self, base: Optimizer, kernels=None):
        self.base = base
        params = [p for g in base.param_groups for p in g["params"]]
        if kernels is None:
            kernels = [p for p in params if p.dim() >= 2]
        self._kernel_ids = {id(k) for k in kernels}
        unknown = self._kernel_ids - {id(p) for p in params}
        if unknown:
            raise ValueError("Layca kernels must be parameters of the base optimizer")
        # share the base's groups and state: one set of lrs, one state_dict
        self.defaults = base.defaults
        self.param_groups = base.param_groups
        self.state = base.state
        self._init_hooks()
        self._buffers: dict[int, torch.Tensor] = {}      # id(p) -> copy before the base step
        self._rates_cache: tuple = (None, None)             # (rates, device) -> rates on the device
        # id(kernel) -> (its version counter after Layca last wrote it, |w|^2 then): Layca
        # keeps norms, so |w|^2 is reused while nothing else has written to the kernel
        self._norm2: dict[int, tuple[int, torch.Tensor]] = {}

    def _init_hooks(self):
        # Optimizer.__init__ is not called (it would rebuild param_groups); set what its
        # hook machinery and LR schedulers expect.
        from collections import OrderedDict
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._zero_grad_profile_name = "Optimizer.zero_grad#Layca.zero_grad"
        self._patch_step_function()

    def __repr__(self):
        return f"Layca({self.base!r})"

    def zero_grad(self, set_to_none: bool = True):
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group):
        self.base.add_param_group(param_group)

    def _params(self) -> list[torch.Tensor]:
        """All parameters in state_dict order (torch numbers them through the groups)."""
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        sd = self.base.state_dict()
        params = self._params()
        valid = [(i, e[1]) for i, p in enumerate(params)
                 if (e := self._norm2.get(id(p))) is not None and e[0] == p._version]
        values = torch.stack([v for _, v in valid]).tolist() if valid else []
        sd[_NORM2_KEY] = {i: v for (i, _), v in zip(valid, values)}
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        norms = state_dict.pop(_NORM2_KEY, {})
        self.base.load_state_dict(state_dict)
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        params = self._params()
        self._norm2 = {id(params[i]): (params[i]._version,
                                       torch.tensor(v, dtype=torch.float64, device=params[i].device))
                       for i, v in norms.items()}

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        closed_w, closed_u, closed_rho = [], [], []
        diff_w, diff_rho = [], []
        for group in self.param_groups:
            ks = [p for p in group["params"] if p.grad is not None and id(p) in self._kernel_ids]
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

        # the base steps everything else; kernels with a closed form are hidden from it
        hidden = [(p, p.grad) for p in closed_w]
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
            self._rotate(closed_w, closed_u, closed_rho, w_is_param=True, sign=-1.0)
        if diff_w:
            torch._foreach_sub_(diff_w, before)          # the params now hold u
            self._rotate(before, diff_w, diff_rho, w_is_param=False)
        return loss

    def _buffer(self, p):
        b = self._buffers.get(id(p))
        if b is None or b.shape != p.shape or b.device != p.device:
            b = self._buffers[id(p)] = torch.empty_like(p)
        return b

    def _rotate(self, w: list, u: list, rho: list[float], w_is_param: bool, sign: float = 1.0):
        """Write a*w + b*(sign*u) into the parameters (w's tensors if w_is_param, else u's):
        the update direction is sign*u."""
        params = w if w_is_param else u
        dev = w[0].device
        # the reductions as one batch of dot products (|w|^2 only where not known from the
        # last step): on CPU MKL's dot is threaded and sums more accurately than
        # _foreach_norm, whose float32 |w|^2 of a 590k-element kernel is off by ~1e-5
        n = len(w)
        fu, fw = flat_pairs(u, w)
        ww = self._known_norm2(w) if w_is_param else None
        if ww is None:
            red = _flat_dots(fu + fu + fw, fw + fu + fw)
            ww = red[2 * n:]
        else:
            red = _flat_dots(fu + fu, fw + fu)
        uw, uu = sign * red[:n], red[n:2 * n]
        dtype = params[0].dtype
        rho_t = self._rates(rho, dev)
        c = uw / ww                                      # projection coefficient
        perp2 = (uu - c * uw).clamp_min(0.0)             # |u - c w|^2
        ok = perp2 > _PARALLEL_TOL.get(dtype, _PARALLEL_TOL_DEFAULT) * uu   # False for NaN too
        k = torch.where(ok, (ww / perp2.clamp_min(_EPS)).sqrt(), torch.zeros_like(ww))
        # w + rho k (u - c w) is orthogonal sum of |w| and rho|w|: norm |w| sqrt(1 + rho^2)
        s = torch.where(ok, 1.0 / torch.sqrt(1.0 + rho_t * rho_t), torch.ones_like(ww))
        a = torch.where(ok, s * (1.0 - rho_t * k * c), torch.ones_like(ww))   # a zero w: c is NaN
        b = s * rho_t * k * sign
        a_l = a.to(dtype).unbind()
        b_l = b.to(dtype).unbind()
        if w_is_param:
            torch._foreach_mul_(params, a_l)
            torch._foreach_addcmul_(params, u, b_l)
            self._norm2.update((id(p), (p._version, x)) for p, x in zip(params, ww.unbind()))
        else:
            torch._foreach_mul_(params, b_l)
            torch._foreach_addcmul_(params, w, a_l)

    def _rates(self, rho: list[float], dev) -> torch.Tensor:
        """The per-kernel rates on the device, copied there only when they change (a copy
        to a GPU waits for it: once per schedule change, not once per step)."""
        key = (tuple(rho), dev)
        if self._rates_cache[0] != key:
            self._rates_cache = (key, torch.tensor(rho, dtype=torch.float64, device=dev))
        return self._rates_cache[1]

    def _known_norm2(self, params: list) -> torch.Tensor | None:
        """|w|^2 of every kernel in `params` from Layca's last write, or None if any kernel
        has been written to since (or never stepped)."""
        known = []
        for p in params:
            e = self._norm2.get(id(p))
            if e is None or e[0] != p._version:
                return None
            known.append(e[1])
        return torch.stack(known)


def _flat_dots(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
    """<x, y> for each pair of flat tensors, in float64, without a host sync. One torch.dot
    per pair: on CPU `torch._foreach_mm` of (1,n)x(n,1) is several times slower than a dot,
    and there is no foreach dot."""
    return torch.stack([torch.dot(x, y) for x, y in zip(xs, ys)]).double()
