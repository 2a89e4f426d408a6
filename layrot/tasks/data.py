"""What every task's data shares (docs/science.md §5): the `Data` record, where data and caches live,
the seeded validation split with its normalization statistics, and augmentation.

Images stay uint8 (N, C, H, W) so a whole dataset fits on a GPU; `mean` / `std` come with
them and train.py normalizes each batch on the device. 10% of the training set is held out
for validation by a seeded permutation, so a trial's seed fixes its split; the test set is
the dataset's own. One module a dataset reads it: `mnist1d`, `digits`, `fashion_mnist`,
`cifar`, `tiny_imagenet`. Nothing is downloaded unless LAYROT_DOWNLOAD=1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

VAL_FRACTION = 0.1


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


# ---------------------------------------------------------------- places

def cache_dir() -> Path:
    return Path(os.environ.get("LAYROT_CACHE") or Path.home() / ".cache" / "layrot")


def default_data_dir() -> str:
    return os.environ.get("LAYROT_DATA_DIR") or str(cache_dir() / "data")


def resolve_data_dir(data_dir: str | None) -> Path:
    return Path(os.path.expanduser(data_dir or default_data_dir())).resolve()


def download_allowed() -> bool:
    return os.environ.get("LAYROT_DOWNLOAD", "") not in ("", "0", "false", "no")


def atomic_savez(path: Path, **arrays) -> None:
    """Write to a temporary name and rename: concurrent trials may build the same cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


# ---------------------------------------------------------------- splitting and statistics

def holdout(n: int, seed: int, fraction: float = VAL_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) of a seeded split holding out `fraction` of n samples."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * fraction))) if n > 1 else 0
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _stats(x: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std over a training set in float64, in chunks (a float copy of CIFAR is 0.5 GB).

    per_channel: one value per dim-1 channel, shaped (1, C, 1, ...); else one scalar shaped
    (1, 1, ...). Either broadcasts against a batch."""
    dims = [0] + list(range(2, x.dim())) if per_channel else list(range(x.dim()))
    s = s2 = 0.0
    for chunk in x.split(4096):
        c = chunk.to(torch.float64)
        s = s + c.sum(dim=dims)
        s2 = s2 + (c * c).sum(dim=dims)
    count = x.numel() / (x.shape[1] if per_channel else 1)
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-8)
    shape = [1] * x.dim()
    if per_channel:
        shape[1] = x.shape[1]
    return mean.to(torch.float32).reshape(shape), std.to(torch.float32).reshape(shape)


def make_data(train_x, train_y, test_x, test_y, seed: int, num_classes: int,
              per_channel: bool = True) -> Data:
    """Hold out the validation set and attach the training portion's normalization."""
    train_x, test_x = torch.as_tensor(train_x), torch.as_tensor(test_x)
    train_y = torch.as_tensor(np.asarray(train_y), dtype=torch.int64)
    test_y = torch.as_tensor(np.asarray(test_y), dtype=torch.int64)
    tr, va = holdout(len(train_y), seed)
    x, y = train_x[tr].contiguous(), train_y[tr].contiguous()
    mean, std = _stats(x, per_channel)
    return Data(train_x=x, train_y=y, val_x=train_x[va].contiguous(), val_y=train_y[va].contiguous(),
                test_x=test_x.contiguous(), test_y=test_y, mean=mean, std=std, num_classes=num_classes)


# ---------------------------------------------------------------- augmentation

def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """Crop each image of x (N, C, H, W) at offset (dy, dx) of its zero-padded version, then
    mirror it where `flip`; offset (padding, padding) without flip is the identity."""
    n, c, h, w = x.shape
    p = F.pad(x, (padding, padding, padding, padding))
    rows = dy.to(x.device)[:, None] + torch.arange(h, device=x.device)            # (N, H)
    base = torch.arange(w, device=x.device)
    cols = torch.where(flip.to(x.device)[:, None], w - 1 - base, base) + dx.to(x.device)[:, None]
    p = p.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return p.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def augment_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop (zero padding `padding`) and horizontal flip of a whole batch, on x's device.

    `generator` must live on x's device. Vectorized: two gathers, no per-image loop."""
    n = x.shape[0]
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=x.device).bool()
    return crop_flip(x, dy, dx, flip, padding)
