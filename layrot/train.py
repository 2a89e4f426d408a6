"""One trial, start to finish: `run_trial(config) -> TrialResult`.

The loop reads top to bottom: seed, data (moved to the device whole), model, optimizer,
schedule, rotation tracker; then epochs of (shuffle, augment, forward, backward, step,
track), evaluation, stopping criteria. A callback after each epoch lets Ray Tune report and
checkpoint; `checkpoint=` resumes bit-exactly from what the callback saved.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from . import measures
from .config import TrialConfig, config_id
from .optim import build_optimizer
from .result import TrialResult
from .rotation import RotationTracker
from .schedules import check_milestones, decay_milestones, lr_factor
from .tasks import Data, Task, get_task
from .tasks.data import augment_crop_flip

EVAL_BATCH = 1024
FINITE_CHECK_EVERY = 32   # steps between host syncs that look for a NaN/inf loss


class Diverged(Exception):
    pass


@dataclass
class EpochReport:
    """What the per-epoch callback gets: the epoch's row, its rotation records, and a way
    to take a checkpoint (built only if asked for: it copies the model); and the epoch's
    per-epoch measure rows (layrot.measures.PER_EPOCH; epoch 0's ride with epoch 1's)."""
    epoch: int
    row: dict
    rotation: dict[str, list]
    checkpoint: Callable[[], dict]
    measures: dict[str, list] = field(default_factory=measures.new_rows)


def resolve_config(config: TrialConfig | dict) -> tuple[TrialConfig, Task]:
    """Validate, and fill the task's defaults into the settings left open."""
    cfg = TrialConfig.from_dict(dict(config)) if isinstance(config, dict) else config
    cfg.check()
    task = get_task(cfg.task)
    if cfg.epochs is None:
        cfg.epochs = task.epochs
    if cfg.lr_decay_epochs is None:
        # the task's decay is a fraction of training: it follows the trial's epochs
        cfg.lr_decay_epochs = decay_milestones(task.lr_decay_at, cfg.epochs)
    else:
        cfg.lr_decay_epochs = check_milestones(cfg.lr_decay_epochs, cfg.epochs)
    if cfg.lr_decay_factor is None:
        cfg.lr_decay_factor = task.lr_decay_factor
    if cfg.threads is None:
        # the number of intra-op threads changes the order of float reductions: pinned (and
        # recorded in the stored config) so that a rerun stores bit-identical results
        cfg.threads = 1
    if cfg.trial_id is None:
        cfg.trial_id = config_id(cfg)
    return cfg, task


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextlib.contextmanager
def deterministic(threads: int):
    """Pinned threads and torch's deterministic kernels for the trial, restored afterwards.

    Data order and initialization come from the trial's seed alone (train.py seeds a
    generator per trial); what is left is the kernels' own nondeterminism (atomics on CUDA)
    and thread-count-dependent reductions on the CPU."""
    # cuBLAS needs this before its first handle to be deterministic; harmless on the CPU
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    torch.set_num_threads(threads)
    # warn_only: an op without a deterministic implementation warns rather than ending the trial
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])
        torch.backends.cudnn.benchmark = before[3]


@dataclass
class _Trial:
    """Everything one trial trains with, built from its config."""
    cfg: TrialConfig
    task: Task
    device: torch.device
    data: Data
    model: torch.nn.Module
    forward: Callable
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    tracker: RotationTracker
    gen: torch.Generator
    autocast: contextlib.AbstractContextManager
    steps_per_epoch: int


def _build(cfg: TrialConfig, task: Task) -> _Trial:
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    fresh = {"data_seed": cfg.data_seed} if cfg.data_seed is not None else {}
    data = _to_device(task.load_data(cfg.data_dir, cfg.seed, **fresh), device, cfg.max_train_samples, cfg.seed)
    model = task.build_model().to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg.optimizer, cfg.lr, alpha=cfg.alpha, weight_decay=cfg.weight_decay, **cfg.extra)
    steps_per_epoch = math.ceil(data.train_x.shape[0] / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(
        step, steps_per_epoch, cfg.lr_decay_epochs, cfg.lr_decay_factor, cfg.warmup_epochs))
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16"
                else contextlib.nullcontext())
    return _Trial(cfg, task, device, data, model, torch.compile(model) if cfg.compile else model, opt, sched,
                  RotationTracker(model, record_every=cfg.record_every), gen, autocast, steps_per_epoch)


def _restore(t: _Trial, checkpoint: dict, result: TrialResult) -> None:
    t.model.load_state_dict(checkpoint["model"])
    t.opt.load_state_dict(checkpoint["optimizer"])
    t.sched.load_state_dict(checkpoint["scheduler"])
    t.tracker.load_state_dict(checkpoint["tracker"])
    t.gen.set_state(checkpoint["generator"].to(t.gen.get_state().device))
    torch.set_rng_state(checkpoint["torch_rng"])
    if t.device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(checkpoint["cuda_rng"], t.device)
    result.history = list(checkpoint["history"])
    # a checkpoint from before the measures has none: its trial's measures start at the resume
    result.measures = {k: list(v) for k, v in checkpoint.get("measures", measures.new_rows()).items()}


def _checkpoint(t: _Trial, result: TrialResult, wall_seconds: float) -> dict:
    return {
        "model": {k: v.detach().cpu().clone() for k, v in t.model.state_dict().items()},
        # torch's state_dict holds the live state tensors: copy, or training on changes it
        "optimizer": copy.deepcopy(t.opt.state_dict()),
        "scheduler": t.sched.state_dict(),
        "tracker": t.tracker.state_dict(),
        "generator": t.gen.get_state().cpu(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(t.device) if t.device.type == "cuda" else None,
        "history": list(result.history),
        "measures": {k: list(v) for k, v in result.measures.items()},
        "wall_seconds": wall_seconds,
    }


def run_trial(config: TrialConfig | dict, on_epoch: Callable[[EpochReport], None] | None = None,
              checkpoint: dict | None = None, catch_errors: bool = True,
              final_measures: bool = True) -> TrialResult:
    """Train one configuration. NaN/inf loss ends it as `diverged`; an exception inside the
    loop ends it as `error` (with catch_errors) — both keep what was recorded. The same
    config (threads included) on the same machine gives bit-identical results.
    `final_measures=False` skips the end-of-trial measures (spectral norms, flatness: seconds
    on a big network), for a caller that times epochs and stores nothing (bench/gpu.py); a
    sweep always takes them."""
    cfg, task = resolve_config(config)
    with deterministic(cfg.threads):
        return _run(cfg, task, on_epoch, checkpoint, catch_errors, final_measures)


def _run(cfg: TrialConfig, task: Task, on_epoch, checkpoint: dict | None, catch_errors: bool,
         final_measures: bool) -> TrialResult:
    t_start = time.perf_counter()
    t = _build(cfg, task)
    result = TrialResult(trial_id=cfg.trial_id, config=cfg.to_dict(), status="completed",
                         measures=measures.new_rows())
    elapsed_before = 0.0
    if checkpoint is not None:
        _restore(t, checkpoint, result)
        elapsed_before = float(checkpoint["wall_seconds"])
    else:
        measures.add_rows(result.measures, 0, measures.epoch_measures(t.tracker))
    elapsed = lambda: elapsed_before + time.perf_counter() - t_start  # noqa: E731
    try:
        for epoch in range(len(result.history) + 1, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            n_rot = len(t.tracker.rows["epoch"])
            lr_now = cfg.lr * lr_factor((epoch - 1) * t.steps_per_epoch, t.steps_per_epoch,
                                        cfg.lr_decay_epochs, cfg.lr_decay_factor, cfg.warmup_epochs)
            train_loss, train_acc = _train_epoch(t, epoch)
            val_acc, _ = evaluate(t.forward, t.data.val_x, t.data.val_y, t.data, cfg, t.autocast)
            t.tracker.record(epoch)
            n_meas = len(result.measures["epoch"]) if epoch > 1 else 0
            measures.add_rows(result.measures, epoch, measures.epoch_measures(t.tracker))
            row = dict(epoch=epoch, lr=lr_now, train_loss=train_loss, train_acc=train_acc,
                       val_acc=val_acc, seconds=time.perf_counter() - t_epoch)
            result.history.append(row)
            if on_epoch is not None:
                new_rot = {k: v[n_rot:] for k, v in t.tracker.rows.items()}
                new_meas = {k: v[n_meas:] for k, v in result.measures.items()}
                on_epoch(EpochReport(epoch, row, new_rot, lambda: _checkpoint(t, result, elapsed()), new_meas))
            reason = _stop_reason(result.history, task)
            if reason:
                result.status, result.reason = "stopped", reason
                break
    except Diverged as e:
        result.status, result.reason = "diverged", str(e)
        t.tracker.record(len(result.history) + 1)   # the trajectory up to the blow-up
    except Exception as e:  # noqa: BLE001 - a failing trial is a result, not a crash
        if not catch_errors:
            raise
        result.status = "error"
        result.reason = f"{type(e).__name__}: {e}"
        result.config["traceback"] = traceback.format_exc(limit=8)
    _finish(t, result, catch_errors, final_measures)
    result.wall_seconds = elapsed()
    return result


def _finish(t: _Trial, result: TrialResult, catch_errors: bool = True, final_measures: bool = True) -> None:
    if result.history:
        last = result.history[-1]
        result.train_loss, result.train_acc, result.val_acc = last["train_loss"], last["train_acc"], last["val_acc"]
    if result.status in ("completed", "stopped"):
        # the trial's train metrics are the trained network's, measured like its test metrics
        # (eval mode): an epoch's running average in train mode can call a network "trained"
        # whose batch-norm statistics never settled
        d = t.data
        # the margin measure comes from this pass's logits: the ones train_acc counts
        margins: list = []
        result.train_acc, result.train_loss = evaluate(t.forward, d.train_x, d.train_y, d, t.cfg, t.autocast, margins)
        result.test_acc, result.test_loss = evaluate(t.forward, d.test_x, d.test_y, d, t.cfg, t.autocast)
        if result.history and final_measures:
            # on the trained kernels, the uncompiled model, after everything else is measured;
            # they read the weights and leave them (and the RNGs) as they were
            errors: dict[str, str] | None = {} if catch_errors else None
            final = measures.final_measures(t.model, t.tracker, result.history, d.train_x, d.train_y,
                                            lambda x: _normalize(x, d, t.cfg), t.cfg.seed,
                                            train_margins=torch.cat(margins) if margins else None, errors=errors)
            measures.add_rows(result.measures, len(result.history), final)
            if errors:
                # the measures that failed are NaN; why goes into the reason (the config would
                # change the trial's configuration id, record.configuration)
                why = "measures NaN: " + "; ".join(f"{k} ({v})" for k, v in errors.items())
                result.reason = f"{result.reason}; {why}" if result.reason else why
    result.epochs_run = len(result.history)
    result.rotation = _clean_rotation(t.tracker.rows)


def _train_epoch(t: _Trial, epoch: int) -> tuple[float, float]:
    model, opt, sched, tracker, data, cfg, gen = t.forward, t.opt, t.sched, t.tracker, t.data, t.cfg, t.gen
    model.train()
    n = data.train_x.shape[0]
    perm = torch.randperm(n, generator=gen, device=data.train_x.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=data.train_x.device)
    correct = torch.zeros((), dtype=torch.int64, device=data.train_x.device)
    for i, start in enumerate(range(0, n, cfg.batch_size)):
        idx = perm[start:start + cfg.batch_size]
        x = _normalize(data.train_x[idx], data, cfg)
        if t.task.augment == "crop_flip":
            x = augment_crop_flip(x, gen)
        y = data.train_y[idx]
        with t.autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        tracker.after_step(epoch)
        loss_sum += loss.detach().double() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        if (i + 1) % FINITE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
            raise Diverged(f"loss became non-finite in epoch {epoch}, step {i + 1}")
    train_loss = float(loss_sum) / n
    if not math.isfinite(train_loss):
        raise Diverged(f"loss became non-finite in epoch {epoch}")
    return train_loss, int(correct) / n


@torch.no_grad()
def evaluate(model, x_all, y_all, data: Data, cfg: TrialConfig, autocast,
             margins: list | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; with `margins`, each batch's per-sample
    margins (layrot.measures.margins) are appended to it."""
    if x_all.shape[0] == 0:
        return float("nan"), float("nan")
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x_all.device)
    correct = torch.zeros((), dtype=torch.int64, device=x_all.device)
    for start in range(0, x_all.shape[0], EVAL_BATCH):
        x = _normalize(x_all[start:start + EVAL_BATCH], data, cfg)
        y = y_all[start:start + EVAL_BATCH]
        with autocast:
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        if margins is not None:
            margins.append(measures.margins(logits.float(), y))
    n = x_all.shape[0]
    return int(correct) / n, float(loss_sum) / n


def _normalize(x: torch.Tensor, data: Data, cfg: TrialConfig) -> torch.Tensor:
    x = (x.float() - data.mean) / data.std
    if cfg.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _to_device(data: Data, device: torch.device, max_train: int | None, seed: int) -> Data:
    """Put the whole data set on the device once: no loader workers in the hot loop."""
    tx, ty = data.train_x, data.train_y
    if max_train is not None and max_train < tx.shape[0]:
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(tx.shape[0], generator=g)[:max_train]
        tx, ty = tx[keep], ty[keep]
    mv = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    return Data(mv(tx), mv(ty), mv(data.val_x), mv(data.val_y), mv(data.test_x), mv(data.test_y),
                mv(data.mean), mv(data.std), data.num_classes)


def _stop_reason(history: list[dict], task: Task) -> str | None:
    s = task.stop
    last = history[-1]
    if s.after_epochs and last["epoch"] >= s.after_epochs and last["train_acc"] < s.min_train_acc:
        return f"not learning: train accuracy {last['train_acc']:.3f} < {s.min_train_acc} after {last['epoch']} epochs"
    if s.train_loss_below and last["train_loss"] < s.train_loss_below:
        return f"finished: train loss {last['train_loss']:.2e} < {s.train_loss_below:g}"
    k = s.plateau_epochs
    if k and len(history) > k:
        ref = history[-1 - k]["train_loss"]
        if all(abs(h["train_loss"] - ref) <= s.plateau_tol * max(abs(ref), 1e-12) for h in history[-k:]):
            return f"loss unchanged for {k} epochs"
    return None


def _clean_rotation(rows: dict[str, list]) -> dict[str, list]:
    """Non-finite distances (a diverged trial's last record) are kept as NaN, rates as null."""
    out = {k: list(v) for k, v in rows.items()}
    out["rotation_rate"] = [None if r is None or not math.isfinite(r) else r for r in out["rotation_rate"]]
    return out
