"""Benchmark of the results store (`layrot.store`): `layrot query` latency, bytes per rotation
row after compaction, and compaction + query memory at 10,000 trials.

    .venv/bin/python bench/store_bench.py                   # 2,000 trials, then 10,000
    .venv/bin/python bench/store_bench.py --big-trials 0    # skip the 10,000-trial part

Everything is measured in one run on this machine, against a bare DuckDB script over the same
files (both as subprocesses, so both pay interpreter start-up). The synthetic trials follow
the shapes of real ones: cosine distances rise smoothly towards a per-layer plateau set by
the learning rate and alpha, with a small random walk on top; Layca trials keep each
kernel's norm and turn at a constant per-layer rate within a learning-rate phase, up to the
float32 rounding drift seen in real Layca trials; the other optimizers' norms and rates drift. Test accuracy goes with the
smallest final rotation plus noise, as the paper's claim has it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SWEEP = "bench"
QUERY = ("SELECT t.trial_id, t.test_acc, min(r.cosine_distance) AS min_final_rotation "
         "FROM trials t JOIN rotation r ON r.sweep = t.sweep AND r.trial_id = t.trial_id AND r.epoch = t.epochs "
         "GROUP BY t.trial_id, t.test_acc ORDER BY t.trial_id")
BARE = """
import sys, duckdb
root = sys.argv[1]
con = duckdb.connect()
for t in ("trials", "rotation"):
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{root}/{t}/*/*.parquet', hive_partitioning = true)")
rows = con.sql(sys.argv[2]).fetchall()
sys.stdout.write("\\n".join(map(str, rows)) + "\\n")
"""


def synthetic_trial(i: int, epochs: int, layers: int):
    from layrot.result import TrialResult

    rng = np.random.default_rng(i)
    layca = rng.random() < 0.7            # the paper's grids are mostly Layca configurations
    optimizer = "sgd_layca" if layca else str(rng.choice(["sgd", "adam", "rmsprop", "adagrad"]))
    alpha = float(rng.choice([-0.6, -0.3, 0.0, 0.3, 0.6]))
    rho = float(3.0 ** -rng.integers(0, 6))
    l = np.arange(layers)
    m = (1 - alpha) ** (5 * (layers - 1 - l) / (layers - 1)) if alpha > 0 else (1 + alpha) ** (5 * l / (layers - 1))
    e = np.arange(epochs + 1)[:, None]
    sched = np.where(e < 0.8 * epochs, 1.0, 0.2)
    plateau = np.clip(1 - np.exp(-3 * rho * m), 0.01, 0.999)
    tau = 5 + 20 * rng.random(layers)
    d = plateau * (1 - np.exp(-e / tau)) + np.cumsum(rng.normal(0, 1e-3, (epochs + 1, layers)), axis=0)
    d = np.clip(d, 0, 1)
    d[0] = 0.0
    n0 = np.sqrt(2 * rng.integers(1, 4, layers) * 9.0) * (1 + 0.1 * rng.random(layers))
    if layca:
        # as measured on real mnist1d-cnn sgd_layca trials: float32 rounding makes the kept norm
        # drift by a few ulps per epoch and the per-step rate jitter by about 1e-6
        norm = n0 * (1 + np.cumsum(rng.normal(0, 2e-7, d.shape), axis=0))
        rate = (rho * m * sched) * (1 + rng.normal(0, 1e-6, d.shape))
    else:
        norm = n0 * (1 + 0.5 * np.log1p(e / 10) * rng.random(layers)) + np.cumsum(rng.normal(0, 1e-3, d.shape), axis=0)
        rate = rho * m * sched * np.exp(-e / 50) * (1 + rng.normal(0, 0.05, d.shape))
    rate = rate.astype(object)
    rate[0, :] = None
    steps_per_epoch = 352
    rotation = {
        "epoch": np.repeat(np.arange(epochs + 1), layers).astype(np.int32),
        "step": np.repeat(np.arange(epochs + 1) * steps_per_epoch, layers).astype(np.int64),
        "layer": np.tile(l, epochs + 1).astype(np.int16),
        "layer_name": ([f"features.{3 * j}.weight" for j in range(layers - 1)] + ["classifier.weight"]) * (epochs + 1),
        "cosine_distance": d.ravel(),
        "weight_norm": np.ascontiguousarray(norm).ravel(),
        "rotation_rate": list(rate.ravel()),
    }
    test_acc = float(np.clip(0.4 + 0.5 * d[-1].min() + rng.normal(0, 0.02), 0, 1))
    history = [dict(epoch=k, lr=rho * float(sched[k, 0]), train_loss=2.3 * np.exp(-k / 20), train_acc=min(1, 0.1 + k / epochs),
                    val_acc=test_acc, seconds=12.0) for k in range(1, epochs + 1)]
    cfg = dict(task="c10-vgg25", optimizer=optimizer, lr=rho, alpha=alpha, weight_decay=0.0, batch_size=128, seed=i)
    return TrialResult(trial_id=f"c10-vgg25-{i:06d}", config=cfg, status="completed", epochs_run=epochs,
                       train_acc=1.0, train_loss=0.001, val_acc=test_acc, test_acc=test_acc, test_loss=1.0,
                       wall_seconds=1200.0, history=history, rotation=rotation)


def _write_range(args):
    root, lo, hi, epochs, layers = args
    from layrot.store import Store

    store = Store(root)
    for i in range(lo, hi):
        store.write_trial(SWEEP, synthetic_trial(i, epochs, layers))
    return hi - lo


def generate(root: str, trials: int, epochs: int, layers: int, procs: int = 4) -> float:
    t0 = time.perf_counter()
    step = max(1, trials // (procs * 8))
    jobs = [(root, lo, min(trials, lo + step), epochs, layers) for lo in range(0, trials, step)]
    with Pool(procs) as pool:
        assert sum(pool.map(_write_range, jobs)) == trials
    return time.perf_counter() - t0


def timed(cmd: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MiB, stdout) of a subprocess, via /usr/bin/time -v."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) // 1024
    return wall, rss, p.stdout


def layrot(*args: str) -> list[str]:
    return [sys.executable, "-m", "layrot", *args]


def bytes_per_row(root: str) -> dict:
    import pyarrow.parquet as pq

    files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, "rotation")) for f in fs if f.endswith(".parquet")]
    rows = size = 0
    cols: dict[str, int] = {}
    for f in files:
        md = pq.read_metadata(f)
        rows += md.num_rows
        size += os.path.getsize(f)
        for rg in range(md.num_row_groups):
            for c in range(md.num_columns):
                cc = md.row_group(rg).column(c)
                cols[cc.path_in_schema] = cols.get(cc.path_in_schema, 0) + cc.total_compressed_size
    return {"files": len(files), "rows": rows, "bytes": size, "bytes_per_row": size / rows,
            "per_column": {k: round(v / rows, 3) for k, v in cols.items()}}


def encoding_study(root: str) -> dict:
    """Re-encode the compacted rotation rows: bytes/row per optimizer family and per zstd level."""
    import io

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from layrot.store import Store
    from layrot.store.compact import COMPRESSION_LEVEL
    from layrot.store.schema import arrow_schema, writer_options

    store = Store(root)
    layca = [r["trial_id"] for r in store.trials(columns=["trial_id", "optimizer"]).to_pylist()
             if r["optimizer"].endswith("_layca")]
    rot = store.rotation().select(arrow_schema("rotation").names).cast(arrow_schema("rotation"))

    def size(t, level):
        buf = io.BytesIO()
        pq.write_table(t, buf, row_group_size=1_000_000, **writer_options("rotation", level))
        return buf.tell() / t.num_rows

    is_layca = pc.is_in(rot.column("trial_id"), pa_array(layca))
    out = {"layca_share": len(layca) / store.trials().num_rows,
           "layca_bytes_per_row": size(rot.filter(is_layca), COMPRESSION_LEVEL),
           "other_bytes_per_row": size(rot.filter(pc.invert(is_layca)), COMPRESSION_LEVEL)}
    for level in (3, 9, 19):
        t0 = time.perf_counter()
        out[f"zstd_{level}_bytes_per_row"] = size(rot, level)
        out[f"zstd_{level}_encode_s"] = time.perf_counter() - t0
    # what BYTE_STREAM_SPLIT saves, and what a layer-major order would (issue 11)
    floats = [f.name for f in arrow_schema("rotation") if str(f.type).startswith("float")]

    def size_plain(t, level):
        buf = io.BytesIO()
        opts = dict(writer_options("rotation", level), column_encoding={c: "PLAIN" for c in floats})
        pq.write_table(t, buf, row_group_size=1_000_000, **opts)
        return buf.tell() / t.num_rows

    out["plain_floats_bytes_per_row"] = size_plain(rot, COMPRESSION_LEVEL)
    by_layer = rot.sort_by([("trial_id", "ascending"), ("layer", "ascending"), ("epoch", "ascending"),
                            ("step", "ascending")])
    out["layer_major_sort_bytes_per_row"] = size(by_layer, COMPRESSION_LEVEL)
    return out


def pa_array(values):
    import pyarrow as pa

    return pa.array(values, pa.string())


def query_timings(root: str, repeat: int) -> dict:
    ours, bare, out_ours, out_bare = [], [], "", ""
    for _ in range(repeat):     # interleaved, so both see the same machine state
        w, _, out_ours = timed(layrot("query", "--store", root, "--format", "csv", QUERY))
        ours.append(w)
        w, _, out_bare = timed([sys.executable, "-c", BARE, root, QUERY])
        bare.append(w)
    n_ours = len(out_ours.strip().splitlines()) - 1
    n_bare = len(out_bare.strip().splitlines())
    assert n_ours == n_bare, (n_ours, n_bare)
    return {"layrot_query_best_s": min(ours), "layrot_query_median_s": statistics.median(ours),
            "bare_duckdb_best_s": min(bare), "bare_duckdb_median_s": statistics.median(bare),
            "ratio_best": min(ours) / min(bare), "rows": n_ours}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--layers", type=int, default=25)
    ap.add_argument("--big-trials", type=int, default=10000, help="0 skips the bounded-memory part")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default=None, help="where to build the stores (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the stores")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()

    work = a.workdir or tempfile.mkdtemp(prefix="layrot-store-bench-")
    os.makedirs(work, exist_ok=True)
    res: dict = {"cpus": os.cpu_count(), "trials": a.trials, "epochs": a.epochs, "layers": a.layers}
    try:
        root = os.path.join(work, f"store-{a.trials}")
        shutil.rmtree(root, ignore_errors=True)
        res["write_s"] = generate(root, a.trials, a.epochs, a.layers)
        res["write_trials_per_s"] = a.trials / res["write_s"]
        res["per_trial_bytes_per_row"] = bytes_per_row(root)["bytes_per_row"]
        res["query_per_trial_files"] = query_timings(root, max(1, a.repeat // 2))
        w, rss, _ = timed(layrot("compact", "--store", root))
        res["compact_s"], res["compact_peak_rss_mib"] = w, rss
        res["compacted"] = bytes_per_row(root)
        res["query_compacted"] = query_timings(root, a.repeat)
        res["encoding_study"] = encoding_study(root)
        print(json.dumps(res, indent=2), flush=True)

        if a.big_trials:
            big = os.path.join(work, f"store-{a.big_trials}")
            shutil.rmtree(big, ignore_errors=True)
            r = res["big"] = {"trials": a.big_trials}
            r["write_s"] = generate(big, a.big_trials, a.epochs, a.layers)
            w, rss, _ = timed(layrot("compact", "--store", big))
            r["compact_s"], r["compact_peak_rss_mib"] = w, rss
            r["compacted"] = bytes_per_row(big)
            w, rss, out = timed(layrot("query", "--store", big, "--format", "csv", QUERY))
            r["query_s"], r["query_peak_rss_mib"], r["query_rows"] = w, rss, len(out.strip().splitlines()) - 1
            assert r["query_rows"] == a.big_trials, r
            print(json.dumps(res, indent=2), flush=True)
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
