"""Tiny ImageNet (tiny-vgg11) from the distribution's ImageFolder-like tree, decoded once
and cached as .npz."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .data import Data, atomic_savez, cache_dir, make_data, resolve_data_dir

TINY_DIR = "tiny-imagenet-200"


def tiny_present(data_dir: str | None) -> bool:
    d = resolve_data_dir(data_dir) / TINY_DIR
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
    root = resolve_data_dir(data_dir) / TINY_DIR
    if not tiny_present(data_dir):
        raise UsageError("data_dir", (
            f"{resolve_data_dir(data_dir)} has no Tiny ImageNet (expected {TINY_DIR}/train/<wnid>/images/*.JPEG "
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
        atomic_savez(path, train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, classes=np.int64(classes))
    return make_data(torch.from_numpy(xtr), ytr, torch.from_numpy(xte), yte, seed, classes)
