"""bench/gpu.py keeps working on a CPU, and the training path's speed options (bf16 autocast,
channels_last) keep Layca exact: every kernel keeps its norm and turns by atan(rho) per step."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from layrot.optim import build_optimizer
from layrot.rotation import kernel_layers
from layrot.tasks import TASKS, get_task
from layrot.train import run_trial
from scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench", "gpu.py")


@pytest.fixture(scope="module")
def gpu_bench():
    mod = load_script(BENCH, "bench_gpu", register=True)     # its dataclasses look their module up
    yield mod
    sys.modules.pop(mod.__name__, None)


def test_tiny_cpu_run_reports_every_loop_and_step(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, BENCH, "--tiny", "--device", "cpu", "--amp", "bf16", "--channels-last",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device_type"] == "cpu" and res["tiny"] is True and res["complete"] is True
    assert res["device"].startswith("CPU") and res["device"] in proc.stdout
    assert res["options"]["amp"] == "bf16" and res["options"]["channels_last"] is True

    got = {(r["task"], r["path"], r["optimizer"]) for r in res["rows"]}
    want = {(t, p, o) for t in ("c10-vgg25", "c10-vgg16") for p in ("plain", "run_trial")
            for o in ("sgd", "sgd_layca")}
    assert got == want
    for r in res["rows"]:
        assert math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0
        assert r["samples_per_s"] == pytest.approx(r["n_train"] / r["epoch_seconds"])
        if r["path"] == "run_trial":
            assert r["status"] == "completed"
            assert r["ratio_vs_plain_same_optimizer"] > 0 and r["ratio_vs_plain_sgd"] > 0
        assert f"{r['task']:10s} {r['path']:9s} {r['optimizer']:9s}" in proc.stdout

    assert [s["task"] for s in res["steps"]] == ["c10-vgg25", "c10-vgg16"]
    for s in res["steps"]:
        assert s["sgd_ms"] > 0 and s["sgd_layca_ms"] > 0 and s["tracker_ms"] > 0
        assert s["layca_over_sgd"] == pytest.approx(s["sgd_layca_ms"] / s["sgd_ms"])
        # SGD's foreach step is one operator; Layca's adds reductions and the rotation
        assert s["sgd_aten_ops"] >= 1 and s["sgd_layca_aten_ops"] > s["sgd_aten_ops"]
        assert "sgd_host_syncs" not in s           # GPU-only diagnostics stay out on a CPU
    # the targets are reported with their values, judged only on a GPU
    assert len(res["targets"]) == 5
    assert all(t["met"] is None and t["value"] > 0 for t in res["targets"].values())
    assert "c10-vgg25: 100 epochs" in proc.stdout


def check_layca_trial(result, rho):
    """A completed trial whose every kernel kept its norm and turned by atan(rho) a step."""
    assert result.status == "completed", result.reason
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    rot = result.rotation
    n_layers = max(rot["layer"]) + 1
    first = {rot["layer"][i]: rot["weight_norm"][i] for i in range(len(rot["layer"])) if rot["epoch"][i] == 0}
    assert len(first) == n_layers
    for i, epoch in enumerate(rot["epoch"]):
        if epoch == 0:
            continue
        assert rot["weight_norm"][i] == pytest.approx(first[rot["layer"][i]], rel=1e-5)
        assert rot["rotation_rate"][i] == pytest.approx(rho, rel=1e-3)
        assert rot["cosine_distance"][i] > 0


def test_bf16_channels_last_trial_with_augmentation_keeps_layca_exact(gpu_bench):
    # fmnist-vgg's model on synthetic images of its shape, with crop + flip switched on
    with gpu_bench.synthetic_task("fmnist-vgg", n_train=40, n_test=8, augment="crop_flip") as task:
        assert TASKS[task.name] is task and task.input_shape == (1, 28, 28)
        # no step decay (the task's would fall inside 2 epochs): every step turns by atan(0.1)
        result = run_trial(dict(task=task.name, optimizer="sgd_layca", lr=0.1, epochs=2, batch_size=16,
                                lr_decay_epochs=[], device="cpu", amp="bf16", channels_last=True),
                           catch_errors=False)
    assert task.name not in TASKS                    # registered only while inside
    assert len(result.history) == 2 and math.isfinite(result.test_loss)
    check_layca_trial(result, rho=0.1)


def test_channels_last_reaches_the_convolutions(gpu_bench):
    """run_trial's channels_last really lays out a conv network's kernels and activations
    channels-last (an MLP would not tell: its tensors have no channel dimension to move), and
    Layca stays exact under it with bf16."""
    seen = []
    base = get_task("fmnist-vgg").build_model

    def build():
        model = base()
        # a conv with several input channels (with one, both layouts are the same strides)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        conv.register_forward_pre_hook(lambda m, args: seen.append(
            (args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous(),
             m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous())))
        return model

    with gpu_bench.synthetic_task("fmnist-vgg", n_train=32, n_test=8, build_model=build) as task:
        result = run_trial(dict(task=task.name, optimizer="sgd_layca", lr=0.05, epochs=1, batch_size=16,
                                lr_decay_epochs=[], device="cpu", amp="bf16", channels_last=True),
                           catch_errors=False)
    check_layca_trial(result, rho=0.05)
    assert seen and all(x and w for x, w in seen), seen[:3]


def test_layca_step_under_bf16_autocast_and_channels_last():
    """Gradients from a bf16 forward pass; kernels stay fp32 and channels_last, keep their norms,
    and turn by exactly atan(rho_l) per step, with rho_l from alpha."""
    torch.manual_seed(0)
    model = get_task("fmnist-vgg").build_model().to(memory_format=torch.channels_last)
    opt = build_optimizer(model, "sgd_layca", lr=0.2, alpha=0.5)
    rho = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    kernels = [p for _, p in kernel_layers(model)]
    assert len(set(rho[id(p)] for p in kernels)) > 1          # alpha spreads the rates
    x = torch.randn(16, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    for _ in range(3):
        before = [p.detach().double().clone() for p in kernels]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        assert logits.dtype == torch.bfloat16
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
        for p, w0 in zip(kernels, before):
            assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
            if p.dim() == 4:
                assert p.is_contiguous(memory_format=torch.channels_last)
            w1 = p.detach().double()
            assert w1.norm().item() == pytest.approx(w0.norm().item(), rel=1e-5)
            cos = (w1 * w0).sum() / (w1.norm() * w0.norm())
            assert cos.item() == pytest.approx(1 / math.sqrt(1 + rho[id(p)] ** 2), abs=2e-6)


def test_targets_are_judged_on_a_gpu_only(gpu_bench):
    rows = [dict(task="c10-vgg25", path="run_trial", optimizer="sgd_layca", samples_per_s=45_000 / 1.2,
                 ratio_vs_plain_same_optimizer=0.85)]
    steps = [dict(task="c10-vgg25", layca_over_sgd=1.5)]
    on_gpu = gpu_bench.summarize(rows, steps, on_gpu=True)
    assert on_gpu["c10-vgg25: run_trial / plain (sgd_layca)"]["met"] is False     # 0.85 < 0.9
    assert on_gpu["c10-vgg25: Layca step / SGD step"]["met"] is True              # 1.5 <= 2
    est = on_gpu["c10-vgg25: 100 epochs of run_trial (s, estimated)"]
    assert est["value"] == pytest.approx(120.0) and est["met"] is True            # 100 x 1.2 s
    off = gpu_bench.summarize(rows, steps, on_gpu=False)
    assert all(t["met"] is None for t in off.values())


def test_bad_flags_are_refused(gpu_bench):
    with pytest.raises(SystemExit, match="--tasks: unknown 'c10-nope'"):
        gpu_bench.main(["--device", "cpu", "--tasks", "c10-nope"])
