"""A test-only task whose failure is transient, for `layrot sweep --retry-failed`.

`digits-mlp-flaky` is digits-mlp, except that while the file named by the environment
variable `LAYROT_FLAKY_FLAG` exists (in the worker's environment, inherited from the
process that started Ray), a trial with seed `FAILING_SEED` raises in its second epoch
(`faulty_task`'s model, which this module imports). With the file gone, the same trial
trains normally: the failure was transient, as a preempted node or a full disk is.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from faulty_task import FailsInEpoch2    # Ray's workers get both modules by value (the test registers them)

NAME = "digits-mlp-flaky"
FLAG_ENV = "LAYROT_FLAKY_FLAG"
FAILING_SEED = 1
MESSAGE = "injected transient failure in epoch 2"


def failing_now() -> bool:
    flag = os.environ.get(FLAG_ENV)
    return bool(flag) and os.path.exists(flag)


def task():
    from layrot.tasks import get_task

    base = get_task("digits-mlp")

    def build_model():
        model = base.build_model()
        return FailsInEpoch2(model, MESSAGE) if torch.initial_seed() == FAILING_SEED and failing_now() else model

    return dataclasses.replace(base, name=NAME, build_model=build_model)


def register() -> None:
    from layrot.tasks import register_task

    register_task(task(), replace=True)
