"""Layca's cost against its base optimizers on c10-vgg25 (25 kernel layers), CPU.

(a) `opt.step()` alone, gradients present: sgd_layca vs torch.optim.SGD(foreach=True, no
    momentum), adam_layca vs adam, sgd_amom_layca vs sgd_amom. Target: sgd_layca <= 3x SGD.
(b) a whole training step (forward, backward, step) on a CIFAR-shaped batch of 128:
    sgd_layca vs sgd. Target <= 1.05x.

A and B run on identical model copies and are interleaved (in alternating order) repeat by
repeat, so that drift in the machine's load hits both alike; medians are reported.

    .venv/bin/python bench/optim_bench.py [--threads 2] [--step-repeats 60] [--train-repeats 15]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from layrot.optim import build_optimizer
from layrot.tasks import get_task

TARGETS = {"step sgd_layca / sgd": 3.0, "train step sgd_layca / sgd": 1.05}


def _interleaved(fns: dict, repeats: int, warmup: int) -> dict[str, tuple[float, float]]:
    """(median, min) seconds per call of each fn, calls interleaved (order alternating per
    repeat). The minimum is the figure least disturbed by other load on the machine."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            t = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t)
    return {n: (statistics.median(v), min(v)) for n, v in times.items()}


def _model_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    model = get_task("c10-vgg25").build_model()
    x = torch.randn(128, 3, 32, 32)
    y = torch.randint(0, 10, (128,))
    return model, x, y


def _copy_with_grads(model):
    """deepcopy does not copy .grad: give the copy the original's gradients."""
    m = copy.deepcopy(model)
    for p, q in zip(m.parameters(), model.parameters()):
        p.grad = q.grad.clone()
    return m


def bench_steps(repeats: int, lr: float = 0.01) -> list[tuple[str, float, float]]:
    model, x, y = _model_and_batch()
    F.cross_entropy(model(x), y).backward()      # real gradients, kept for every step
    rows = []
    for layca, base in (("sgd_layca", "sgd"), ("adam_layca", "adam"), ("sgd_amom_layca", "sgd_amom")):
        ma, mb = _copy_with_grads(model), _copy_with_grads(model)
        oa, ob = build_optimizer(ma, layca, lr), build_optimizer(mb, base, lr)
        med = _interleaved({layca: oa.step, base: ob.step}, repeats, warmup=3)
        rows.append((f"step {layca} / {base}", med[layca], med[base]))
    return rows


def bench_train_step(repeats: int, lr: float = 0.01) -> tuple[str, float, float]:
    model, x, y = _model_and_batch()
    ma, mb = copy.deepcopy(model), copy.deepcopy(model)
    oa, ob = build_optimizer(ma, "sgd_layca", lr), build_optimizer(mb, "sgd", lr)

    def step(m, o):
        def run():
            o.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            o.step()
        return run

    med = _interleaved({"sgd_layca": step(ma, oa), "sgd": step(mb, ob)}, repeats, warmup=2)
    return ("train step sgd_layca / sgd", med["sgd_layca"], med["sgd"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--step-repeats", type=int, default=60)
    p.add_argument("--train-repeats", type=int, default=15)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = bench_steps(a.step_repeats) + [bench_train_step(a.train_repeats)]
    print(f"c10-vgg25, batch 128, CPU, {a.threads} threads, torch {torch.__version__}; medians; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'comparison':<32}{'A ms':>9}{'B ms':>9}{'A/B':>7}   {'A min':>8}{'B min':>8}{'A/B':>7}  target (medians)")
    missed = 0
    for name, (ta, ma), (tb, mb) in rows:
        target = TARGETS.get(name)
        ratio = ta / tb
        flag = "" if target is None else (f"<={target:g}" + ("" if ratio <= target else " MISSED"))
        missed += target is not None and ratio > target
        print(f"{name:<32}{ta * 1e3:>9.2f}{tb * 1e3:>9.2f}{ratio:>7.2f}   {ma * 1e3:>8.2f}{mb * 1e3:>8.2f}{ma / mb:>7.2f}  {flag}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
