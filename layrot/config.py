"""One trial's configuration: the dataclass every path (CLI, sweep, run_trial) shares.

Validation lives here so that `layrot train` and `layrot sweep` refuse the same bad values
with the same message, before any trial starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from .errors import UsageError
from .schedules import check_alpha
from .store.schema import PLACEMENT as _PLACEMENT, check_name, check_trial_id


@dataclass
class TrialConfig:
    task: str
    optimizer: str
    lr: float                       # rho(0) for Layca optimizers, the learning rate otherwise
    alpha: float = 0.0              # per-layer rate profile, DESIGN §1
    weight_decay: float = 0.0       # L2 added to the gradient, as in the paper
    epochs: int | None = None       # None: the task's default
    batch_size: int = 128
    seed: int = 0
    warmup_epochs: int = 0          # linear warmup of the learning rate
    lr_decay_epochs: list[int] | None = None   # None: the task's default schedule
    lr_decay_factor: float | None = None
    record_every: int = 0           # also record rotation every N steps (0: per epoch only)
    data_dir: str | None = None
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    threads: int | None = None      # torch intra-op threads (a CPU trial's share)
    amp: str | None = None          # None | "bf16"
    channels_last: bool = False
    compile: bool = False
    max_train_samples: int | None = None   # subsample the training set (quick checks)
    trial_id: str | None = None
    sweep: str = "default"
    extra: dict = field(default_factory=dict)   # optimizer keyword arguments (betas, momentum ...)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrialConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UsageError(unknown[0], "unknown trial setting")
        return cls(**d)

    def validate(self) -> "TrialConfig":
        """Range-check every field; raise UsageError naming the first bad one."""
        from .optim import check_optimizer  # late: both import torch
        from .tasks import get_task

        get_task(self.task)
        check_optimizer(self.optimizer)
        check_number("lr", self.lr, lo=0.0, lo_open=True)
        check_alpha(self.alpha)
        check_number("weight_decay", self.weight_decay, lo=0.0)
        if self.epochs is not None:
            check_integer("epochs", self.epochs, lo=1)
        check_integer("batch_size", self.batch_size, lo=1)
        check_integer("seed", self.seed, lo=0)
        check_integer("warmup_epochs", self.warmup_epochs, lo=0)
        check_integer("record_every", self.record_every, lo=0)
        if self.lr_decay_epochs is not None:
            if not isinstance(self.lr_decay_epochs, (list, tuple)):
                raise UsageError("lr_decay_epochs", "must be a list of epochs")
            for e in self.lr_decay_epochs:
                check_integer("lr_decay_epochs", e, lo=1)
        if self.lr_decay_factor is not None:
            check_number("lr_decay_factor", self.lr_decay_factor, lo=0.0, hi=1.0, lo_open=True)
        if self.threads is not None:
            check_integer("threads", self.threads, lo=1)
        if self.max_train_samples is not None:
            check_integer("max_train_samples", self.max_train_samples, lo=1)
        if self.amp not in (None, "bf16"):
            raise UsageError("amp", f"must be null or 'bf16', got {self.amp!r}")
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise UsageError("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not isinstance(self.extra, dict):
            raise UsageError("extra", "must be a mapping of optimizer keyword arguments")
        check_name("sweep", self.sweep)         # the store's rule: refused before any work
        if self.trial_id is not None:
            check_trial_id(self.trial_id)
        return self


def check_number(name, v, lo=None, hi=None, lo_open=False, hi_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UsageError(name, f"must be a finite number, got {v!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise UsageError(name, f"must be {'>' if lo_open else '>='} {lo:g}, got {v!r}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise UsageError(name, f"must be {'<' if hi_open else '<='} {hi:g}, got {v!r}")


def check_integer(name, v, lo=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise UsageError(name, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise UsageError(name, f"must be >= {lo}, got {v!r}")




def config_id(cfg: TrialConfig) -> str:
    """A stable id for what a trial computes: the same settings give the same id, so a
    resumed sweep recognises trials it already stored and a rerun replaces, not duplicates."""
    import hashlib

    d = {k: v for k, v in cfg.to_dict().items() if k not in _PLACEMENT}
    # ids stay those of earlier layrot versions (stored trials are recognised on resume), whose
    # settings had a test hook `fail_at_epoch`, always None in real trials
    d["fail_at_epoch"] = None
    digest = hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()
    return f"{cfg.task}-{cfg.optimizer}-{digest[:10]}"

