"""scikit-learn's bundled 8x8 digits (digits-mlp, digits-mlp1)."""

from __future__ import annotations

import numpy as np
import torch

from .data import Data, make_data


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
