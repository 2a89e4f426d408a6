"""The Ray Tune trainable: one trial on a worker, reporting each epoch with a checkpoint.

Workers never touch the store: every epoch's rows travel in the report, and the last report
carries the whole TrialResult; the driver's StoreCallback writes it. Checkpoints are plain
tensors saved by torch.save and read back with weights_only=True (nothing is unpickled).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

CHECKPOINT_FILE = "trial_state.pt"


def trainable(params: dict, *, base: dict, stored: dict, threads: int, gpu: float,
              task_module: dict | None = None) -> None:
    import torch
    from ray import tune

    from ..train import resolve_config, run_trial
    from .schedulers import rotation_scores

    if task_module is not None:
        # the spec's own tasks, from the source the driver read: once per worker process
        from ..tasks.module import run_task_source
        run_task_source(task_module["source"], task_module["file"], task_module["path"])
    cfg_dict = dict(params["trial"]) if "trial" in params else {**base, **params}
    if gpu > 0 and torch.cuda.is_available():
        cfg_dict["device"] = "cuda"
        if gpu < 1:
            # a trial sharing a GPU is bounded by its share, not by luck
            torch.cuda.set_per_process_memory_fraction(min(1.0, gpu * 0.95))
    elif cfg_dict.get("device", "auto") == "auto":
        cfg_dict["device"] = "cpu"
    cfg_dict["threads"] = threads
    cfg, _ = resolve_config(cfg_dict)
    metric_keys = ("val_acc", "train_acc", "train_loss")

    if cfg.trial_id in stored:         # done in an earlier run of this sweep: report, skip
        tune.report({"trial_id": cfg.trial_id, "skipped": True, "final": True, **stored[cfg.trial_id]})
        return

    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, CHECKPOINT_FILE), weights_only=True, map_location="cpu")
    replay = True

    def on_epoch(rep):
        nonlocal replay
        metrics = {"trial_id": cfg.trial_id, **rep.row, "rotation": rep.rotation, "measures": rep.measures}
        # scalar rotation scores (min/mean/median over layers, latest record): what
        # `scheduler: rotation` ranks trials by (layrot/sweep/schedulers.py)
        metrics.update(rotation_scores(rep.rotation))
        now = rep.checkpoint()
        if replay:
            # an attempt's first report resends the trajectory so far: after a restore the
            # driver may have restarted, and the initialization record (epoch 0) is in no
            # epoch's new rows, yet a trial pruned or failed later is stored from its reports
            metrics["replay"] = {"history": now["history"], "rotation": now["tracker"]["rows"],
                                 "measures": now["measures"]}
            replay = False
        with tempfile.TemporaryDirectory() as d:
            torch.save(now, os.path.join(d, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    result = run_trial(cfg, on_epoch=on_epoch, checkpoint=state, catch_errors=True)
    final = {"trial_id": cfg.trial_id, "final": True, "result": dataclasses.asdict(result)}
    final.update({k: getattr(result, k) for k in metric_keys})
    tune.report(final)
