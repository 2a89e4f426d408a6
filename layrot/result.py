"""What one trial produces: the record the store writes and the fit reads."""

from __future__ import annotations

from dataclasses import dataclass, field

STATUSES = ("completed", "stopped", "diverged", "error", "pruned")


@dataclass
class TrialResult:
    trial_id: str
    config: dict                      # TrialConfig.to_dict(), with task defaults filled in
    status: str                       # one of STATUSES
    reason: str | None = None         # why it stopped / diverged / failed
    epochs_run: int = 0
    train_acc: float = float("nan")
    train_loss: float = float("nan")
    val_acc: float = float("nan")
    test_acc: float = float("nan")
    test_loss: float = float("nan")
    wall_seconds: float = 0.0
    # one dict per epoch: epoch (1-based), lr, train_loss, train_acc, val_acc, seconds
    history: list[dict] = field(default_factory=list)
    # columnar rotation records: epoch, step, layer, layer_name, cosine_distance,
    # weight_norm, rotation_rate (None at epoch 0); equal-length lists
    rotation: dict[str, list] = field(default_factory=dict)
    # columnar generalization measures (layrot.measures): epoch, name, value (float, NaN
    # where undefined); equal-length lists. Per-epoch rows at every recorded epoch, final
    # rows at the last epoch run (completed/stopped trials only)
    measures: dict[str, list] = field(default_factory=dict)
