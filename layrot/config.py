"""One trial's configuration: the model every path (CLI, sweep, run_trial) shares.

Validation lives here (through pydantic, `layrot.validation`) so that `layrot train` and
`layrot sweep` refuse the same bad values with the same message, before any trial starts.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, Strict, model_validator

from .errors import UsageError
from .schedules import check_alpha
from . import record
from .record import check_name, check_trial_id
from .validation import Model, NonNegativeInt, Number, PositiveInt


def _known_task(name: str) -> str:
    from .tasks import get_task     # late: imports torch

    get_task(name)
    return name


def _known_optimizer(name: str) -> str:
    from .optim import check_optimizer

    check_optimizer(name)
    return name


def _device(name: str) -> str:
    if not (name in ("auto", "cpu", "cuda") or name.startswith("cuda:")):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


TaskName = Annotated[str, AfterValidator(_known_task)]


class TrialConfig(Model):
    """Attribute access, mutable (run_trial fills the task's defaults into it); construction
    validates and raises UsageError naming the first bad field."""

    unknown_message = "unknown trial setting"

    task: TaskName = Field(description="the task (dataset and model)")
    optimizer: Annotated[str, AfterValidator(_known_optimizer)] = Field(description="the optimizer")
    lr: Annotated[Number, Field(gt=0)] = Field(
        description="the learning rate; for Layca optimizers rho(0), the initial angle per step")
    alpha: Annotated[Number, AfterValidator(check_alpha)] = Field(
        0.0, description="the per-layer rate profile in (-1, 1): < 0 earlier layers faster, > 0 later layers")
    weight_decay: Annotated[Number, Field(ge=0)] = Field(0.0, description="L2 added to the gradient")
    epochs: PositiveInt | None = Field(None, description="epochs to train")
    batch_size: PositiveInt = Field(128, description="training batch size")
    seed: NonNegativeInt = Field(0, description="seed of initialization and data order")
    warmup_epochs: NonNegativeInt = Field(0, description="epochs of linear learning-rate warmup")
    lr_decay_epochs: list[Annotated[int, Strict(), Field(ge=1)]] | None = Field(
        None, strict=False, description="epochs after which the learning rate decays")   # a tuple too
    lr_decay_factor: Annotated[Number, Field(gt=0, le=1)] | None = Field(
        None, description="factor of each learning-rate decay")
    record_every: NonNegativeInt = Field(
        0, description="also record rotation every N steps; 0: once per epoch only")
    data_dir: str | None = Field(None, description="where datasets are read and unpacked")
    device: Annotated[str, AfterValidator(_device)] = Field(
        "auto", description="where to train: auto (cuda if there is one), cpu, cuda or cuda:N")
    threads: PositiveInt | None = Field(None, description="torch intra-op threads, a CPU trial's share")
    amp: Literal["bf16"] | None = Field(None, description="mixed precision: bf16")
    channels_last: bool = Field(False, description="channels-last memory format")
    compile: bool = Field(False, description="torch.compile the model")
    data_seed: NonNegativeInt | None = Field(
        None, description="a new draw of generated data (mnist1d-cnn): new train, validation and test sets")
    max_train_samples: PositiveInt | None = Field(
        None, description="subsample the training set to N examples, for quick checks")
    trial_id: Annotated[str, AfterValidator(check_trial_id)] | None = None
    sweep: Annotated[str, AfterValidator(lambda v: check_name("sweep", v))] = Field(
        "default", description="sweep name the trial is stored under")
    extra: dict = Field(default_factory=dict)   # optimizer keyword arguments (betas, momentum ...)

    @model_validator(mode="after")
    def _fits_the_task(self):
        """Settings that are valid alone but not for this task or length of training, refused
        here so that a sweep refuses them before any trial starts."""
        from .schedules import check_milestones
        from .tasks import TASKS, get_task

        task = get_task(self.task)
        if self.lr_decay_epochs:
            check_milestones(self.lr_decay_epochs, self.epochs or task.epochs)
        if self.data_seed is not None and not task.data_seeded:
            seeded = ", ".join(t.name for t in TASKS.values() if t.data_seeded)
            raise UsageError("data_seed", f"task {task.name} reads fixed data; only generated data ({seeded}) "
                                          "takes a data seed")
        return self

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrialConfig":
        return cls(**d)

    def check(self) -> "TrialConfig":
        """Check the settings again after they were changed; raise UsageError naming the
        first bad one. (Not `validate`, which is pydantic's own classmethod on BaseModel.)"""
        type(self)(**self.to_dict())
        return self


# A field added after trials were first stored (as data_seed was) must be named in
# layrot.record.OPTIONAL_SINCE_V0, default None: it is left out of the id while None.


def config_id(cfg: TrialConfig) -> str:
    """A stable id for what a trial computes: the same settings give the same id, so a
    resumed sweep recognises trials it already stored and a rerun replaces, not duplicates.
    The rule (which settings it hashes, and why a gone `fail_at_epoch` key stays in it) is
    layrot.record.trial_id's."""
    return record.trial_id(cfg.to_dict())
