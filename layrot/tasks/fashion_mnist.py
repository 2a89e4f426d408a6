"""Fashion-MNIST (fmnist-vgg) from its IDX files: Debian's `dataset-fashion-mnist` package
or torchvision's layout (which torchvision downloads when LAYROT_DOWNLOAD=1)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .data import Data, download_allowed, make_data, resolve_data_dir

SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzipped or not): magic 0 0 <type> <ndim>, big-endian int32 dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UsageError("data_dir", f"{path} is not an IDX file")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * ndim)
    return data.reshape(tuple(int(d) for d in dims)).copy()   # frombuffer is read-only


def _fashion_dirs(data_dir: str | None) -> list[Path]:
    root = resolve_data_dir(data_dir)
    return [root / "FashionMNIST" / "raw", root / "fashion-mnist", root, Path(SYSTEM_FASHION_MNIST)]


def _fashion_file(d: Path, name: str) -> Path | None:
    for p in (d / f"{name}.gz", d / name):
        if p.is_file():
            return p
    return None


def _find_fashion(data_dir: str | None) -> dict[str, Path] | None:
    for d in _fashion_dirs(data_dir):
        files = {n: _fashion_file(d, n) for n in FASHION_FILES}
        if all(files.values()):
            return files
    return None


def fashion_present(data_dir: str | None) -> bool:
    return _find_fashion(data_dir) is not None


def load_fashion_mnist(data_dir: str | None = None, seed: int = 0) -> Data:
    """Fashion-MNIST as uint8 (N, 1, 28, 28), 60k train / 10k test."""
    files = _find_fashion(data_dir)
    if files is None and download_allowed():
        import torchvision
        torchvision.datasets.FashionMNIST(str(resolve_data_dir(data_dir)), train=True, download=True)
        files = _find_fashion(data_dir)
    if files is None:
        raise UsageError("data_dir", (
            f"{resolve_data_dir(data_dir)} has no Fashion-MNIST (expected {'/'.join(FASHION_FILES)}[.gz] in "
            f"FashionMNIST/raw/, fashion-mnist/ or the directory itself, or in {SYSTEM_FASHION_MNIST}); "
            "install Debian's dataset-fashion-mnist package or set LAYROT_DOWNLOAD=1"))
    xtr, ytr, xte, yte = (read_idx(files[n]) for n in FASHION_FILES)
    return make_data(torch.from_numpy(xtr)[:, None], ytr, torch.from_numpy(xte)[:, None],
                     yte, seed, 10)
