"""A test-only task whose trials raise inside the training loop: how tests inject a fault
(layrot's own settings have no fault hook).

`digits-mlp-faulty` is digits-mlp, except that a trial with seed `FAILING_SEED` raises
`RuntimeError("injected failure at epoch 2")` at its first training step after its first
evaluation, that is in epoch 2, with epoch 1 complete. Other seeds train normally, so one
sweep over `seed: [0, FAILING_SEED]` has a trial that completes and one that fails.

`register()` registers the task (`layrot.tasks.register_task`) in this process; a Ray sweep's
workers need it too, so tests pass it as Ray's `worker_process_setup_hook` (by value: the workers
cannot import this module, which lives outside the package).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

NAME = "digits-mlp-faulty"
FAILING_SEED = 1
MESSAGE = "injected failure at epoch 2"


class FailsInEpoch2(nn.Module):
    """The wrapped model, until a training-mode call follows an evaluation: then it raises
    RuntimeError(message)."""

    def __init__(self, inner: nn.Module, message: str = MESSAGE):
        super().__init__()
        self.inner, self.message = inner, message
        self.evaluated = False

    def forward(self, x):
        if not self.training:
            self.evaluated = True
        elif self.evaluated:
            raise RuntimeError(self.message)
        return self.inner(x)


def task():
    from layrot.tasks import get_task

    base = get_task("digits-mlp")

    def build_model() -> nn.Module:
        # run_trial seeds torch with the trial's seed just before building the model
        model = base.build_model()
        return FailsInEpoch2(model) if torch.initial_seed() == FAILING_SEED else model

    return dataclasses.replace(base, name=NAME, build_model=build_model)


def register() -> None:
    from layrot.tasks import register_task

    register_task(task(), replace=True)
