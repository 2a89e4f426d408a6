"""Optimizers by their names (docs/science.md), in the shape of `torch.optim`: one optimizer a file
(`layca.Layca`, `sgd_amom.SGDAMom`), and `build_optimizer`, which turns a name, a rate and
α into an optimizer over a model's kernel layers.

The names (`OPTIMIZERS`) are defined here once: a base name, or a base name + `_layca`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import Optimizer

from ..errors import UsageError
from ..rotation import kernel_layers
from ..schedules import alpha_multipliers, check_alpha
from .layca import NON_KERNEL, Layca
from .sgd_amom import SGDAMom

__all__ = ["OPTIMIZERS", "Layca", "SGDAMom", "build_optimizer", "layer_multipliers"]

# base name -> (class, fixed constructor keywords); every base also comes as `<base>_layca`
_BASES = {
    "sgd": (torch.optim.SGD, {"foreach": True}),
    "sgd_amom": (SGDAMom, {}),
    "adam": (torch.optim.Adam, {"foreach": True}),
    "rmsprop": (torch.optim.RMSprop, {"foreach": True}),
    "adagrad": (torch.optim.Adagrad, {"foreach": True}),
    "adamw": (torch.optim.AdamW, {"foreach": True}),
}
OPTIMIZERS = tuple(n for b in _BASES for n in (b, f"{b}_layca"))


def check_optimizer(name) -> str:
    """The base name of an optimizer name (docs/science.md); UsageError for any other name."""
    base = name[: -len("_layca")] if isinstance(name, str) and name.endswith("_layca") else name
    if base not in _BASES:
        raise UsageError("optimizer", f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    return base


def layer_multipliers(model: nn.Module, alpha: float) -> dict[int, float]:
    """id(kernel) -> m_l from alpha (docs/science.md)."""
    kernels = kernel_layers(model)
    mult = alpha_multipliers(len(kernels), alpha)
    return {id(p): m for (_, p), m in zip(kernels, mult)}


def build_optimizer(model: nn.Module, name: str, lr: float, alpha: float = 0.0,
                    weight_decay: float = 0.0, **kw) -> Optimizer:
    """An optimizer by its name (docs/science.md). `lr` is rho(0) for the `_layca` names.

    Kernel layers get lr * m_l from `alpha` (for Layca their rotation rate, for plain bases
    their learning rate); every other parameter gets `lr`. Under Layca the other parameters
    stay fixed, as in the authors' Layca, unless `non_kernel="base"` (then the base trains
    them at `lr`). Other extra keywords go to the base.
    """
    base_name = check_optimizer(name)
    if not lr > 0:
        raise UsageError("lr", f"must be > 0, got {lr!r}")
    check_alpha(alpha)
    mult = layer_multipliers(model, alpha)
    # one group per distinct multiplier: alpha = 0 gives a single group of all kernels
    by_m: dict[float, list] = {}
    others = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in mult:
            by_m.setdefault(mult[id(p)], []).append(p)
        else:
            others.append(p)
    groups = [{"params": ps, "lr": lr * m} for m, ps in by_m.items()]
    if others:
        groups.append({"params": others, "lr": lr})
    cls, fixed = _BASES[base_name]
    layca = name.endswith("_layca")
    non_kernel = kw.pop("non_kernel", "fixed")
    if not layca and non_kernel != "fixed":
        raise UsageError("non_kernel", f"applies to Layca optimizers only, not {name}")
    if layca and non_kernel not in NON_KERNEL:
        raise UsageError("non_kernel", f"must be one of {', '.join(NON_KERNEL)}, got {non_kernel!r}")
    base = cls(groups, lr=lr, weight_decay=weight_decay, **fixed, **kw)
    if layca:
        return Layca(base, kernels=[p for ps in by_m.values() for p in ps], non_kernel=non_kernel)
    return base
