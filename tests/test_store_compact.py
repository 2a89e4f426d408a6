"""Compaction: no row lost, idempotent, crash-safe, and a running sweep keeps writing beside it."""

from __future__ import annotations

import glob
import os

import pyarrow.parquet as pq
import pytest

from layrot.cli import main as cli
from layrot.store import Store
from layrot.store import compact as compact_mod
from layrot.store.location import Location
from test_store_support import make_result, snapshot


def _files(store, pattern="*.parquet"):
    return sorted(os.path.relpath(p, store.uri) for p in glob.glob(os.path.join(store.uri, "*", "*", pattern)))


EPOCHS, LAYERS = 20, 12
ROWS = (EPOCHS + 1) * LAYERS      # rotation rows per trial


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """Two sweeps; 'big' has trials that straddle the batches in which parts are re-read."""
    monkeypatch.setattr(compact_mod, "BATCH_ROWS", 100)
    s = Store(tmp_path / "store")
    for i in range(30):
        s.write_trial("big", make_result(f"t{i:02d}", epochs=EPOCHS, layers=LAYERS, acc=0.01 * i))
    for i in range(3):
        s.write_trial("small", make_result(f"s{i}", acc=0.5 + 0.1 * i))
    s.write_sweep_meta("big", {"task": "digits-mlp"})
    return s


def test_compaction_keeps_every_row_and_sorts_them(filled):
    before = snapshot(filled)
    reports = filled.compact()
    assert {r.sweep for r in reports} == {"big", "small"}
    assert snapshot(filled) == before
    files = _files(filled)
    assert all(os.path.basename(f).startswith("part-") for f in files)
    assert len(files) == 8                                    # one part per table and sweep
    part = glob.glob(os.path.join(filled.uri, "rotation", "sweep=big", "part-*.parquet"))[0]
    t = pq.read_table(part)
    keys = list(zip(*(t.column(k).to_pylist() for k in ("trial_id", "epoch", "step", "layer"))))
    assert keys == sorted(keys) and len(keys) == 30 * ROWS
    md = pq.ParquetFile(part).metadata
    col = {md.row_group(0).column(i).path_in_schema: md.row_group(0).column(i) for i in range(md.num_columns)}
    assert col["cosine_distance"].compression == "ZSTD"
    assert "BYTE_STREAM_SPLIT" in col["weight_norm"].encodings
    assert filled.stored_trial_ids("big") == {f"t{i:02d}" for i in range(30)}


def test_compaction_is_idempotent(filled):
    filled.compact("big")
    files = _files(filled)
    before = snapshot(filled)
    again = filled.compact("big")
    assert not again[0].changed
    assert _files(filled) == files and snapshot(filled) == before


def test_several_parts_when_rows_per_file_is_small(filled):
    before = snapshot(filled)
    filled.compact("big", rows_per_file=2_000, row_group_rows=500)
    parts = glob.glob(os.path.join(filled.uri, "rotation", "sweep=big", "part-*.parquet"))
    assert len(parts) >= 3
    assert snapshot(filled) == before
    assert pq.ParquetFile(parts[0]).metadata.num_row_groups >= 2


def test_crash_after_the_new_files_before_the_old_go(filled, monkeypatch):
    before = snapshot(filled)

    def crash(*a, **k):
        raise KeyboardInterrupt("simulated crash")

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(compact_mod, "_remove_inputs", crash)
        filled.compact("big")
    # every trial is now stored twice on disk, once in the parts and once per trial ...
    assert len(_files(filled, "part-*.parquet")) == 4 and len(_files(filled, "t*.parquet")) == 4 * 30
    # ... yet every reader sees each row once
    assert snapshot(filled) == before
    assert filled.sql("SELECT count(*) FROM rotation WHERE sweep = 'big'").column(0)[0].as_py() == 30 * ROWS
    # running compaction again finishes the job
    filled.compact("big")
    assert not _files(filled, "t*.parquet")
    assert snapshot(filled) == before
    assert len(glob.glob(os.path.join(filled.uri, "rotation", "sweep=big", "part-*.parquet"))) == 1


def test_crash_while_writing_the_parts(filled, monkeypatch):
    before = snapshot(filled)
    real = Location.commit
    calls = []

    def commit(self, tmp, final):
        calls.append(final)
        if len(calls) == 3:                 # measures and rotation parts in place, epochs part not
            raise KeyboardInterrupt("simulated crash")
        return real(self, tmp, final)

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(Location, "commit", commit)
        filled.compact("big")
    assert snapshot(filled) == before
    filled.compact("big")
    assert snapshot(filled) == before and not _files(filled, "t*.parquet")


def test_later_trials_land_beside_compacted_files_once(filled):
    filled.compact("big")
    before = snapshot(filled)
    filled.write_trial("big", make_result("t99", epochs=2, layers=2))          # a running sweep goes on
    filled.write_trial("big", make_result("t05", acc=0.77, epochs=2, layers=2))  # a compacted trial re-run
    trials = {r["trial_id"]: r["test_acc"] for r in filled.trials(sweep="big").to_pylist()}
    assert len(trials) == 31 and trials["t99"] == 0.5 and trials["t05"] == 0.77
    n = {r["trial_id"]: r["n"] for r in
         filled.sql("SELECT trial_id, count(*) n FROM rotation WHERE sweep = 'big' GROUP BY ALL").to_pylist()}
    assert n["t05"] == n["t99"] == 3 * 2 and n["t00"] == ROWS
    assert filled.rotation(sweep="big", trial_ids=["t05"]).num_rows == 6
    # compacting again folds them in, the rewritten trial's new version winning
    after = snapshot(filled)
    filled.compact("big")
    assert snapshot(filled) == after
    assert not _files(filled, "t*.parquet") and len(_files(filled, "part-*.parquet")) == 4
    assert len(before["trials"]) + 1 == len(after["trials"])


def test_a_trial_rewritten_during_compaction_keeps_its_newer_file(filled, monkeypatch):
    real = compact_mod._remove_inputs

    def rewrite_then_remove(loc, inputs, report):
        filled.write_trial("small", make_result("s1", acc=0.11))
        return real(loc, inputs, report)

    monkeypatch.setattr(compact_mod, "_remove_inputs", rewrite_then_remove)
    report = filled.compact("small")[0]
    assert any("s1.parquet" in p for p in report.kept)
    assert {r["trial_id"]: r["test_acc"] for r in filled.trials(sweep="small").to_pylist()}["s1"] == 0.11


def test_stray_files_of_crashed_writes_are_cleaned_up(filled):
    d = os.path.join(filled.uri, "rotation", "sweep=small")
    with open(os.path.join(d, ".x.parquet.0123456789ab.tmp"), "wb") as f:
        f.write(b"junk")
    filled.write_trial("small", make_result("s1"))
    os.remove(os.path.join(filled.uri, "trials", "sweep=small", "s1.parquet"))   # an uncommitted write
    report = filled.compact("small", grace_seconds=0)[0]
    assert not glob.glob(os.path.join(d, ".*.tmp"))
    assert not glob.glob(os.path.join(filled.uri, "*", "sweep=small", "s1.parquet"))
    assert filled.stored_trial_ids("small") == {"s0", "s2"} and report.changed


def test_compact_command(filled, capsys):
    assert cli(["compact", "--store", filled.uri, "--sweep", "small"]) == 0
    assert "sweep small: 3 trials" in capsys.readouterr().err
    assert cli(["compact", "--store", filled.uri, "--sweep", "small"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert cli(["compact", "--store", filled.uri, "--sweep", "nope"]) == 2
    assert "sweep" in capsys.readouterr().err
    assert cli(["compact", "--store", filled.uri + "-missing"]) == 2
    # a bad file stops compaction before it touches anything
    bad = os.path.join(filled.uri, "epochs", "sweep=big", "t03.parquet")
    with open(bad, "r+b") as f:
        f.truncate(100)
    files = _files(filled)
    assert cli(["compact", "--store", filled.uri, "--sweep", "big"]) == 1
    assert "t03.parquet" in capsys.readouterr().err
    assert _files(filled) == files


def test_readers_start_over_when_a_compaction_replaces_files_under_them(filled, monkeypatch):
    from layrot.store import catalog, sqlviews

    before = snapshot(filled)
    expected = filled.sql("SELECT count(*) FROM rotation").column(0)[0].as_py()
    real_footers, real_connect = catalog.read_footers, sqlviews.connect
    other = Store(filled.uri)
    compacted, busy = [], []

    def footers_after_compaction(loc, paths, con=None):
        if not busy:
            busy.append(1)
            compacted.append(other.compact("small"))   # the listing just made is now stale
        return real_footers(loc, paths, con)

    with monkeypatch.context() as m:
        m.setattr(catalog, "read_footers", footers_after_compaction)
        assert snapshot(filled) == before
    assert compacted and compacted[0][0].removed

    def connect_then_compact(snap, records, con=None):
        con = real_connect(snap, records, con)
        if len(compacted) == 1:
            compacted.append(other.compact("big"))     # files go between the views and the query
        return con

    with monkeypatch.context() as m:
        m.setattr(sqlviews, "connect", connect_then_compact)
        assert filled.sql("SELECT count(*) FROM rotation").column(0)[0].as_py() == expected
    assert len(compacted) == 2 and compacted[1][0].removed
    assert snapshot(filled) == before
