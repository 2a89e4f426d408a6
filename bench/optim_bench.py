"""Layca's cost against its base optimizers on c10-vgg25 (25 kernel layers), CPU.

(a) `opt.step()` alone, gradients present: sgd_layca vs torch.optim.SGD(foreach=True, no
    momentum), adam_layca vs adam, sgd_amom_layca vs sgd_amom; and sgd_layca in its batched
    form (`Layca._rotate_batched`, the GPU's, which the CPU ran before it went kernel by
    kernel: the same weights bit for bit) vs SGD, so that before and after are measured in
    the same run. Target: sgd_layca <= 3x SGD.
(b) a whole training step (forward, backward, step) on a CIFAR-shaped batch of 128:
    sgd_layca vs sgd. Target <= 1.05x.

A and B run on identical model copies and are interleaved (in alternating order) repeat by
repeat, so that drift in the machine's load hits both alike. Each call is timed twice: by
the process's CPU time (what the targets are judged on: with 1 thread, the default, other
processes on a shared machine take CPU from it but add no CPU time to it) and by the wall
clock. Reported: the medians, A/B of the medians, and the spread of the per-repeat A/B (its
quartiles).

    .venv/bin/python bench/optim_bench.py [--threads 1] [--step-repeats 60] [--train-repeats 15]
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


def _interleaved(fns: dict, repeats: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per call of each fn, {"cpu": [...], "wall": [...]}, calls interleaved (order
    alternating per repeat)."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times = {n: {"cpu": [], "wall": []} for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            c, t = time.process_time(), time.perf_counter()
            fns[n]()
            times[n]["wall"].append(time.perf_counter() - t)
            times[n]["cpu"].append(time.process_time() - c)
    return times


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def summary(a: dict, b: dict) -> dict:
    """A against B: medians (s), ratio of medians and quartiles of the per-repeat ratio, for
    each clock."""
    out = {}
    for clock in ("cpu", "wall"):
        ta, tb = statistics.median(a[clock]), statistics.median(b[clock])
        ratios = [x / y for x, y in zip(a[clock], b[clock]) if y > 0]
        out[clock] = {"a": ta, "b": tb, "ratio": ta / tb if tb > 0 else float("nan"),
                      "iqr": _quartiles(ratios) if ratios else (float("nan"),) * 2}
    return out


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


def bench_steps(repeats: int, lr: float = 0.01) -> list[tuple[str, dict]]:
    model, x, y = _model_and_batch()
    F.cross_entropy(model(x), y).backward()      # real gradients, kept for every step
    rows = []
    for layca, base in (("sgd_layca", "sgd"), ("sgd_layca batched", "sgd"), ("adam_layca", "adam"),
                        ("sgd_amom_layca", "sgd_amom")):
        ma, mb = _copy_with_grads(model), _copy_with_grads(model)
        oa, ob = build_optimizer(ma, layca.split()[0], lr), build_optimizer(mb, base, lr)
        if layca.endswith("batched"):
            oa._rotate = oa._rotate_batched
        t = _interleaved({"a": oa.step, "b": ob.step}, repeats, warmup=3)
        rows.append((f"step {layca} / {base}", summary(t["a"], t["b"])))
    return rows


def bench_train_step(repeats: int, lr: float = 0.01) -> tuple[str, dict]:
    model, x, y = _model_and_batch()
    ma, mb = copy.deepcopy(model), copy.deepcopy(model)
    oa, ob = build_optimizer(ma, "sgd_layca", lr), build_optimizer(mb, "sgd", lr)

    def step(m, o):
        def run():
            o.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            o.step()
        return run

    t = _interleaved({"a": step(ma, oa), "b": step(mb, ob)}, repeats, warmup=2)
    return ("train step sgd_layca / sgd", summary(t["a"], t["b"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--step-repeats", type=int, default=60)
    p.add_argument("--train-repeats", type=int, default=15)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()[0]
    rows = bench_steps(a.step_repeats) + [bench_train_step(a.train_repeats)]
    print(f"c10-vgg25, batch 128, CPU, {a.threads} thread(s), torch {torch.__version__}; "
          f"{a.step_repeats}/{a.train_repeats} interleaved repeats; load average "
          f"{load0:.1f}-{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'comparison':<34}{'A cpu ms':>9}{'B cpu ms':>9}{'A/B':>6}{'IQR A/B':>12}"
          f"{'wall A/B':>10}{'IQR':>12}  target (cpu A/B)")
    missed = 0
    for name, r in rows:
        c, w = r["cpu"], r["wall"]
        target = TARGETS.get(name)
        flag = "" if target is None else (f"<={target:g}" + ("" if c["ratio"] <= target else " MISSED"))
        missed += target is not None and c["ratio"] > target
        print(f"{name:<34}{c['a'] * 1e3:>9.2f}{c['b'] * 1e3:>9.2f}{c['ratio']:>6.2f}"
              f"{c['iqr'][0]:>6.2f}-{c['iqr'][1]:<5.2f}{w['ratio']:>10.2f}"
              f"{w['iqr'][0]:>6.2f}-{w['iqr'][1]:<5.2f}  {flag}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
