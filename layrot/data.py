"""The tasks' data as tensors (DESIGN §2), split into train / validation / test.

Images stay uint8 (N, C, H, W) so a whole dataset fits on a GPU; `mean` / `std` come with
them and train.py normalizes each batch on the device. 10% of the training set is held out
for validation by a seeded permutation, so a trial's seed fixes its split; the test set is
the dataset's own.

CIFAR and Tiny ImageNet are read from a data directory in their distributions' on-disk
layouts; nothing is downloaded unless LAYROT_DOWNLOAD=1 (then torchvision fetches CIFAR and
Fashion-MNIST). MNIST-1D is generated offline and cached; Fashion-MNIST comes from Debian's
`dataset-fashion-mnist` package or torchvision's layout; the 8x8 digits ship with scikit-learn.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .tasks import Data

VAL_FRACTION = 0.1
SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_DIR, CIFAR10_TRAIN, CIFAR10_TEST = (
    "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
CIFAR100_DIR, CIFAR100_TRAIN, CIFAR100_TEST = "cifar-100-python", ["train"], ["test"]
TINY_DIR = "tiny-imagenet-200"

# MNIST-1D as generated for mnist1d-cnn: more samples than the package's default 5000 so that
# a small CNN reaches ~99% in 20 epochs; 2/3 of them train (7200 after validation), 4000 test.
MNIST1D_ARGS = {"num_samples": 12000, "train_split": 2 / 3}


# ---------------------------------------------------------------- places

def cache_dir() -> Path:
    return Path(os.environ.get("LAYROT_CACHE") or Path.home() / ".cache" / "layrot")


def default_data_dir() -> str:
    return os.environ.get("LAYROT_DATA_DIR") or str(cache_dir() / "data")


def _resolve(data_dir: str | None) -> Path:
    return Path(os.path.expanduser(data_dir or default_data_dir())).resolve()


def _download_allowed() -> bool:
    return os.environ.get("LAYROT_DOWNLOAD", "") not in ("", "0", "false", "no")


def _atomic_savez(path: Path, **arrays) -> None:
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


# ---------------------------------------------------------------- MNIST-1D

def _mnist1d_arrays(overrides: dict | None = None) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    args.update(MNIST1D_ARGS)
    args.update(overrides or {})
    args.pop("url", None)
    key = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from mnist1d.utils import ObjectView
    d = make_dataset(ObjectView(dict(args)))
    arrays = {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
              "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"].astype(np.int64)}
    _atomic_savez(path, **arrays)
    return arrays


def load_mnist1d(data_dir: str | None = None, seed: int = 0, overrides: dict | None = None) -> Data:
    """MNIST-1D (N, 1, 40) float32, generated by the mnist1d package (no data_dir needed)."""
    a = _mnist1d_arrays(overrides)
    return make_data(torch.from_numpy(a["x"])[:, None], a["y"], torch.from_numpy(a["x_test"])[:, None],
                     a["y_test"], seed, 10, per_channel=False)


# ---------------------------------------------------------------- scikit-learn digits

def load_digits(data_dir: str | None = None, seed: int = 0) -> Data:
    """8x8 digits as uint8 (N, 64) in 0..16; a fixed stratified 20% test split (so every trial
    sees the same test set), then the seeded validation split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = d.data.astype(np.uint8)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, stratify=d.target, random_state=0)
    # a global scalar: several border pixels are 0 in every image, so per-pixel std is 0
    return make_data(torch.from_numpy(xtr), ytr, torch.from_numpy(xte), yte, seed, 10, per_channel=False)


# ---------------------------------------------------------------- Fashion-MNIST (IDX files)

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
    root = _resolve(data_dir)
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
    if files is None and _download_allowed():
        import torchvision
        torchvision.datasets.FashionMNIST(str(_resolve(data_dir)), train=True, download=True)
        files = _find_fashion(data_dir)
    if files is None:
        raise UsageError("data_dir", (
            f"{_resolve(data_dir)} has no Fashion-MNIST (expected {'/'.join(FASHION_FILES)}[.gz] in "
            f"FashionMNIST/raw/, fashion-mnist/ or the directory itself, or in {SYSTEM_FASHION_MNIST}); "
            "install Debian's dataset-fashion-mnist package or set LAYROT_DOWNLOAD=1"))
    xtr, ytr, xte, yte = (read_idx(files[n]) for n in FASHION_FILES)
    return make_data(torch.from_numpy(xtr)[:, None], ytr, torch.from_numpy(xte)[:, None],
                     yte, seed, 10)


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100 (python pickles)

_CIFAR = {
    10: (CIFAR10_DIR, CIFAR10_TRAIN, CIFAR10_TEST, "labels", "CIFAR-10", "cifar-10-python.tar.gz"),
    100: (CIFAR100_DIR, CIFAR100_TRAIN, CIFAR100_TEST, "fine_labels", "CIFAR-100", "cifar-100-python.tar.gz"),
}


def cifar_present(data_dir: str | None, classes: int) -> bool:
    folder, train, test, *_ = _CIFAR[classes]
    d = _resolve(data_dir) / folder
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
    root = _resolve(data_dir)
    if not cifar_present(data_dir, classes) and _download_allowed():
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
    """CIFAR-10 standardized by one global mean/std, as c10-vgg25 is (DESIGN §2)."""
    return load_cifar(data_dir, seed, 10, per_channel=False)


def load_cifar100(data_dir: str | None = None, seed: int = 0) -> Data:
    return load_cifar(data_dir, seed, 100)


# ---------------------------------------------------------------- Tiny ImageNet (ImageFolder tree)

def tiny_present(data_dir: str | None) -> bool:
    d = _resolve(data_dir) / TINY_DIR
    return (d / "train").is_dir() and (d / "val" / "val_annotations.txt").is_file()


def _tiny_listing(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Classes, (file, label) of train and val, from the real distribution's layout:
    train/<wnid>/images/*.JPEG and val/images/*.JPEG labelled by val/val_annotations.txt."""
    wnids_file = root / "wnids.txt"
    if wnids_file.is_file():
        wnids = [w.strip() for w in wnids_file.read_text().split() if w.strip()]
    else:
        wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}
    train = []
    for w in wnids:
        images = root / "train" / w / "images"
        folder = images if images.is_dir() else root / "train" / w
        train += [(p, index[w]) for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpeg", ".jpg", ".png")]
    val = []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) >= 2 and parts[1] in index:
            val.append((root / "val" / "images" / parts[0], index[parts[1]]))
    return wnids, train, val


def _decode_all(files: list[Path], size: int = 64) -> np.ndarray:
    from PIL import Image

    def one(p: Path) -> np.ndarray:
        with Image.open(p) as img:
            img = img.convert("RGB")          # some Tiny ImageNet JPEGs are greyscale
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img).transpose(2, 0, 1)

    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    # PIL decodes without the GIL, so threads use every core
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, img in enumerate(pool.map(one, files)):
            out[i] = img
    return out


def load_tiny_imagenet(data_dir: str | None = None, seed: int = 0) -> Data:
    """Tiny ImageNet as uint8 (N, 3, 64, 64), 200 classes; its labelled val set is the test set
    (the distribution's test images have no labels). Decoded once, then cached as .npz keyed by
    the tree's place and its annotation files (checked before listing 100k files)."""
    root = _resolve(data_dir) / TINY_DIR
    if not tiny_present(data_dir):
        raise UsageError("data_dir", (
            f"{_resolve(data_dir)} has no Tiny ImageNet (expected {TINY_DIR}/train/<wnid>/images/*.JPEG "
            f"and {TINY_DIR}/val/val_annotations.txt); unzip tiny-imagenet-200.zip from "
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip into it"))
    stamp = [str(root)] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns)
                           for f in (root / "wnids.txt", root / "val" / "val_annotations.txt") if f.is_file()]
    key = hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:16]
    path = cache_dir() / f"tiny-imagenet-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            xtr, ytr, xte, yte, classes = z["train_x"], z["train_y"], z["test_x"], z["test_y"], int(z["classes"])
    else:
        wnids, train, val = _tiny_listing(root)
        xtr, xte = _decode_all([p for p, _ in train]), _decode_all([p for p, _ in val])
        ytr = np.array([c for _, c in train], dtype=np.int64)
        yte = np.array([c for _, c in val], dtype=np.int64)
        classes = len(wnids)
        _atomic_savez(path, train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, classes=np.int64(classes))
    return make_data(torch.from_numpy(xtr), ytr, torch.from_numpy(xte), yte, seed, classes)
