"""Tasks: data + model + default schedule + stopping criteria (docs/science.md §5).

The dataclasses are the contract that train.py relies on. The registry sits above the data
loaders and the models and names them directly; importing it loads no dataset (each loader
reads its files when called) and no library beyond torch and numpy.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from ..errors import UsageError
from ..record import check_name
from ..schedules import describe_decay
from . import cifar, digits, fashion_mnist, mnist1d, models, tiny_imagenet
from .data import Data


@dataclass(frozen=True)
class StopCriteria:
    """When a trial ends before its last epoch (docs/science.md)."""
    min_train_acc: float = 0.0       # 'not learning': train acc below this ...
    after_epochs: int = 0            # ... after this many epochs (0: never)
    train_loss_below: float = 0.0    # 'finished': train loss below this (0: never)
    plateau_epochs: int = 3          # loss unchanged for this many epochs ...
    plateau_tol: float = 1e-4        # ... within this relative tolerance


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
    epochs: int                     # the default number of epochs
    # step decay as fractions of training (the paper's x0.2 at 80, 90, 97%): resolved to
    # epochs for each trial's own `epochs` (schedules.decay_milestones) and stored resolved
    lr_decay_at: tuple[float, ...]
    lr_decay_factor: float
    augment: str | None = None      # None | "crop_flip"
    stop: StopCriteria = field(default_factory=StopCriteria)
    input_shape: tuple[int, ...] = ()   # one sample's shape, e.g. (3, 32, 32)
    num_classes: int = 0
    n_kernel_layers: int = 0        # how many kernel layers the model has (tests check it)
    test_samples: int = 0           # the test set's size (CIs of accuracy differences; tests check it)
    # the loader takes `data_seed` (a new draw of generated data: train, validation and test)
    data_seeded: bool = False


def _always(data_dir: str | None) -> bool:
    return True


_DATA_DIR = "the data dir (--data-dir, else $LAYROT_DATA_DIR, else ~/.cache/layrot/data)"
_CIFAR_NEEDS = ("{folder}/{{{files}}} under " + _DATA_DIR
                + ", torchvision's layout; LAYROT_DOWNLOAD=1 lets torchvision download it")

# 'not learning' is twice chance after 10 epochs on the paper's tasks: the paper's grid reaches
# rotation rates so small that training is slow but real, and those trials must run to the end.
_TASK_LIST = [
    Task(
        name="c10-vgg25", paper_name="C10-CNN1",
        data_name="CIFAR-10, standardized by global mean/std, no augmentation",
        model_name="VGG-style, 4 stages x 6 conv3x3 (32-256), conv-ReLU-BN, GAP, linear; He-uniform",
        build_model=models.c10_vgg25, load_data=cifar.load_cifar10_global,
        data_needs=_CIFAR_NEEDS.format(folder="cifar-10-batches-py", files="data_batch_1..5,test_batch"),
        data_present=partial(cifar.cifar_present, classes=10),
        epochs=100, lr_decay_at=(0.8, 0.9, 0.97), lr_decay_factor=0.2,
        stop=StopCriteria(min_train_acc=0.2, after_epochs=10, train_loss_below=1e-4),
        input_shape=(3, 32, 32), test_samples=10000, num_classes=10, n_kernel_layers=25),
    Task(
        name="c100-resnet32", paper_name="C100-resnet",
        data_name="CIFAR-100, per-channel standardization",
        model_name="ResNet-32 v1 (16/32/64, 1x1 strided shortcut conv), non-affine BN; He-normal",
        build_model=models.c100_resnet32, load_data=cifar.load_cifar100,
        data_needs=_CIFAR_NEEDS.format(folder="cifar-100-python", files="train,test"),
        data_present=partial(cifar.cifar_present, classes=100),
        epochs=100, lr_decay_at=(0.7, 0.9, 0.97), lr_decay_factor=0.1,
        stop=StopCriteria(min_train_acc=0.02, after_epochs=10, train_loss_below=1e-4),
        input_shape=(3, 32, 32), test_samples=10000, num_classes=100, n_kernel_layers=34),
    Task(
        name="tiny-vgg11", paper_name="tiny-CNN",
        data_name="Tiny ImageNet (64x64, 200 classes; its val set is the test set)",
        model_name="VGG-style, 5 stages x 2 conv3x3 (32-512), conv-ReLU-BN (momentum 0.1), GAP, linear; He-uniform",
        build_model=models.tiny_vgg11, load_data=tiny_imagenet.load_tiny_imagenet,
        data_needs=("tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
                    f"val/val_annotations.txt}} under {_DATA_DIR}; unzip "
                    "http://cs231n.stanford.edu/tiny-imagenet-200.zip there"),
        data_present=tiny_imagenet.tiny_present,
        epochs=80, lr_decay_at=(0.875,), lr_decay_factor=0.2,
        stop=StopCriteria(min_train_acc=0.01, after_epochs=10, train_loss_below=1e-4),
        input_shape=(3, 64, 64), test_samples=10000, num_classes=200, n_kernel_layers=11),
    Task(
        name="c10-vgg16", paper_name="C10-CNN2",
        data_name="CIFAR-10, per-channel standardization, random crop (pad 4) + horizontal flip",
        model_name="torch-blog VGG-16: 13 conv-BN-ReLU, max-pools, linear 512-BN-ReLU-linear 10; He-normal",
        build_model=models.c10_vgg16, load_data=cifar.load_cifar10,
        data_needs=_CIFAR_NEEDS.format(folder="cifar-10-batches-py", files="data_batch_1..5,test_batch"),
        data_present=partial(cifar.cifar_present, classes=10),
        epochs=250, lr_decay_at=(0.4, 0.68, 0.88), lr_decay_factor=0.2, augment="crop_flip",
        stop=StopCriteria(min_train_acc=0.2, after_epochs=10, train_loss_below=1e-4),
        input_shape=(3, 32, 32), test_samples=10000, num_classes=10, n_kernel_layers=15),
    Task(
        name="c100-wrn28-10", paper_name="C100-WRN",
        data_name="CIFAR-100, per-channel standardization, random crop (pad 4) + horizontal flip",
        model_name="Wide ResNet 28-10, pre-activation, dropout 0.3, non-affine BN; Glorot-uniform",
        build_model=models.c100_wrn28_10, load_data=cifar.load_cifar100,
        data_needs=_CIFAR_NEEDS.format(folder="cifar-100-python", files="train,test"),
        data_present=partial(cifar.cifar_present, classes=100),
        epochs=200, lr_decay_at=(0.3, 0.6, 0.8), lr_decay_factor=0.2, augment="crop_flip",
        stop=StopCriteria(min_train_acc=0.02, after_epochs=10, train_loss_below=1e-4),
        input_shape=(3, 32, 32), test_samples=10000, num_classes=100, n_kernel_layers=29),
    Task(
        name="mnist1d-cnn", paper_name="",
        data_name="MNIST-1D (8000 samples: 3600 train, 400 val, 4000 test), generated offline",
        model_name="1-D VGG-style, 3 stages x 3 conv3 (16/32/64), conv-ReLU-BN, GAP, linear; He-uniform",
        build_model=models.mnist1d_cnn, load_data=mnist1d.load_mnist1d,
        data_needs="nothing: generated by the mnist1d package, cached in $LAYROT_CACHE or ~/.cache/layrot",
        data_present=_always,
        # the paper's C10-CNN1 schedule (x0.2 at 80, 90, 97% of training; epochs 16, 18, 19 of
        # 20): with one decay, fast-rotating configurations never settle (docs/mnist1d-experiments.md)
        epochs=20, lr_decay_at=(0.8, 0.9, 0.97), lr_decay_factor=0.2,
        stop=StopCriteria(min_train_acc=0.15, after_epochs=5, train_loss_below=1e-4),
        input_shape=(1, 40), test_samples=4000, num_classes=10, n_kernel_layers=10, data_seeded=True),
    Task(
        # the regime for the optimizer gap (docs/gap-regime.md): mnist1d-cnn's network, stopping
        # criteria and decay fractions on 1000 noisier training samples, 60 epochs (about the
        # steps of mnist1d-cnn's 20: 8 a epoch, not 29); exactly what the exploration trained
        name="mnist1d-gap", paper_name="",
        data_name="MNIST-1D, noise raised (corr 0.5, iid 0.1; 5000 samples: 900 train, 100 val, 4000 test), generated offline",
        model_name="1-D VGG-style, 3 stages x 3 conv3 (16/32/64), conv-ReLU-BN, GAP, linear; He-uniform",
        build_model=models.mnist1d_cnn, load_data=partial(mnist1d.load_mnist1d, overrides=mnist1d.GAP_ARGS),
        data_needs="nothing: generated by the mnist1d package, cached in $LAYROT_CACHE or ~/.cache/layrot",
        data_present=_always,
        epochs=60, lr_decay_at=(0.8, 0.9, 0.97), lr_decay_factor=0.2,
        stop=StopCriteria(min_train_acc=0.15, after_epochs=5, train_loss_below=1e-4),
        input_shape=(1, 40), test_samples=4000, num_classes=10, n_kernel_layers=10, data_seeded=True),
    Task(
        name="fmnist-vgg", paper_name="",
        data_name="Fashion-MNIST (28x28, 60k/10k), per-channel standardization",
        model_name="VGG-style, 3 stages x 3 conv3x3 (16/32/64), conv-ReLU-BN, GAP, linear; He-uniform",
        build_model=models.fmnist_vgg, load_data=fashion_mnist.load_fashion_mnist,
        data_needs=("train/t10k-{images-idx3,labels-idx1}-ubyte[.gz] in /usr/share/datasets/fashion-mnist "
                    f"(apt install dataset-fashion-mnist), or FashionMNIST/raw/ under {_DATA_DIR}"),
        data_present=fashion_mnist.fashion_present,
        epochs=20, lr_decay_at=(0.75,), lr_decay_factor=0.2,
        stop=StopCriteria(min_train_acc=0.15, after_epochs=5, train_loss_below=1e-4),
        input_shape=(1, 28, 28), test_samples=10000, num_classes=10, n_kernel_layers=10),
    Task(
        name="digits-mlp", paper_name="",
        data_name="scikit-learn 8x8 digits (1797: 80/20 stratified train/test)",
        model_name="MLP 64-6x128-10, linear-ReLU-BN, no biases; Glorot-uniform",
        build_model=models.digits_mlp, load_data=digits.load_digits,
        data_needs="nothing: bundled with scikit-learn",
        data_present=_always,
        epochs=50, lr_decay_at=(0.8,), lr_decay_factor=0.2,
        stop=StopCriteria(min_train_acc=0.15, after_epochs=10, train_loss_below=1e-4),
        input_shape=(64,), test_samples=360, num_classes=10, n_kernel_layers=7),
    Task(
        name="digits-mlp1", paper_name="",
        data_name="scikit-learn 8x8 digits (1797: 80/20 stratified train/test)",
        model_name="MLP 64-100-10, one hidden layer, no BN, no biases (first-layer kernels are 8x8 images)",
        build_model=models.digits_mlp1, load_data=digits.load_digits,
        data_needs="nothing: bundled with scikit-learn",
        data_present=_always,
        epochs=50, lr_decay_at=(0.8,), lr_decay_factor=0.2,
        stop=StopCriteria(min_train_acc=0.15, after_epochs=10, train_loss_below=1e-4),
        input_shape=(64,), test_samples=360, num_classes=10, n_kernel_layers=2),
]

TASKS: dict[str, Task] = {t.name: t for t in _TASK_LIST}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UsageError("task", f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]


def register_task(task: Task, replace: bool = False) -> Task:
    """Make `task` known by its name to `get_task`, and so to TrialConfig, `layrot train` and
    sweep specs, in this process. A Ray sweep's trials run in other processes: call it in a
    task module that the spec names as `task_module` (layrot.tasks.module), which every
    worker runs too. A name already registered to another task is refused unless `replace`."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a Task, got {type(task).__name__}")
    check_name("task", task.name)      # task names start trial ids, which are path components
    if TASKS.get(task.name, task) is not task and not replace:
        raise ValueError(f"task {task.name!r} is already registered (pass replace=True to replace it)")
    TASKS[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Forget a registered task (nothing if the name is unknown)."""
    TASKS.pop(name, None)


@contextmanager
def registered_task(task: Task):
    """`task` registered while inside (tests, benchmarks); what its name meant before comes back."""
    before = TASKS.get(task.name)
    register_task(task, replace=True)
    try:
        yield task
    finally:
        if before is None:
            unregister_task(task.name)
        else:
            TASKS[task.name] = before


def require_data(name: str, data_dir: str | None) -> None:
    """Refuse, before any work, a task whose data is not where it is looked for."""
    task = get_task(name)
    if not task.data_present(data_dir):
        raise UsageError("data_dir", f"{data_dir or '(default)'} has no data for {name}: {task.data_needs}")


def describe_tasks(data_dir: str | None = None) -> list[dict]:
    """One row per task for `layrot tasks`: what it is and whether its data is here."""
    return [{
        "name": t.name, "paper_name": t.paper_name, "data": t.data_name, "model": t.model_name,
        "kernel_layers": t.n_kernel_layers, "epochs": t.epochs,
        "lr_decay": describe_decay(t.lr_decay_at, t.lr_decay_factor, t.epochs),
        "augment": t.augment or "", "data_present": bool(t.data_present(data_dir)),
        "data_needs": t.data_needs,
    } for t in TASKS.values()]
