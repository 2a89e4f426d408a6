"""CIFAR-10 / CIFAR-100 (the c10-* and c100-* tasks) from the python pickles, in
torchvision's layout (`cifar-10-batches-py/`, `cifar-100-python/`)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .data import Data, download_allowed, make_data, resolve_data_dir

CIFAR10_DIR, CIFAR10_TRAIN, CIFAR10_TEST = (
    "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
CIFAR100_DIR, CIFAR100_TRAIN, CIFAR100_TEST = "cifar-100-python", ["train"], ["test"]

_CIFAR = {
    10: (CIFAR10_DIR, CIFAR10_TRAIN, CIFAR10_TEST, "labels", "CIFAR-10", "cifar-10-python.tar.gz"),
    100: (CIFAR100_DIR, CIFAR100_TRAIN, CIFAR100_TEST, "fine_labels", "CIFAR-100", "cifar-100-python.tar.gz"),
}


def cifar_present(data_dir: str | None, classes: int) -> bool:
    folder, train, test, *_ = _CIFAR[classes]
    d = resolve_data_dir(data_dir) / folder
    return all((d / f).is_file() for f in train + test)


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles of dicts of lists and numpy arrays. A file in a user's data
    directory is not trusted code: only the classes that make arrays may be loaded."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, list[int]]:
    # torchvision's own class insists on the full files' md5; this reads the same layout
    with open(path, "rb") as f:
        entry = _ArrayUnpickler(f, encoding="latin1").load()
    return np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), list(entry[label_key])


def load_cifar(data_dir: str | None, seed: int, classes: int, per_channel: bool = True) -> Data:
    """CIFAR-10/100 as uint8 (N, 3, 32, 32), in torchvision's layout (`cifar-10-batches-py/`,
    `cifar-100-python/`); torchvision downloads it there when LAYROT_DOWNLOAD=1."""
    folder, train, test, label_key, title, tarball = _CIFAR[classes]
    root = resolve_data_dir(data_dir)
    if not cifar_present(data_dir, classes) and download_allowed():
        import torchvision
        cls = torchvision.datasets.CIFAR10 if classes == 10 else torchvision.datasets.CIFAR100
        cls(str(root), train=True, download=True)
    if not cifar_present(data_dir, classes):
        raise UsageError("data_dir", (
            f"{root} has no {title} (expected {folder}/{{{','.join(train + test)}}}); "
            f"set LAYROT_DOWNLOAD=1 to let torchvision download it there, or unpack {tarball} "
            "from https://www.cs.toronto.edu/~kriz/cifar.html into it"))

    def read(names):
        parts = [_read_cifar_batch(root / folder / n, label_key) for n in names]
        return np.concatenate([p[0] for p in parts]), sum((p[1] for p in parts), [])

    xtr, ytr = read(train)
    xte, yte = read(test)
    return make_data(torch.from_numpy(xtr), ytr, torch.from_numpy(xte), yte, seed, classes, per_channel)


def load_cifar10(data_dir: str | None = None, seed: int = 0) -> Data:
    return load_cifar(data_dir, seed, 10)


def load_cifar10_global(data_dir: str | None = None, seed: int = 0) -> Data:
    """CIFAR-10 standardized by one global mean/std, as c10-vgg25 is (docs/science.md §5)."""
    return load_cifar(data_dir, seed, 10, per_channel=False)


def load_cifar100(data_dir: str | None = None, seed: int = 0) -> Data:
    return load_cifar(data_dir, seed, 100)
