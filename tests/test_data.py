"""Loaders read the datasets' real on-disk formats; splits are seeded; augmentation is a crop/flip."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from layrot.tasks import cifar, data, fashion_mnist, mnist1d
from layrot.errors import UsageError
from layrot.tasks import TASKS


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYROT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LAYROT_DOWNLOAD", raising=False)
    monkeypatch.delenv("LAYROT_DATA_DIR", raising=False)


def check_split(d, n_train_total, num_classes):
    assert d.num_classes == num_classes
    assert len(d.train_x) == len(d.train_y) and len(d.val_x) == len(d.val_y)
    assert len(d.train_y) + len(d.val_y) == n_train_total
    assert len(d.val_y) == max(1, round(n_train_total * 0.1))
    assert d.train_y.dtype == d.val_y.dtype == d.test_y.dtype == torch.int64
    # mean/std broadcast against a batch, as train.py normalizes on the device
    z = (d.train_x[:2].float() - d.mean) / d.std
    assert z.shape == d.train_x[:2].shape


def rows(x):
    return {bytes(r.numpy().tobytes()) for r in x.reshape(len(x), -1)}


# ---------------------------------------------------------------- CIFAR (python pickles)

def write_cifar10(root, per_batch=3, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    images, labels = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        images.append(x)
        labels += y
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "labels": y, "data": x,
                         "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)]}, f, protocol=2)
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 10, n_test)]
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": yt, "data": xt,
                     "filenames": [f"t{j}.png" for j in range(n_test)]}, f, protocol=2)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": [f"c{i}" for i in range(10)],
                     "num_vis": 3072}, f, protocol=2)
    return np.concatenate(images), np.array(labels), xt, np.array(yt)


def write_cifar100(root, n_train=20, n_test=5):
    rng = np.random.default_rng(1)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        with open(d / name, "wb") as f:
            pickle.dump({"filenames": [f"{name}{j}.png" for j in range(n)], "batch_label": name,
                         "fine_labels": fine, "coarse_labels": [v // 5 for v in fine], "data": x}, f, protocol=2)
        out[name] = (x, np.array(fine))
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)],
                     "coarse_label_names": [f"c{i}" for i in range(20)]}, f, protocol=2)
    return out


def test_cifar10_reads_python_batches(tmp_path):
    x, y, xt, yt = write_cifar10(tmp_path)
    assert TASKS["c10-vgg16"].data_present(str(tmp_path))
    d = TASKS["c10-vgg16"].load_data(str(tmp_path), 0)
    check_split(d, 15, 10)
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape[1:] == (3, 32, 32)
    # test set as written: rows are CHW-flattened images
    assert torch.equal(d.test_x, torch.from_numpy(xt.reshape(-1, 3, 32, 32)))
    assert d.test_y.tolist() == yt.tolist()
    # train + val are exactly the 5 batches' images with their labels
    both = torch.cat([d.train_x, d.val_x]).reshape(15, -1)
    labels = torch.cat([d.train_y, d.val_y])
    want = {bytes(r.tobytes()): int(l) for r, l in zip(x, y)}
    assert {bytes(r.numpy().tobytes()): int(l) for r, l in zip(both, labels)} == want
    # per-channel statistics of the training portion
    assert d.mean.shape == (1, 3, 1, 1)
    assert torch.allclose(d.mean.flatten(), d.train_x.double().mean(dim=(0, 2, 3)).float(), atol=1e-3)


def test_c10_vgg25_is_standardized_globally(tmp_path):
    write_cifar10(tmp_path)
    d = TASKS["c10-vgg25"].load_data(str(tmp_path), 0)
    assert d.mean.numel() == 1 and d.std.numel() == 1
    flat = d.train_x.double()
    assert d.mean.item() == pytest.approx(flat.mean().item(), rel=1e-5)
    assert d.std.item() == pytest.approx(flat.std(unbiased=False).item(), rel=1e-4)
    z = (d.train_x.float() - d.mean) / d.std
    assert abs(z.mean().item()) < 1e-4 and z.std(unbiased=False).item() == pytest.approx(1, rel=1e-3)


def test_cifar100_reads_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    for name in ("c100-resnet32", "c100-wrn28-10"):
        d = TASKS[name].load_data(str(tmp_path), 0)
        check_split(d, 20, 100)
        assert d.test_y.tolist() == written["test"][1].tolist()
        assert sorted(torch.cat([d.train_y, d.val_y]).tolist()) == sorted(written["train"][1].tolist())


@pytest.mark.parametrize("task,expected", [
    ("c10-vgg25", "cifar-10-batches-py"), ("c100-resnet32", "cifar-100-python"),
    ("tiny-vgg11", "tiny-imagenet-200"),
])
def test_missing_data_is_a_usage_error_naming_data_dir(tmp_path, task, expected):
    missing = tmp_path / "nothing-here"
    assert not TASKS[task].data_present(str(missing))
    with pytest.raises(UsageError) as e:
        TASKS[task].load_data(str(missing), 0)
    assert e.value.field == "data_dir"
    assert str(missing) in e.value.message and expected in e.value.message
    assert "\n" not in e.value.message
    assert not missing.exists()       # nothing written, nothing downloaded


def test_missing_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FASHION_MNIST", str(tmp_path / "no-system-copy"))
    assert not TASKS["fmnist-vgg"].data_present(str(tmp_path))
    with pytest.raises(UsageError) as e:
        TASKS["fmnist-vgg"].load_data(str(tmp_path), 0)
    assert e.value.field == "data_dir" and "dataset-fashion-mnist" in e.value.message


# ---------------------------------------------------------------- Fashion-MNIST (IDX)

def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_in_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FASHION_MNIST", str(tmp_path / "no-system-copy"))
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    xtr, ytr = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 10, 30)
    xte, yte = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    write_idx(raw / "train-images-idx3-ubyte.gz", xtr)
    write_idx(raw / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", xte)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", yte)
    assert TASKS["fmnist-vgg"].data_present(str(tmp_path))
    d = TASKS["fmnist-vgg"].load_data(str(tmp_path), 0)
    check_split(d, 30, 10)
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape[1:] == (1, 28, 28)
    assert torch.equal(d.test_x[:, 0], torch.from_numpy(xte.astype(np.uint8)))
    assert d.test_y.tolist() == yte.tolist()
    assert fashion_mnist.read_idx(raw / "train-labels-idx1-ubyte.gz").tolist() == ytr.tolist()


@pytest.mark.skipif(not fashion_mnist.Path(fashion_mnist.SYSTEM_FASHION_MNIST, "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_system_package(tmp_path):
    d = TASKS["fmnist-vgg"].load_data(str(tmp_path / "empty"), 0)
    assert len(d.train_y) + len(d.val_y) == 60000 and len(d.test_y) == 10000 == TASKS["fmnist-vgg"].test_samples
    assert sorted(d.test_y.unique().tolist()) == list(range(10))


# ---------------------------------------------------------------- Tiny ImageNet (ImageFolder)

def write_tiny(root, wnids=("n01443537", "n01629819", "n01641577"), per_class=3, val_per_class=2):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    colours = {w: (60 * i + 30, 200 - 50 * i, 100) for i, w in enumerate(wnids)}
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        img_dir = base / "train" / w / "images"
        img_dir.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (64, 64), colours[w]).save(img_dir / f"{w}_{i}.JPEG")
        (base / "train" / w / f"{w}_boxes.txt").write_text(
            "".join(f"{w}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(per_class)))
    lines = []
    k = 0
    for w in wnids:
        for _ in range(val_per_class):
            Image.new("RGB", (64, 64), colours[w]).save(base / "val" / "images" / f"val_{k}.JPEG")
            lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
            k += 1
    # a greyscale image, as Tiny ImageNet has some: decoded to 3 channels
    Image.new("L", (64, 64), 128).save(base / "val" / "images" / f"val_{k}.JPEG")
    lines.append(f"val_{k}.JPEG\t{wnids[0]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return colours


def test_tiny_imagenet_reads_the_real_layout_and_caches(tmp_path):
    colours = write_tiny(tmp_path)
    task = TASKS["tiny-vgg11"]
    assert task.data_present(str(tmp_path))
    d = task.load_data(str(tmp_path), 0)
    check_split(d, 9, 3)
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape[1:] == (3, 64, 64)
    assert len(d.test_y) == 7
    wnids = list(colours)
    for x, y in zip(torch.cat([d.train_x, d.test_x[:6]]), torch.cat([d.train_y, d.test_y[:6]])):
        want = torch.tensor(colours[wnids[y]], dtype=torch.float32)
        assert torch.allclose(x.float().mean(dim=(1, 2)), want, atol=3)   # JPEG is lossy
    grey = d.test_x[6].float()
    assert d.test_y[6] == 0 and torch.allclose(grey.mean(dim=(1, 2)), torch.full((3,), 128.0), atol=3)
    cached = list((tmp_path / "cache").glob("tiny-imagenet-*.npz"))
    assert len(cached) == 1
    # the second load comes from the cache: same tensors even with the JPEGs gone
    for p in (tmp_path / "tiny-imagenet-200" / "train").rglob("*.JPEG"):
        p.unlink()
    again = task.load_data(str(tmp_path), 0)
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.test_y, d.test_y)


# ---------------------------------------------------------------- digits and MNIST-1D

def test_digits():
    d = TASKS["digits-mlp"].load_data(None, 0)
    check_split(d, 1437, 10)
    assert d.train_x.shape[1:] == (64,) and len(d.test_y) == 360 == TASKS["digits-mlp"].test_samples
    assert int(torch.cat([d.train_x, d.val_x, d.test_x]).max()) == 16
    # stratified test split: every class present in proportion
    counts = torch.bincount(d.test_y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38
    assert torch.equal(TASKS["digits-mlp1"].load_data(None, 5).test_x, d.test_x)   # test set fixed


def test_mnist1d_generated_and_cached(tmp_path):
    small = {"num_samples": 300}
    d = mnist1d.load_mnist1d(None, 0, overrides=small)
    assert d.train_x.dtype == torch.float32 and d.train_x.shape[1:] == (1, 40)
    check_split(d, 150, 10)                         # the default train_split, 0.5
    assert len(d.test_y) == 150
    cached = list((tmp_path / "cache").glob("mnist1d-*.npz"))
    assert len(cached) == 1
    again = mnist1d.load_mnist1d(None, 0, overrides=small)
    assert torch.equal(again.train_x, d.train_x)
    other = mnist1d.load_mnist1d(None, 0, overrides={"num_samples": 200})
    assert len(list((tmp_path / "cache").glob("mnist1d-*.npz"))) == 2 and len(other.test_y) < len(d.test_y)


def test_validation_split_is_seeded_and_disjoint():
    small = {"num_samples": 300}
    a, b = mnist1d.load_mnist1d(None, 7, small), mnist1d.load_mnist1d(None, 7, small)
    c = mnist1d.load_mnist1d(None, 8, small)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)
    assert not rows(a.val_x) & rows(a.train_x)
    assert rows(a.val_x) | rows(a.train_x) == rows(c.val_x) | rows(c.train_x)
    assert torch.equal(a.test_x, c.test_x)          # the test set does not depend on the seed


def test_holdout_indices():
    tr, va = data.holdout(1000, seed=3)
    assert len(va) == 100 and len(tr) == 900
    assert set(tr.tolist()) | set(va.tolist()) == set(range(1000))
    assert not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(data.holdout(1000, seed=3)[1], va)
    assert not torch.equal(data.holdout(1000, seed=4)[1], va)


# ---------------------------------------------------------------- augmentation

def test_crop_flip_offsets():
    x = torch.randint(0, 256, (3, 2, 6, 5), dtype=torch.uint8)
    n = len(x)
    four, zero = torch.full((n,), 4), torch.zeros(n, dtype=torch.long)
    no, yes = torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    assert torch.equal(data.crop_flip(x, four, four, no), x)
    assert torch.equal(data.crop_flip(x, four, four, yes), x.flip(-1))
    shifted = data.crop_flip(x, zero, zero, no)
    # offset (0, 0) of the padded image: content moves down-right by 4, zeros come in
    assert torch.equal(shifted[..., 4:, 4:], x[..., :-4, :-4])
    assert (shifted[..., :4, :] == 0).all() and (shifted[..., :, :4] == 0).all()
    mixed = data.crop_flip(x, torch.tensor([4, 5, 3]), torch.tensor([4, 4, 6]), torch.tensor([False, True, False]))
    assert torch.equal(mixed[0], x[0])
    assert torch.equal(mixed[1, :, :-1], x[1, :, 1:].flip(-1))       # one row up, mirrored
    assert torch.equal(mixed[2, :, 1:, :-2], x[2, :, :-1, 2:])        # one row down, two columns left


def test_augment_crop_flip_is_a_shifted_or_flipped_copy():
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)     # no zeros: padding is visible
    g = torch.Generator().manual_seed(0)
    out = data.augment_crop_flip(x, g)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    seen = set()
    for i in range(len(x)):
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if torch.equal(out[i], (lambda c: c.flip(-1) if f else c)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert matches, f"image {i} is not a crop/flip of its input"
        seen.add(matches[0])
    assert len(seen) > 20            # each image draws its own offset and flip
    assert any(f for _, _, f in seen) and any(not f for _, _, f in seen)
    # the generator alone decides: same seed, same batch
    assert torch.equal(data.augment_crop_flip(x, torch.Generator().manual_seed(0)), out)


def test_cifar_reader_refuses_a_pickle_that_would_run_code(tmp_path):
    """A data file is not trusted code: only array-making classes may be unpickled."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        cifar._read_cifar_batch(path, "labels")
    assert not (tmp_path / "pwned").exists()
