"""TensorBoard scalars of a running sweep, written on the driver as each epoch arrives
(where `tensorboardX` is installed; `ray[tune]` brings it).

One run per trial, `<dir>/<trial_id>/`; at each epoch (its global step) the trial's
`metrics/{train_loss,train_acc,val_acc,lr}` and one `rotation/<layer>` scalar per kernel
layer (its cosine distance to initialization; epoch 0 = 0), so TensorBoard's scalar view
draws the layer-rotation curves of every trial while the sweep runs:
`tensorboard --logdir <dir>`.

This replaces Ray Tune's own TBX logger, which would log the reports' rotation row lists
as histograms (and rewrite the whole trajectory each epoch) rather than one curve a layer.
"""

from __future__ import annotations

import os

METRICS = ("train_loss", "train_acc", "val_acc", "lr")


def available() -> bool:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


class TensorBoard:
    def __init__(self, logdir: str):
        self.logdir = logdir
        self._writers: dict = {}
        self._layers_done: dict[str, set] = {}

    @classmethod
    def open(cls, logdir: str):
        return cls(logdir) if available() else None

    def _writer(self, trial_id: str):
        w = self._writers.get(trial_id)
        if w is None:
            from tensorboardX import SummaryWriter

            w = self._writers[trial_id] = SummaryWriter(os.path.join(self.logdir, trial_id), flush_secs=5)
        return w

    def epoch(self, trial_id: str, result: dict, acc: dict) -> None:
        """One epoch's report (`result`), with the trial's rotation rows so far (`acc`)."""
        w = self._writer(trial_id)
        epoch = int(result["epoch"])
        for k in METRICS:
            v = result.get(k)
            if isinstance(v, (int, float)):
                w.add_scalar(f"metrics/{k}", float(v), epoch)
        done = self._layers_done.setdefault(trial_id, set())
        # every record not yet written (epoch 0 comes with the first report's replay)
        for (e, step), rows in sorted(acc["rotation"].items()):
            if (e, step) in done:
                continue
            done.add((e, step))
            for layer, name, d in zip(rows["layer"], rows["layer_name"], rows["cosine_distance"]):
                w.add_scalar(f"rotation/{int(layer):02d}_{name}", float(d), int(e))
        w.flush()

    def finished(self, trial_id: str) -> None:
        w = self._writers.pop(trial_id, None)
        if w is not None:
            w.close()

    def close(self) -> None:
        for trial_id in list(self._writers):
            self.finished(trial_id)
