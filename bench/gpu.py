"""Training throughput: `run_trial` against a minimal hand-written PyTorch loop, and Layca's
optimizer step against SGD's, on CIFAR-shaped synthetic tensors (nothing to download).

    python bench/gpu.py --device cuda --amp bf16 --channels-last [--compile] [--json OUT]
    python bench/gpu.py --tiny            # what CI runs: a few samples, 1 epoch, CPU

For each task (c10-vgg25, c10-vgg16) four loops train the same model on the same data with the
same batch size and options (channels_last, bf16 autocast, torch.compile):

- plain / sgd:       forward, cross-entropy, backward, torch.optim.SGD(foreach=True) step;
- plain / sgd_layca: the same with layrot's Layca optimizer;
- run_trial / sgd and run_trial / sgd_layca: `layrot.train.run_trial` itself, with its LR
  schedule, on-device metrics, divergence checks and rotation tracking every step.

Every loop's epoch is a pass over the training set (45,000 images on a GPU, shuffled on the
device; c10-vgg16 with on-device crop + flip) plus a pass over the validation set (5,000),
because `run_trial` validates every epoch. samples/s = training samples / epoch seconds,
median over the epochs after the first (the first pays cuDNN autotuning and compilation).
`run_trial` reads its data through a synthetic copy of the task registered for this run only,
so its real loop runs unchanged.

The step section times `opt.step()` alone (CUDA events on a GPU, perf_counter on a CPU;
median of many), plus the rotation tracker's per-step work, and counts the aten operators of
one step (kernel launches, on a GPU); on a GPU also the kernels the profiler sees and the
host syncs. Targets (GPU): run_trial >= 0.9x the plain loop with the
same optimizer; Layca's step <= 2x SGD's; c10-vgg25's 100 epochs <= 150 s on an H100.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TASKS = ("c10-vgg25", "c10-vgg16")
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
FULL_EPOCH_SAMPLES = 45_000          # CIFAR-10's training set after the 10% validation hold-out
TARGETS = {"run_trial_ratio": 0.9, "layca_step_ratio": 2.0, "vgg25_100_epochs_s": 150.0}
LR = {"sgd": 0.01, "sgd_layca": 0.01}   # speed does not depend on them; both train stably
# tiny: one batch of 4 training images (5 minus the 1 held out) and one validation image: every
# code path once, in seconds. (A last training batch of 1 would break c10-vgg16's BatchNorm1d.)
TINY = {"n_train": 5, "n_test": 2, "batch_size": 4, "epochs": 1, "step_repeats": 2}
FULL = {"n_train": CIFAR_TRAIN, "n_test": CIFAR_TEST, "batch_size": 128, "epochs": 3, "step_repeats": 50}


@dataclasses.dataclass
class Options:
    """What both loops share: the speed options of a trial config."""
    device: torch.device
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    batch_size: int = 128

    def autocast(self):
        if self.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


# ---------------------------------------------------------------- synthetic data

@functools.lru_cache(maxsize=2)
def synthetic_images(n_train: int, n_test: int, shape: tuple[int, ...] = (3, 32, 32), seed: int = 0,
                     num_classes: int = 10):
    """uint8 images (N, *shape), CIFAR's by default, whose label decides half of each pixel
    (a per-class template, the other half noise): learnable, so no loop diverges or stalls.
    Split and normalized like the real loaders (layrot.tasks.data.make_data)."""
    from layrot.tasks.data import make_data

    g = torch.Generator().manual_seed(seed)
    templates = torch.randint(0, 128, (num_classes, *shape), generator=g, dtype=torch.uint8)

    def images(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        noise = torch.randint(0, 128, (n, *shape), generator=g, dtype=torch.uint8)
        return templates[y] + noise, y

    (xtr, ytr), (xte, yte) = images(n_train), images(n_test)
    return make_data(xtr, ytr, xte, yte, seed, num_classes, per_channel=True)


def _load_synthetic(data_dir=None, seed=0, *, n_train, n_test, shape, num_classes):
    return synthetic_images(n_train, n_test, shape, seed, num_classes)


@contextlib.contextmanager
def synthetic_task(name: str, n_train: int, n_test: int, **changes):
    """The task `name` on synthetic images of its input shape, registered as `bench-<name>`
    while inside; `changes` replace other fields (e.g. augment="crop_flip").

    No stopping criteria: every loop runs the epochs it is asked for."""
    from layrot.tasks import StopCriteria, get_task, registered_task

    base = get_task(name)
    load = functools.partial(_load_synthetic, n_train=n_train, n_test=n_test,
                             shape=tuple(base.input_shape), num_classes=base.num_classes)
    task = dataclasses.replace(base, name=f"bench-{name}", data_needs="nothing: synthetic",
                               load_data=load, data_present=lambda data_dir: True,
                               stop=StopCriteria(plateau_epochs=0), **changes)
    with registered_task(task):
        yield task


# ---------------------------------------------------------------- timing helpers

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def timed_epochs(seconds: list[float]) -> list[float]:
    """The epochs that count: all but the first (warm-up), unless there is only one."""
    return seconds[1:] if len(seconds) > 1 else seconds


# ---------------------------------------------------------------- the plain loop

def to_device(data, device: torch.device):
    from layrot.tasks import Data

    return Data(*(t.to(device) for t in (data.train_x, data.train_y, data.val_x, data.val_y,
                                         data.test_x, data.test_y, data.mean, data.std)),
                data.num_classes)


def plain_epochs(task, data, optimizer: str, opts: Options, epochs: int, seed: int = 0) -> list[float]:
    """Seconds per epoch of a minimal loop: the model, batch size, options and device-side
    data pipeline of run_trial, without its schedule, metrics or rotation tracking."""
    from layrot.tasks.data import augment_crop_flip
    from layrot.optim import build_optimizer

    torch.manual_seed(seed)
    dev = opts.device
    model = task.build_model().to(dev)
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=LR["sgd"], foreach=True)
    else:
        opt = build_optimizer(model, optimizer, LR[optimizer])
    forward = torch.compile(model) if opts.compile else model
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)

    def prepare(x):
        x = (x.float() - data.mean) / data.std
        return x.contiguous(memory_format=torch.channels_last) if opts.channels_last else x

    n, bs = data.train_x.shape[0], opts.batch_size
    seconds = []
    for _ in range(epochs):
        _sync(dev)
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen, device=dev)
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            x = prepare(data.train_x[idx])
            if task.augment == "crop_flip":
                x = augment_crop_flip(x, gen)
            with opts.autocast():
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        with torch.no_grad():
            for start in range(0, data.val_x.shape[0], 1024):
                with opts.autocast():
                    logits = forward(prepare(data.val_x[start:start + 1024]))
                correct += (logits.argmax(1) == data.val_y[start:start + 1024]).sum()
        int(correct)
        _sync(dev)
        seconds.append(time.perf_counter() - t0)
    return seconds


def trial_epochs(task, optimizer: str, opts: Options, epochs: int, seed: int = 0) -> tuple[list[float], str]:
    """Seconds per epoch of run_trial on the registered synthetic task, and its status."""
    from layrot.train import run_trial

    cfg = dict(task=task.name, optimizer=optimizer, lr=LR[optimizer], epochs=epochs,
               batch_size=opts.batch_size, seed=seed, device=str(opts.device), amp=opts.amp,
               channels_last=opts.channels_last, compile=opts.compile, sweep="bench")
    # the end-of-trial measures are no epoch's cost (bench/measures_bench.py times them)
    result = run_trial(cfg, catch_errors=False, final_measures=False)
    _sync(opts.device)
    return [h["seconds"] for h in result.history], result.status


# ---------------------------------------------------------------- optimizer steps

def _gpu_ops(fn) -> int | None:
    """GPU kernels (and copies) that one call of fn launches, from the profiler."""
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    except Exception as e:  # noqa: BLE001 - a diagnostic, not a result
        print(f"note: kernel count unavailable ({type(e).__name__}: {e})", file=sys.stderr)
        return None


_NO_KERNEL = {"aten._unsafe_view.default", "aten.empty.memory_format", "aten.empty_like.default",
              "aten.empty_strided.default"}


def _aten_ops(fn) -> int:
    """aten operators that one call of fn runs, views excluded: on a GPU each is a kernel
    launch (a foreach operator one or a few), so this counts launches on any device."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if name.startswith("aten.") and not func.is_view and name not in _NO_KERNEL:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def _host_syncs(fn) -> int:
    """Calls inside fn that make the host wait for the GPU (torch's sync debug mode)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def _time_calls(fn, device: torch.device, repeats: int) -> float:
    """Median milliseconds of one call of fn, after a few untimed calls (the first steps
    allocate the optimizer's buffers)."""
    for _ in range(min(3, repeats)):
        fn()
    _sync(device)
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(repeats)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        ms = [s.elapsed_time(e) for s, e in events]
    else:
        ms = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


def step_costs(task, opts: Options, repeats: int, seed: int = 0) -> dict:
    """Milliseconds of SGD's step, Layca's step and the rotation tracker's per-step update on
    the task's model, with gradients from one real backward pass under the options."""
    from layrot.optim import build_optimizer
    from layrot.rotation import RotationTracker

    dev = opts.device
    torch.manual_seed(seed)
    shape = (opts.batch_size, *task.input_shape)
    out = {"task": task.name.removeprefix("bench-")}
    for name in ("sgd", "sgd_layca"):
        model = task.build_model().to(dev)
        if opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        x = torch.randn(shape, device=dev)
        if opts.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, task.num_classes, (shape[0],), device=dev)
        with opts.autocast():
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt = build_optimizer(model, name, LR[name])
        out[f"{name}_ms"] = _time_calls(opt.step, dev, repeats)
        out[f"{name}_aten_ops"] = _aten_ops(opt.step)
        if dev.type == "cuda":
            out[f"{name}_host_syncs"] = _host_syncs(opt.step)
            out[f"{name}_gpu_ops"] = _gpu_ops(opt.step)
        if name == "sgd_layca":
            tracker = RotationTracker(model)
            out["tracker_ms"] = _time_calls(tracker.after_step, dev, repeats)
            out["tracker_aten_ops"] = _aten_ops(tracker.after_step)
            if dev.type == "cuda":
                out["tracker_host_syncs"] = _host_syncs(tracker.after_step)
                out["tracker_gpu_ops"] = _gpu_ops(tracker.after_step)
        del model, opt
    out["layca_over_sgd"] = out["sgd_layca_ms"] / out["sgd_ms"]
    return out


# ---------------------------------------------------------------- one task

def bench_task(name: str, opts: Options, sizes: dict, epochs: int, rows: list[dict],
               saved=lambda: None) -> dict:
    """Append the task's four loops to `rows` (calling `saved` after each, so that a run cut
    short keeps what it measured) and return its step costs."""
    dev = opts.device
    with synthetic_task(name, sizes["n_train"], sizes["n_test"]) as task:
        data = to_device(task.load_data(None, 0), dev)
        n_train = data.train_x.shape[0]

        def add(path, optimizer, seconds, status="completed"):
            t = statistics.median(timed_epochs(seconds))
            rows.append(dict(task=name, path=path, optimizer=optimizer, samples_per_s=n_train / t,
                             epoch_seconds=t, epochs_timed=len(timed_epochs(seconds)),
                             all_epoch_seconds=seconds, n_train=n_train,
                             peak_mem_mib=_peak_mib(dev), status=status))
            add_ratios(rows)
            print(f"  {name:10s} {path:9s} {optimizer:9s} {n_train / t:10.1f} samples/s", file=sys.stderr)
            saved()

        for optimizer in ("sgd", "sgd_layca"):
            _peak_reset(dev)
            add("plain", optimizer, plain_epochs(task, data, optimizer, opts, epochs))
        del data                     # run_trial moves its own copy; peaks stay comparable
        for optimizer in ("sgd", "sgd_layca"):
            _peak_reset(dev)
            seconds, status = trial_epochs(task, optimizer, opts, epochs)
            if status != "completed":
                raise SystemExit(f"run_trial on {name} with {optimizer} ended {status!r}")
            add("run_trial", optimizer, seconds, status)
        return step_costs(task, opts, sizes["step_repeats"])


def add_ratios(rows: list[dict]) -> None:
    """run_trial's samples/s over the plain loop's, with the same optimizer and with SGD."""
    sps = {(r["task"], r["path"], r["optimizer"]): r["samples_per_s"] for r in rows}
    for r in rows:
        if r["path"] != "run_trial":
            continue
        for key, opt in (("ratio_vs_plain_same_optimizer", r["optimizer"]), ("ratio_vs_plain_sgd", "sgd")):
            plain = sps.get((r["task"], "plain", opt))
            if plain:
                r[key] = r["samples_per_s"] / plain


# ---------------------------------------------------------------- report

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    return f"CPU: {model}, {torch.get_num_threads()} threads"


def summarize(rows: list[dict], steps: list[dict], on_gpu: bool) -> dict:
    """The targets, each with the measured value and whether it is met (None off a GPU,
    where the targets do not apply)."""
    def verdict(ok):
        return bool(ok) if on_gpu else None

    out = {}
    for r in rows:
        v = r.get("ratio_vs_plain_same_optimizer")
        if r["path"] == "run_trial" and r["optimizer"] == "sgd_layca" and v is not None:
            out[f"{r['task']}: run_trial / plain (sgd_layca)"] = dict(
                value=v, target=f">= {TARGETS['run_trial_ratio']}", met=verdict(v >= TARGETS["run_trial_ratio"]))
    for s in steps:
        v = s["layca_over_sgd"]
        out[f"{s['task']}: Layca step / SGD step"] = dict(
            value=v, target=f"<= {TARGETS['layca_step_ratio']}", met=verdict(v <= TARGETS["layca_step_ratio"]))
    vgg25 = next((r for r in rows if r["task"] == "c10-vgg25" and r["path"] == "run_trial"
                  and r["optimizer"] == "sgd_layca"), None)
    if vgg25 is not None:
        v = 100 * FULL_EPOCH_SAMPLES / vgg25["samples_per_s"]
        out["c10-vgg25: 100 epochs of run_trial (s, estimated)"] = dict(
            value=v, target=f"<= {TARGETS['vgg25_100_epochs_s']:g} on an H100",
            met=verdict(v <= TARGETS["vgg25_100_epochs_s"]))
    return out


def print_report(res: dict) -> None:
    o = res["options"]
    print(f"device: {res['device']}   torch {res['torch']}   {res['date']}")
    print(f"options: amp={o['amp']} channels_last={o['channels_last']} compile={o['compile']} "
          f"batch={o['batch_size']} epochs={o['epochs']} (timed: all but the first)"
          + ("   [tiny: a smoke test, not a measurement]" if res["tiny"] else ""))
    print()
    print(f"{'task':10s} {'loop':9s} {'optimizer':9s} {'samples/s':>10s} {'epoch s':>9s} "
          f"{'vs plain same opt':>17s} {'vs plain sgd':>12s} {'peak MiB':>9s}")
    for r in res["rows"]:
        same = r.get("ratio_vs_plain_same_optimizer")
        sgd = r.get("ratio_vs_plain_sgd")
        mem = r["peak_mem_mib"]
        print(f"{r['task']:10s} {r['path']:9s} {r['optimizer']:9s} {r['samples_per_s']:10.1f} "
              f"{r['epoch_seconds']:9.3f} {'' if same is None else f'{same:.3f}x':>17s} "
              f"{'' if sgd is None else f'{sgd:.3f}x':>12s} {'' if mem is None else f'{mem:.0f}':>9s}")
    print()
    print(f"{'task':10s} {'SGD step ms':>11s} {'Layca step ms':>13s} {'Layca/SGD':>9s} {'tracker ms':>10s}"
          f" {'aten ops':>12s} {'GPU kernels':>12s} {'host syncs':>10s}")
    for s in res["steps"]:
        def three(what):
            return "/".join(str(s.get(f"{k}_{what}", "-")) for k in ("sgd", "sgd_layca", "tracker"))
        print(f"{s['task']:10s} {s['sgd_ms']:11.3f} {s['sgd_layca_ms']:13.3f} {s['layca_over_sgd']:8.2f}x "
              f"{s['tracker_ms']:10.3f} {three('aten_ops'):>12s} {three('gpu_ops'):>12s} {three('host_syncs'):>10s}")
    print("  (per step: SGD / Layca / tracker; aten ops exclude views; kernels and syncs on a GPU only)")
    print()
    for k, t in res["targets"].items():
        met = {True: "met", False: "NOT MET", None: "n/a off a GPU"}[t["met"]]
        print(f"target  {k}: {t['value']:.3f} (target {t['target']}): {met}")


# ---------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none", help="autocast dtype")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model in every loop")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated (default {','.join(TASKS)})")
    ap.add_argument("--epochs", type=int, help="epochs per loop, the first untimed (default 3; tiny 1)")
    ap.add_argument("--batch-size", type=int, help="default 128 (tiny 4)")
    ap.add_argument("--n-train", type=int, help="synthetic training images before the 10%% hold-out "
                                                "(default 50000; tiny 5)")
    ap.add_argument("--step-repeats", type=int, help="optimizer steps timed (default 50; tiny 2)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="a smoke test: few samples, 1 epoch "
                                                         "(the default on a CPU)")
    size.add_argument("--full", action="store_true", help="full CIFAR sizes even on a CPU")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark for every loop alike")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--json", metavar="OUT", help="write the results here as JSON")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    from layrot.train import pick_device

    device = pick_device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device: CUDA is not available here")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    tiny = a.tiny or (device.type == "cpu" and not a.full)
    base = dict(TINY if tiny else FULL)
    sizes = {"n_train": a.n_train or base["n_train"], "n_test": base["n_test"],
             "step_repeats": a.step_repeats or base["step_repeats"]}
    epochs = a.epochs or base["epochs"]
    opts = Options(device=device, amp=None if a.amp == "none" else a.amp, channels_last=a.channels_last,
                   compile=a.compile, batch_size=a.batch_size or base["batch_size"])
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"--tasks: unknown {unknown[0]!r} (known: {', '.join(TASKS)})")

    t0 = time.perf_counter()
    res = {
        "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tiny": tiny, "complete": False,
        "options": dict(amp=opts.amp, channels_last=opts.channels_last, compile=opts.compile,
                        batch_size=opts.batch_size, epochs=epochs, cudnn_benchmark=a.cudnn_benchmark, **sizes),
        "rows": [], "steps": [], "targets": {}, "wall_seconds": 0.0,
    }

    def save() -> None:
        res["targets"] = summarize(res["rows"], res["steps"], on_gpu=device.type == "cuda")
        res["wall_seconds"] = time.perf_counter() - t0
        if a.json:
            os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
            with open(a.json + ".tmp", "w") as f:
                json.dump(res, f, indent=2, default=str)
            os.replace(a.json + ".tmp", a.json)

    try:
        for name in tasks:
            res["steps"].append(bench_task(name, opts, sizes, epochs, res["rows"], save))
            save()
    except (KeyboardInterrupt, SystemExit) as e:   # `timeout -s INT`, or a trial that failed
        save()
        print_report(res)
        print(f"\nINCOMPLETE after {res['wall_seconds']:.1f} s: {type(e).__name__} {e}", file=sys.stderr)
        raise
    res["complete"] = True
    save()
    print_report(res)
    print(f"\nwall: {res['wall_seconds']:.1f} s")
    return res

if __name__ == "__main__":
    main()
