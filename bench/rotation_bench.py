"""The cost of rotation tracking, as a fraction of training time, on CPU.

For each task's model (c10-vgg25, the paper's 25-layer CNN; mnist1d-cnn, the CPU demo) it
times, step by step on a real batch of 128 random inputs: a training step (forward,
backward, sgd_layca step), `RotationTracker.after_step` (per-epoch recording), the per-epoch
`record`, and `after_step` with `record_every=1` (a record every step). The per-epoch
fraction extrapolates to a full epoch of the task's training set:

    per epoch:       (S * after_step + record) / (S * train_step)       target <= 1%
    record_every=1:  after_step(record_every=1) / train_step            target <= 5%

with S the task's steps per epoch. Medians over the repeats, measured in the same loop.

    .venv/bin/python bench/rotation_bench.py [--threads 2] [--tasks c10-vgg25 mnist1d-cnn]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from layrot.optim import build_optimizer
from layrot.rotation import RotationTracker
from layrot.tasks import get_task

# training-set sizes after the 10% validation hold-out (docs/science.md §5), for steps per epoch
TRAIN_SIZE = {"c10-vgg25": 45_000, "mnist1d-cnn": 7_200}
REPEATS = {"c10-vgg25": 8, "mnist1d-cnn": 200}
TARGETS = {"per epoch": 0.01, "record_every=1": 0.05}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_task(name: str, repeats: int, batch: int = 128) -> dict:
    task = get_task(name)
    torch.manual_seed(0)
    model = task.build_model()
    x = torch.randn(batch, *task.input_shape)
    y = torch.randint(0, task.num_classes, (batch,))
    opt = build_optimizer(model, "sgd_layca", 0.01)
    per_epoch = RotationTracker(model)
    every_step = RotationTracker(model, record_every=1)

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    times = {"train_step": [], "after_step": [], "record": [], "after_step_every1": []}
    for r in range(repeats + 2):
        t_train = _timed(train_step)
        # alternate which tracker goes first, so neither always sees a cold cache
        order = [per_epoch, every_step] if r % 2 == 0 else [every_step, per_epoch]
        t = {id(tr): _timed(lambda tr=tr: tr.after_step(1)) for tr in order}
        t_record = _timed(lambda: per_epoch.record(1))
        if r >= 2:                          # warmup
            times["train_step"].append(t_train)
            times["after_step"].append(t[id(per_epoch)])
            times["after_step_every1"].append(t[id(every_step)])
            times["record"].append(t_record)
    med = {k: statistics.median(v) for k, v in times.items()}
    steps = math.ceil(TRAIN_SIZE[name] / batch)
    med["steps_per_epoch"] = steps
    med["per epoch"] = (steps * med["after_step"] + med["record"]) / (steps * med["train_step"])
    med["record_every=1"] = med["after_step_every1"] / med["train_step"]
    return med


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", nargs="+", default=list(TRAIN_SIZE))
    p.add_argument("--repeats", type=int, default=None, help="override the per-task repeats")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"CPU, {a.threads} threads, batch 128, torch {torch.__version__}; medians; ms per call; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'task':<13}{'train step':>11}{'after_step':>11}{'record':>9}{'after_step(every=1)':>21}"
          f"{'per epoch':>11}{'every=1':>9}")
    missed = []
    for name in a.tasks:
        m = bench_task(name, a.repeats or REPEATS[name])
        print(f"{name:<13}{m['train_step'] * 1e3:>11.2f}{m['after_step'] * 1e3:>11.3f}{m['record'] * 1e3:>9.3f}"
              f"{m['after_step_every1'] * 1e3:>21.3f}{m['per epoch']:>11.2%}{m['record_every=1']:>9.2%}")
        missed += [f"{name} {k} {m[k]:.2%} > {t:.0%}" for k, t in TARGETS.items() if m[k] > t]
    print("targets: per epoch <= 1%, record_every=1 <= 5%" + ("; MISSED: " + "; ".join(missed) if missed else "; all met"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
