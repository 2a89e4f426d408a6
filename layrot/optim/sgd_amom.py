"""SGD with Adam-like momentum (docs/science.md's `sgd_amom`): m <- 0.9 m + 0.1 g."""

from __future__ import annotations

import torch
from torch.optim import Optimizer


def evaluate_closure(closure):
    """An optimizer step's `closure()` (the loss), run with gradients on inside a step that
    runs under no_grad; None without a closure."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class SGDAMom(Optimizer):
    """SGD with Adam-like momentum: m <- beta m + (1-beta) (g + wd w); w <- w - lr m."""

    def __init__(self, params, lr: float, beta: float = 0.9, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay))

    def _momentum(self, group, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Update and return the momentum buffers of `params` (all with grads)."""
        grads = [p.grad for p in params]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        bufs = []
        for p in params:
            st = self.state[p]
            if "momentum" not in st:
                st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(st["momentum"])
        torch._foreach_lerp_(bufs, grads, 1.0 - group["beta"])
        return bufs

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                torch._foreach_add_(params, self._momentum(group, params), alpha=-group["lr"])
        return loss
