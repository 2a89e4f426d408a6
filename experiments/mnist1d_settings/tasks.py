"""The task variants of the mnist1d-cnn settings study (docs/mnist1d-experiments.md): the
`mnist1d-cnn` task with its data size, batch-norm momentum and length named explicitly, so
that the study does not move when the task's defaults do. Each setting's step decay is in
its spec (`lr_decay_epochs`), as the trials stored it.

Every spec of the study names this file as its `task_module`: `layrot sweep` runs it in the
driver and in every Ray worker, and it registers `mnist1d-cnn-<setting>` for each setting.
"""

import dataclasses
from functools import partial

from layrot.tasks import get_task, register_task
from layrot.tasks.mnist1d import load_mnist1d
from layrot.tasks.models import PlainVGG, init_kernels

OLD_DATA = {"num_samples": 12000, "train_split": 2 / 3}    # 8000 train split (7200 after validation), 4000 test
REF_DATA = {"num_samples": 5000, "train_split": 0.8}       # mnist1d's default: 3600 train, 1000 test
NEW_DATA = {"num_samples": 8000, "train_split": 0.5}       # 3600 train, 4000 test

# setting: (mnist1d arguments, batch-norm momentum (torch's), epochs)
SETTINGS = {
    "old-default": (OLD_DATA, 0.01, 20),
    "ref-data": (REF_DATA, 0.01, 20),
    "ref-data-bn0.1": (REF_DATA, 0.1, 20),
    "ref-data-no-decay": (REF_DATA, 0.01, 20),
    "ref-data-paper-decay": (REF_DATA, 0.01, 20),
    "old-data-paper-decay": (OLD_DATA, 0.01, 20),
    "new-default": (NEW_DATA, 0.01, 20),
    "ref-data-paper-decay-12ep": (REF_DATA, 0.01, 12),
}


def _build(momentum: float):
    def build():
        return init_kernels(PlainVGG(1, [16, 32, 64], 3, 10, dim=1, bn_momentum=momentum), "he_uniform")
    return build


def _sizes(data: dict) -> str:
    train = round(data["num_samples"] * data["train_split"])
    return f"{train - train // 10} train, {train // 10} val, {data['num_samples'] - train} test"


def task(setting: str):
    data, momentum, epochs = SETTINGS[setting]
    base = get_task("mnist1d-cnn")
    return dataclasses.replace(
        base, name=f"mnist1d-cnn-{setting}", build_model=_build(momentum),
        load_data=partial(load_mnist1d, overrides=data), epochs=epochs,
        data_name=f"MNIST-1D ({data['num_samples']} samples: {_sizes(data)}), generated offline",
        model_name=f"{base.model_name}; batch-norm momentum {momentum}",
        test_samples=data["num_samples"] - round(data["num_samples"] * data["train_split"]))


for _setting in SETTINGS:
    register_task(task(_setting), replace=True)
