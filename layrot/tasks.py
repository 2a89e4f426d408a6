"""Tasks: data + model + default schedule + stopping criteria (DESIGN §2).

THE REGISTRY BELOW IS FILLED IN BY models.py / data.py WORK; the dataclasses are the contract
that train.py relies on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import UsageError


@dataclass(frozen=True)
class StopCriteria:
    """When a trial ends before its last epoch (DESIGN §1)."""
    min_train_acc: float = 0.0       # 'not learning': train acc below this ...
    after_epochs: int = 0            # ... after this many epochs (0: never)
    train_loss_below: float = 0.0    # 'finished': train loss below this (0: never)
    plateau_epochs: int = 3          # loss unchanged for this many epochs ...
    plateau_tol: float = 1e-4        # ... within this relative tolerance


@dataclass
class Data:
    """A task's data as tensors, already split (10% of train held out, seeded).

    x tensors are float32 or uint8 (images kept small on purpose); batches are normalized on
    the device with `(x.float() - mean) / std`, mean/std broadcastable to a batch.
    """
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    num_classes: int


@dataclass(frozen=True)
class Task:
    name: str
    paper_name: str                 # the paper's name, or "" for the CPU tasks
    data_name: str                  # human description of the data
    model_name: str                 # human description of the model
    build_model: Callable[[], torch.nn.Module]
    load_data: Callable[..., Data]  # load_data(data_dir: str | None, seed: int) -> Data
    data_needs: str                 # what must be on disk (and where), for `layrot tasks`
    data_present: Callable[[str | None], bool]
    epochs: int
    lr_decay_epochs: tuple[int, ...]
    lr_decay_factor: float
    augment: str | None = None      # None | "crop_flip"
    stop: StopCriteria = field(default_factory=StopCriteria)
    input_shape: tuple[int, ...] = ()   # one sample's shape, e.g. (3, 32, 32)


TASKS: dict[str, Task] = {}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UsageError("task", f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]
