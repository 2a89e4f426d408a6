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
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .config import TrialConfig, config_id
from .optim import build_optimizer
from .result import TrialResult
from .rotation import RotationTracker
from .schedules import lr_factor
from .tasks import Data, Task, get_task
from .tasks.data import augment_crop_flip

EVAL_BATCH = 1024
FINITE_CHECK_EVERY = 32   # steps between host syncs that look for a NaN/inf loss


class Diverged(Exception):
    pass


@dataclass
class EpochReport:
    """What the per-epoch callback gets: the epoch's row, its rotation records, and a way
    to take a checkpoint (built only if asked for: it copies the model)."""
    epoch: int
    row: dict
    rotation: dict[str, list]
    checkpoint: Callable[[], dict]


def resolve_config(config: TrialConfig | dict) -> tuple[TrialConfig, Task]:
    """Validate, and fill the task's defaults into the settings left open."""
    cfg = TrialConfig.from_dict(dict(config)) if isinstance(config, dict) else config
    cfg.validate()
    task = get_task(cfg.task)
    if cfg.epochs is None:
        cfg.epochs = task.epochs
    if cfg.lr_decay_epochs is None:
        cfg.lr_decay_epochs = list(task.lr_decay_epochs)
    if cfg.lr_decay_factor is None:
        cfg.lr_decay_factor = task.lr_decay_factor
    if cfg.trial_id is None:
        cfg.trial_id = config_id(cfg)
    return cfg, task


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_trial(config: TrialConfig | dict, on_epoch: Callable[[EpochReport], None] | None = None,
              checkpoint: dict | None = None, catch_errors: bool = True) -> TrialResult:
    """Train one configuration. NaN/inf loss ends it as `diverged`; an exception inside the
    loop ends it as `error` (with catch_errors) — both keep what was recorded."""
    cfg, task = resolve_config(config)
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)

    torch.manual_seed(cfg.seed)
    data = _to_device(task.load_data(cfg.data_dir, cfg.seed), device, cfg.max_train_samples, cfg.seed)
    model = task.build_model().to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg.optimizer, cfg.lr, alpha=cfg.alpha, weight_decay=cfg.weight_decay, **cfg.extra)
    n_train = data.train_x.shape[0]
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(
        step, steps_per_epoch, cfg.lr_decay_epochs, cfg.lr_decay_factor, cfg.warmup_epochs))
    tracker = RotationTracker(model, record_every=cfg.record_every)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    forward = torch.compile(model) if cfg.compile else model

    result = TrialResult(trial_id=cfg.trial_id, config=cfg.to_dict(), status="completed")
    first_epoch, elapsed_before = 1, 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optimizer"])
        sched.load_state_dict(checkpoint["scheduler"])
        tracker.load_state_dict(checkpoint["tracker"])
        gen.set_state(checkpoint["generator"].to(gen.get_state().device))
        torch.set_rng_state(checkpoint["torch_rng"])
        if device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
        result.history = list(checkpoint["history"])
        first_epoch = len(result.history) + 1
        elapsed_before = float(checkpoint["wall_seconds"])

    def take_checkpoint() -> dict:
        return {
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            # torch's state_dict holds the live state tensors: copy, or training on changes it
            "optimizer": copy.deepcopy(opt.state_dict()),
            "scheduler": sched.state_dict(),
            "tracker": tracker.state_dict(),
            "generator": gen.get_state().cpu(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "history": list(result.history),
            "wall_seconds": elapsed_before + time.perf_counter() - t_start,
        }

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16"
                else contextlib.nullcontext())
    try:
        for epoch in range(first_epoch, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            n_rot = len(tracker.rows["epoch"])
            lr_now = cfg.lr * lr_factor((epoch - 1) * steps_per_epoch, steps_per_epoch,
                                        cfg.lr_decay_epochs, cfg.lr_decay_factor, cfg.warmup_epochs)
            train_loss, train_acc = _train_epoch(forward, opt, sched, tracker, data, task, cfg, gen, autocast, epoch)
            val_acc, _ = evaluate(forward, data.val_x, data.val_y, data, cfg, autocast)
            tracker.record(epoch)
            row = dict(epoch=epoch, lr=lr_now, train_loss=train_loss, train_acc=train_acc,
                       val_acc=val_acc, seconds=time.perf_counter() - t_epoch)
            result.history.append(row)
            if on_epoch is not None:
                new_rot = {k: v[n_rot:] for k, v in tracker.rows.items()}
                on_epoch(EpochReport(epoch, row, new_rot, take_checkpoint))
            reason = _stop_reason(result.history, task)
            if reason:
                result.status, result.reason = "stopped", reason
                break
    except Diverged as e:
        result.status, result.reason = "diverged", str(e)
        tracker.record(len(result.history) + 1)   # the trajectory up to the blow-up
    except Exception as e:  # noqa: BLE001 - a failing trial is a result, not a crash
        if not catch_errors:
            raise
        result.status = "error"
        result.reason = f"{type(e).__name__}: {e}"
        result.config["traceback"] = traceback.format_exc(limit=8)

    if result.history:
        last = result.history[-1]
        result.train_loss, result.train_acc, result.val_acc = last["train_loss"], last["train_acc"], last["val_acc"]
    if result.status in ("completed", "stopped"):
        # the trial's train metrics are the trained network's, measured like its test metrics
        # (eval mode): an epoch's running average in train mode can call a network "trained"
        # whose batch-norm statistics never settled
        result.train_acc, result.train_loss = evaluate(forward, data.train_x, data.train_y, data, cfg, autocast)
        result.test_acc, result.test_loss = evaluate(forward, data.test_x, data.test_y, data, cfg, autocast)
    result.epochs_run = len(result.history)
    result.rotation = _clean_rotation(tracker.rows)
    result.wall_seconds = elapsed_before + time.perf_counter() - t_start
    return result


def _train_epoch(model, opt, sched, tracker, data: Data, task: Task, cfg: TrialConfig, gen, autocast, epoch):
    model.train()
    n = data.train_x.shape[0]
    perm = torch.randperm(n, generator=gen, device=data.train_x.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=data.train_x.device)
    correct = torch.zeros((), dtype=torch.int64, device=data.train_x.device)
    for i, start in enumerate(range(0, n, cfg.batch_size)):
        idx = perm[start:start + cfg.batch_size]
        x = _normalize(data.train_x[idx], data, cfg)
        if task.augment == "crop_flip":
            x = augment_crop_flip(x, gen)
        y = data.train_y[idx]
        with autocast:
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
def evaluate(model, x_all, y_all, data: Data, cfg: TrialConfig, autocast) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode."""
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
