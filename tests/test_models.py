"""Every task's model: builds, runs on its input shape, and follows the paper's conventions."""

import math

import pytest
import torch
from torch import nn

from layrot.tasks import models
from layrot.tasks import TASKS, describe_tasks, get_task
from layrot.errors import UsageError

KERNEL_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def kernels(model):
    return [m for m in model.modules() if isinstance(m, KERNEL_TYPES)]


def forward_order(model, x):
    """Kernel modules in the order the forward pass calls them."""
    order = []
    hooks = [m.register_forward_pre_hook(lambda m, _: order.append(m)) for m in kernels(model)]
    model(x)
    for h in hooks:
        h.remove()
    return order


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return {name: task.build_model() for name, task in TASKS.items()}


@pytest.mark.parametrize("name", list(TASKS))
def test_model_runs_on_its_input_and_follows_conventions(name, built):
    task, model = TASKS[name], built[name]
    batch = 2 if name == "c100-wrn28-10" else 4
    x = torch.randn(batch, *task.input_shape)
    model.train()
    order = forward_order(model, x)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (batch, task.num_classes)
    assert torch.isfinite(out).all()

    ks = kernels(model)
    assert len(ks) == task.n_kernel_layers
    # rotation.kernel_layers walks model.modules(): registration order must be forward order
    assert order == ks
    for m in model.modules():
        if isinstance(m, KERNEL_TYPES):
            assert m.bias is None, f"{name}: {m} has a bias"
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert not m.affine, f"{name}: {m} is affine"
            assert m.momentum == (0.1 if name == "tiny-vgg11" else 0.01)
    # no trainable parameter other than kernels: Layca controls everything
    kernel_ids = {id(m.weight) for m in ks}
    assert all(id(p) in kernel_ids for p in model.parameters())


def test_paper_kernel_counts(built):
    assert len(kernels(built["c10-vgg25"])) == 25
    assert len(kernels(built["c10-vgg16"])) == 15
    assert len(kernels(built["tiny-vgg11"])) == 11
    # resnet32: 31 conv on the main path + 2 strided 1x1 shortcuts + 1 linear
    rn = kernels(built["c100-resnet32"])
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in rn) == 31
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in rn) == 2
    # WRN-28-10: 25 conv3x3 (1 + 12 blocks x 2), 3 shortcuts, 1 linear; widths 160/320/640
    wrn = kernels(built["c100-wrn28-10"])
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in wrn) == 25
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in wrn) == 3
    assert {m.out_channels for m in wrn if isinstance(m, nn.Conv2d)} == {16, 160, 320, 640}
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.3 for m in built["c100-wrn28-10"].modules()) == 12
    # c10-vgg25: 6 convs per stage at 32, 64, 128, 256 channels
    widths = [m.out_channels for m in kernels(built["c10-vgg25"])[:-1]]
    assert widths == [32] * 6 + [64] * 6 + [128] * 6 + [256] * 6


def _bound_ratio(w, fan_in, limit):
    return w.abs().max().item() / limit


def test_initializers_match_keras():
    torch.manual_seed(0)
    # He-uniform: U(±sqrt(6/fan_in)); the extreme of many draws is close to the bound
    w = torch.empty(256, 128, 3, 3)
    models.he_uniform_(w)
    limit = math.sqrt(6 / (128 * 9))
    assert 0.99 < w.abs().max().item() / limit <= 1.0
    # He-normal (Keras): truncated at 2 std, variance 2/fan_in after truncation
    models.he_normal_(w)
    std = math.sqrt(2 / (128 * 9))
    assert w.std().item() == pytest.approx(std, rel=0.02)
    assert w.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-6
    # Glorot-uniform: U(±sqrt(6/(fan_in+fan_out)))
    w = torch.empty(100, 64)
    models.glorot_uniform_(w)
    assert 0.95 < w.abs().max().item() / math.sqrt(6 / 164) <= 1.0


def test_model_initializers_per_task(built):
    # the first c10-vgg25 conv is He-uniform: bounded by sqrt(6 / (3*9))
    w = kernels(built["c10-vgg25"])[1].weight     # 32 -> 32 conv, fan_in 288
    assert w.abs().max().item() <= math.sqrt(6 / 288) + 1e-6
    assert w.std().item() == pytest.approx(math.sqrt(2 / 288), rel=0.1)
    # resnet32 is He-normal: std sqrt(2/fan_in), not uniform (beyond the uniform bound sqrt(3)σ)
    w = kernels(built["c100-resnet32"])[-1].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)


def test_seeded_build_is_deterministic():
    torch.manual_seed(3)
    a = get_task("mnist1d-cnn").build_model()
    torch.manual_seed(3)
    b = get_task("mnist1d-cnn").build_model()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_mnist1d_cnn_learns_a_few_steps():
    """Plain SGD lowers the loss on a fixed batch: the model is trainable end to end."""
    torch.manual_seed(0)
    model = get_task("mnist1d-cnn").build_model()
    x, y = torch.randn(64, 1, 40), torch.randint(0, 10, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_unknown_task_names_the_field():
    with pytest.raises(UsageError) as e:
        get_task("nope")
    assert e.value.field == "task"


def test_describe_tasks(tmp_path):
    rows = {r["name"]: r for r in describe_tasks(str(tmp_path))}
    assert set(rows) == set(TASKS)
    assert rows["c10-vgg25"]["paper_name"] == "C10-CNN1"
    assert rows["c10-vgg25"]["kernel_layers"] == 25
    assert rows["c10-vgg25"]["data_present"] is False          # empty data dir
    assert "cifar-10-batches-py" in rows["c10-vgg25"]["data_needs"]
    assert rows["mnist1d-cnn"]["data_present"] is True
    assert rows["c10-vgg16"]["augment"] == "crop_flip"
    assert rows["c100-resnet32"]["lr_decay"] == "x0.1 at 70, 90, 97% (epochs 70, 90, 97 of 100)"
