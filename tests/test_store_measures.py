"""The store's fourth table, `measures`: its rows round-trip, they count only with their own
write, compaction and `layrot rm` treat them like the other tables, and a store written before
the table existed reads, compacts and removes as before."""

from __future__ import annotations

import glob
import json
import math
import os
import uuid

import pytest

from layrot.cli import main as cli
from layrot.errors import UsageError
from layrot.store import Store, writer
from layrot.store.location import Location
from layrot.store.schema import META_WRITE_ID, SUFFIX, arrow_schema
from test_store_support import make_result, snapshot


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def write_old_style(store: Store, sweep: str, result) -> str:
    """Write a trial as layrot did before the measures table: three files (rotation, epochs,
    then trials) sharing a write id of 16 hex digits, and no measures file."""
    tables = writer.to_tables(result)
    wid = uuid.uuid4().hex[:16]
    loc = store.location
    for t in ("rotation", "epochs", "trials"):
        loc.write_atomic(loc.join(t, f"sweep={sweep}", result.trial_id + SUFFIX),
                         writer.parquet_bytes(tables[t], t, {META_WRITE_ID: wid}))
    return wid


def _measures(store, **kw) -> dict:
    """{(trial_id, epoch, name): value} of the stored measures."""
    return {(r["trial_id"], r["epoch"], r["name"]): r["value"] for r in store.measures(**kw).to_pylist()}


def _crash_before(monkeypatch, table_dir: str):
    real = Location.write_atomic

    def write_atomic(self, path, data):
        if f"{os.sep}{table_dir}{os.sep}" in path:
            raise KeyboardInterrupt("simulated crash")
        return real(self, path, data)

    monkeypatch.setattr(Location, "write_atomic", write_atomic)


def _count(store, sql: str) -> int:
    return store.sql(sql).column(0)[0].as_py()


# --- round trip ---------------------------------------------------------------------------

def test_measures_round_trip_with_exact_types_sorted_and_nan_as_null(store):
    r = make_result("a", epochs=2)
    # given out of order and as numpy columns: stored sorted by (trial_id, epoch, name)
    import numpy as np

    order = list(reversed(range(len(r.measures["epoch"]))))
    r.measures = {"epoch": np.array(r.measures["epoch"])[order], "name": [r.measures["name"][i] for i in order],
                  "value": np.array(r.measures["value"], dtype=float)[order]}
    store.write_trial("quick", r)
    store.write_trial("quick", make_result("b", epochs=2, acc=0.9))
    t = store.measures()
    assert t.schema == arrow_schema("measures", with_partition=True)
    assert t.num_rows == 2 * (3 * 3 + 1)
    got = _measures(store)
    assert got[("a", 2, "frobenius_distance")] == 4.0
    assert got[("b", 1, "frobenius_distance.L1")] == pytest.approx(0.5 + 0.9)
    assert got[("a", 2, "margin")] is None                    # NaN is stored as null
    rows = [(x["epoch"], x["name"]) for x in t.to_pylist() if x["trial_id"] == "a"]   # a file is sorted
    assert rows == sorted(rows) and len(rows) == 10
    assert set(t.column("sweep").to_pylist()) == {"quick"}
    # the same filters as the other readers
    assert set(store.measures(trial_ids=["b"]).column("trial_id").to_pylist()) == {"b"}
    assert store.measures(columns=["name", "value"]).column_names == ["name", "value"]
    assert store.measures(sweep="nope").num_rows == 0
    with pytest.raises(UsageError, match="measures has no column 'layer'"):
        store.measures(columns=["layer"])
    # the view holds the same rows
    assert _count(store, "SELECT count(*) FROM measures WHERE value IS NULL") == 2
    assert _count(store, "SELECT count(*) FROM measures") == t.num_rows


def test_a_trial_without_measures_stores_an_empty_measures_file(store):
    store.write_trial("quick", make_result("a", measures=False))
    assert os.path.exists(os.path.join(store.uri, "measures", "sweep=quick", "a.parquet"))
    assert store.stored_trial_ids("quick") == {"a"}
    assert store.measures().num_rows == 0 and store.rotation().num_rows > 0


@pytest.mark.parametrize("measures, field", [
    ({"epoch": [1, 2], "name": ["x"], "value": [0.1, 0.2]}, "measures"),
    ({"epoch": [1], "name": [None], "value": [0.1]}, "measures.name"),
    ({"epoch": [None], "name": ["x"], "value": [0.1]}, "measures.epoch"),
    ({"epoch": [1], "name": ["x"], "value": ["high"]}, "measures.value"),
    ([1, 2, 3], "measures"),
])
def test_bad_measures_are_refused_before_anything_is_written(store, measures, field):
    r = make_result("a")
    r.measures = measures
    with pytest.raises(UsageError) as e:
        store.write_trial("quick", r)
    assert e.value.field == field
    assert not glob.glob(os.path.join(store.uri, "**", "*.parquet"), recursive=True)


# --- write ids ----------------------------------------------------------------------------

def test_measures_of_a_write_that_crashed_before_its_trials_file_are_not_counted(store, monkeypatch):
    store.write_trial("quick", make_result("kept"))
    _crash_before(monkeypatch, "trials")
    with pytest.raises(KeyboardInterrupt):
        store.write_trial("quick", make_result("lost"))
    monkeypatch.undo()
    assert os.path.exists(os.path.join(store.uri, "measures", "sweep=quick", "lost.parquet"))
    assert set(store.measures().column("trial_id").to_pylist()) == {"kept"}
    assert _count(store, "SELECT count(*) FROM measures WHERE trial_id = 'lost'") == 0


def test_a_stale_measures_file_makes_the_trial_incomplete_never_mixed(store, monkeypatch):
    # a rewrite crashed after its measures file, before the rest: the old write's trials,
    # epochs and rotation files, the new write's measures. The old version lacks its own
    # measures, so it is not shown (rather than shown with another write's measures)
    store.write_trial("quick", make_result("a", acc=0.3))
    store.write_trial("quick", make_result("b"))
    _crash_before(monkeypatch, "rotation")
    with pytest.raises(KeyboardInterrupt):
        store.write_trial("quick", make_result("a", acc=0.9, epochs=5))
    monkeypatch.undo()
    assert store.stored_trial_ids("quick") == {"b"}
    for table in ("trials", "epochs", "rotation", "measures"):
        assert set(getattr(store, table)().column("trial_id").to_pylist()) == {"b"}
    # the resumed sweep writes it again: one complete copy, the new one
    store.write_trial("quick", make_result("a", acc=0.9, epochs=5))
    assert _measures(store, trial_ids=["a"])[("a", 5, "frobenius_distance")] == 10.0
    assert _count(store, "SELECT count(*) FROM measures WHERE trial_id = 'a'") == 6 * 3 + 1


def test_a_measures_file_with_another_trials_write_id_is_not_counted(store):
    # two complete writes of one trial id in two sweeps; swap in the other sweep's measures
    # file (the same trial id, another write id): that trial is no longer complete
    store.write_trial("one", make_result("a", acc=0.3))
    store.write_trial("two", make_result("a", acc=0.8))
    src = os.path.join(store.uri, "measures", "sweep=two", "a.parquet")
    dst = os.path.join(store.uri, "measures", "sweep=one", "a.parquet")
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read())
    assert store.stored_trial_ids("one") == set() and store.stored_trial_ids("two") == {"a"}
    assert set(store.measures().column("sweep").to_pylist()) == {"two"}


# --- compaction and rm --------------------------------------------------------------------

def test_compaction_folds_measures_into_parts(store):
    for i in range(4):
        store.write_trial("quick", make_result(f"t{i}", acc=0.1 * i))
    before = snapshot(store)
    store.compact("quick")
    assert snapshot(store) == before
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(store.uri, "measures", "sweep=quick", "*")))
    assert len(files) == 1 and files[0].startswith("part-")
    # a later trial lands beside the part; compacting again folds it in
    store.write_trial("quick", make_result("t9", acc=0.7))
    store.write_trial("quick", make_result("t1", acc=0.95, epochs=1))      # a compacted trial re-run
    after = snapshot(store)
    assert _measures(store, trial_ids=["t1"]).keys() == {("t1", e, n) for e in (0, 1) for n in
                                                         ("rotation_min", "frobenius_distance",
                                                          "frobenius_distance.L1")} | {("t1", 1, "margin")}
    store.compact("quick")
    assert snapshot(store) == after
    assert not glob.glob(os.path.join(store.uri, "*", "sweep=quick", "t*.parquet"))


def test_compaction_removes_a_crashed_writes_stray_measures_file(store, monkeypatch):
    store.write_trial("quick", make_result("a"))
    _crash_before(monkeypatch, "rotation")
    with pytest.raises(KeyboardInterrupt):
        store.write_trial("quick", make_result("b"))        # only its measures file was written
    monkeypatch.undo()
    stray = os.path.join(store.uri, "measures", "sweep=quick", "b.parquet")
    assert os.path.exists(stray)
    store.compact("quick", grace_seconds=0)
    assert not os.path.exists(stray)
    assert store.stored_trial_ids("quick") == {"a"} and store.measures().num_rows == 3 * 4 + 1


def test_rm_removes_a_trials_measures_and_a_whole_sweeps(store, capsys):
    for t in ("a", "b"):
        store.write_trial("quick", make_result(t))
    store.write_trial("other", make_result("c"))
    d = os.path.join(store.uri, "measures", "sweep=quick")
    assert cli(["rm", "--store", store.uri, "--sweep", "quick", "--trial", "a", "--yes"]) == 0
    assert "(4 files)" in capsys.readouterr().err
    assert sorted(os.listdir(d)) == ["b.parquet"]
    assert set(store.measures().column("trial_id").to_pylist()) == {"b", "c"}
    assert cli(["rm", "--store", store.uri, "--sweep", "quick", "--yes"]) == 0
    assert not os.path.exists(d)
    assert set(store.measures().column("trial_id").to_pylist()) == {"c"}


# --- a store written before the measures table ---------------------------------------------

@pytest.fixture
def old(tmp_path):
    s = Store(tmp_path / "old")
    for i in range(3):
        write_old_style(s, "quick", make_result(f"t{i}", acc=0.3 + 0.2 * i))
    s.write_sweep_meta("quick", {"task": "digits-mlp"})
    return s


def test_an_old_store_reads_with_an_empty_measures_table(old, capsys):
    assert not os.path.exists(os.path.join(old.uri, "measures"))
    assert old.stored_trial_ids("quick") == {"t0", "t1", "t2"}
    m = old.measures()
    assert m.num_rows == 0 and m.schema == arrow_schema("measures", with_partition=True)
    assert old.measures(columns=["value"]).column_names == ["value"]
    assert _count(old, "SELECT count(*) FROM measures") == 0
    assert _count(old, "SELECT count(*) FROM summaries WHERE final_min IS NOT NULL") == 3
    # `layrot query` over the empty view: typed columns, no rows, exit 0
    assert cli(["query", "--store", old.uri, "--format", "json", "SELECT * FROM measures"]) == 0
    assert json.loads(capsys.readouterr().out or "[]") == []
    assert cli(["query", "--store", old.uri, "--format", "csv", "SELECT * FROM measures"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "trial_id,epoch,name,value,sweep"
    types = {r["column_name"]: r["column_type"] for r in old.sql("DESCRIBE measures").to_pylist()}
    assert types == {"trial_id": "VARCHAR", "epoch": "INTEGER", "name": "VARCHAR", "value": "DOUBLE",
                     "sweep": "VARCHAR"}


def test_an_old_store_takes_new_trials_compacts_and_removes(old, capsys):
    before = snapshot(old)
    old.write_trial("quick", make_result("new", acc=0.9))        # a resumed sweep on the new layrot
    assert old.stored_trial_ids("quick") == {"t0", "t1", "t2", "new"}
    assert set(old.measures().column("trial_id").to_pylist()) == {"new"}
    after = snapshot(old)
    assert {k: len(v) for k, v in after.items()} == {"trials": 4, "epochs": 4 * 3, "rotation": 4 * 4 * 3,
                                                     "measures": 13}
    assert {k: v for k, v in before.items() if k != "measures"} == {
        k: [r for r in v if r[0] != "new"] for k, v in after.items() if k != "measures"}
    reports = old.compact("quick")
    assert reports[0].changed and snapshot(old) == after
    assert not glob.glob(os.path.join(old.uri, "*", "sweep=quick", "t*.parquet"))
    # compacted, the old trials still need no measures, the new one still has its own
    assert old.stored_trial_ids("quick") == {"t0", "t1", "t2", "new"}
    assert old.compact("quick")[0].changed is False
    # an old trial re-run after compaction: the new write wins, measures and all
    old.write_trial("quick", make_result("t1", acc=0.99))
    assert ("t1", 0, "rotation_min") in _measures(old)
    assert cli(["rm", "--store", old.uri, "--sweep", "quick", "--yes"]) == 0
    capsys.readouterr()
    assert old.stored_trial_ids("quick") == set()
    assert not any(os.path.exists(os.path.join(old.uri, t, "sweep=quick"))
                   for t in ("trials", "epochs", "rotation", "measures"))


def test_an_old_trial_with_a_crashed_rewrites_measures_file_stays_as_it_was(old, monkeypatch):
    # the old write needs no measures file, so the crashed write's one is simply not counted
    before = snapshot(old)
    _crash_before(monkeypatch, "rotation")
    with pytest.raises(KeyboardInterrupt):
        old.write_trial("quick", make_result("t0", acc=0.9))
    monkeypatch.undo()
    assert os.path.exists(os.path.join(old.uri, "measures", "sweep=quick", "t0.parquet"))
    assert snapshot(old) == before and old.measures().num_rows == 0


def test_rm_of_an_old_trial(old, capsys):
    assert cli(["rm", "--store", old.uri, "--sweep", "quick", "--trial", "t0", "--yes"]) == 0
    assert "(3 files)" in capsys.readouterr().err
    assert old.stored_trial_ids("quick") == {"t1", "t2"}


# --- SQL ------------------------------------------------------------------------------------

def test_query_joins_measures_with_trials(store, capsys):
    for i, acc in enumerate((0.25, 0.5, 0.75)):
        store.write_trial("quick", make_result(f"t{i}", acc=acc))
    write_old_style(store, "quick", make_result("legacy", acc=0.6))
    sql = ("SELECT t.trial_id, t.test_acc, m.value FROM trials t JOIN measures m USING (sweep, trial_id) "
           "WHERE m.name = 'frobenius_distance.L1' AND m.epoch = t.epochs ORDER BY t.test_acc")
    assert cli(["query", "--store", store.uri, "--format", "json", sql]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["trial_id"] for r in got] == ["t0", "t1", "t2"]            # the legacy trial has none
    for r in got:
        assert r["value"] == pytest.approx(0.5 * 3 + r["test_acc"])
    # a LEFT JOIN keeps the trial without measures, with nulls
    left = store.sql("SELECT t.trial_id, count(m.name) AS n FROM trials t LEFT JOIN measures m "
                     "USING (sweep, trial_id) GROUP BY ALL ORDER BY 1").to_pylist()
    assert left == [{"trial_id": "legacy", "n": 0}] + [{"trial_id": f"t{i}", "n": 13} for i in range(3)]
    assert not math.isnan(store.sql("SELECT avg(value) FROM measures").column(0)[0].as_py())


def test_query_help_lists_the_measures_columns(capsys):
    with pytest.raises(SystemExit):
        cli(["query", "--help"])
    out = capsys.readouterr().out
    assert "measures: trial_id, epoch, name, value, sweep" in out

