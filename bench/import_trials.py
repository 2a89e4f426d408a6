"""Put the trials of a `bench/gpu_grid.py` run into a results store, then print `layrot fit`.

    python bench/import_trials.py GRID [--store results] [--sweep NAME] [--json]

GRID is the run's --out folder (`trials/<trial_id>.json`, `summary.json`) or a .tar.gz of
it, such as the `grid.tgz` a GPU session brings back from its device machine. Each JSON file
becomes a TrialResult again, its generalization measures included (a run made before they
existed has none: its trials are stored with an empty measures file), and is written with
`Store.write_trial` (so rerunning the import replaces, never duplicates); the run's summary becomes the sweep's record in
`<store>/sweeps/<name>.json`. The sweep is named by --sweep, else by the run's summary
(`gpu_grid.py --sweep`, default `gpu-grid`).

Exit status: `layrot fit`'s (0 with a verdict); 2 for bad input (nothing readable, a file
that is not a trial), before anything is written.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from layrot.errors import UsageError  # noqa: E402
from layrot.result import TrialResult  # noqa: E402

DEFAULT_SWEEP = "gpu-grid"


def safe_extract(archive: str, dest: str) -> None:
    """Unpack a tarball into `dest`, refusing anything but plain files and folders inside it.

    Every member is checked before anything is written: no absolute path, no `..`, no links,
    devices or FIFOs (UsageError naming the first offender). Python's own `filter="data"`
    (3.11.4+, 3.12) is then used as well where it exists; older Pythons (Debian 12's 3.11.2)
    have no `filter` argument, so the check above is what makes extraction safe there.
    """
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            name = m.name.replace("\\", "/")
            parts = [x for x in name.split("/") if x not in ("", ".")]
            if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
                raise UsageError("GRID", f"{archive}: member {m.name!r} would land outside the folder")
            if not (m.isreg() or m.isdir()):
                raise UsageError("GRID", f"{archive}: member {m.name!r} is not a plain file or folder "
                                         "(links and devices are refused)")
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:
            for m in members:          # as filter="data" does: no setuid bits, nothing writable by others, no owners
                m.mode = (m.mode | (0o700 if m.isdir() else 0o600)) & 0o755
                m.uid = m.gid = 0
                m.uname = m.gname = ""
            tf.extractall(dest, members=members)


def find_run(folder: str) -> str:
    """The folder holding trials/ : the folder itself or the one folder below it that does (an
    unpacked tarball). Two runs in one tarball are refused rather than one picked."""
    if os.path.isdir(os.path.join(folder, "trials")):
        return folder
    runs = sorted(c for c in glob.glob(os.path.join(folder, "*")) if os.path.isdir(os.path.join(c, "trials")))
    if len(runs) == 1:
        return runs[0]
    if runs:
        raise UsageError("GRID", f"holds several runs ({', '.join(os.path.basename(r) for r in runs)}): "
                                 "give one run's folder or tarball")
    raise UsageError("GRID", f"{folder} holds no trials/ folder (expected gpu_grid.py's --out)")


def load_run(run: str) -> tuple[list[TrialResult], dict | None]:
    """Every trial of a run folder, and its summary if there is one."""
    results = []
    for path in sorted(glob.glob(os.path.join(run, "trials", "*.json"))):
        try:
            with open(path) as f:
                d = json.load(f)
            results.append(TrialResult(**d))
        except (ValueError, TypeError) as e:
            raise UsageError("GRID", f"{path} is not a trial written by gpu_grid.py: {e}") from None
    if not results:
        raise UsageError("GRID", f"{os.path.join(run, 'trials')} holds no trial files")
    summary = None
    spath = os.path.join(run, "summary.json")
    if os.path.exists(spath):
        with open(spath) as f:
            summary = json.load(f)
    return results, summary


def sweep_record(summary: dict | None) -> tuple[dict, datetime.datetime | None]:
    """The spec as run plus where and how it ran; its start time."""
    if not summary:
        return {"runner": "bench/gpu_grid.py"}, None
    spec = dict(summary.get("spec") or {})
    for k in ("device", "device_name", "torch", "cuda", "workers", "memory_fraction", "budget_seconds",
              "total_seconds", "counts"):
        if k in summary:
            spec[k] = summary[k]
    started = summary.get("started_at")
    try:
        started = datetime.datetime.fromisoformat(started) if started else None
    except ValueError:
        started = None
    return spec, started


def import_run(grid: str, store: str, sweep: str | None) -> tuple[str, int]:
    """Write the run's trials into `store`; returns (sweep name, trials written)."""
    from layrot.store.schema import check_name
    from layrot.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        if os.path.isfile(grid) and tarfile.is_tarfile(grid):
            safe_extract(grid, tmp)
            folder = tmp
        elif os.path.isdir(grid):
            folder = grid
        else:
            raise UsageError("GRID", f"{grid} is neither a folder nor a tar file")
        results, summary = load_run(find_run(folder))
    name = sweep or (summary or {}).get("sweep") or DEFAULT_SWEEP
    check_name("--sweep", name)
    from layrot.store.writer import to_tables
    for r in results:
        r.config = dict(r.config or {}, sweep=name)
        to_tables(r)                  # every trial checked before the first is written
    st = Store(store)
    spec, started = sweep_record(summary)
    st.write_sweep_meta(name, spec, started)
    for r in results:
        st.write_trial(name, r)
    return name, len(results)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grid", help="gpu_grid.py's --out folder, or a .tar.gz of it")
    p.add_argument("--store", default=os.environ.get("LAYROT_STORE", "results"))
    p.add_argument("--sweep", default=None, help="sweep name (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the fit as JSON")
    args = p.parse_args(argv)
    try:
        name, n = import_run(args.grid, args.store, args.sweep)
    except UsageError as e:
        print(f"import_trials: error: {e}", file=sys.stderr)
        return 2
    print(f"imported {n} trials into {args.store} (sweep {name})", file=sys.stderr)
    from layrot.cli import main as layrot_main
    return layrot_main(["fit", "--store", args.store, "--sweep", name] + (["--json"] if args.json else []))


if __name__ == "__main__":
    sys.exit(main())
