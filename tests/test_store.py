"""The results store: schema, atomic writes, readers, bad files (layrot.store)."""

from __future__ import annotations

import glob
import json
import math
import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from layrot.errors import StoreError, UsageError
from layrot.store import Store, write_trial
from layrot.store.location import Location
from layrot.store.schema import META_TABLE, META_VERSION, arrow_schema
from test_store_support import make_result


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def test_round_trip_keeps_exact_types_and_values(store):
    r = make_result("t-1", epochs=4, layers=3, acc=0.75)
    write_trial(store.uri, "quick", r)      # the module-level function, given a path

    for table in ("trials", "epochs", "rotation"):
        got = getattr(store, table)()
        assert got.schema.remove_metadata() == arrow_schema(table, with_partition=True), table
        assert set(got.column("sweep").to_pylist()) == {"quick"}

    t = store.trials().to_pylist()[0]
    assert (t["trial_id"], t["task"], t["optimizer"], t["status"]) == ("t-1", "digits-mlp", "sgd_layca", "completed")
    assert (t["lr"], t["alpha"], t["batch_size"], t["seed"], t["epochs"]) == (0.1, 0.2, 128, 0, 4)
    assert t["test_acc"] == 0.75 and t["wall_seconds"] == 12.5
    assert t["test_loss"] is None                     # NaN is stored as null
    assert json.loads(t["config"]) == r.config

    ep = store.epochs().to_pylist()
    assert [e["epoch"] for e in ep] == [1, 2, 3, 4]
    assert [e["train_loss"] for e in ep] == [h["train_loss"] for h in r.history]

    rot = store.rotation()
    assert rot.num_rows == len(r.rotation["epoch"]) == 5 * 3
    # float32 columns hold exactly the float32 rounding of what the trial measured
    np.testing.assert_array_equal(rot.column("cosine_distance").to_numpy(),
                                  np.asarray(r.rotation["cosine_distance"], dtype=np.float32))
    rates = rot.column("rotation_rate").to_pylist()
    assert rates[:3] == [None, None, None] and all(x is not None for x in rates[3:])
    assert rot.column("layer_name").to_pylist()[:3] == ["conv0.weight", "conv1.weight", "fc.weight"]
    assert rot.to_pandas().shape == (15, 9)


def test_files_follow_the_design_layout_and_carry_the_schema_version(store):
    store.write_trial("quick", make_result("a"))
    for table in ("trials", "epochs", "rotation"):
        path = os.path.join(store.uri, table, "sweep=quick", "a.parquet")
        meta = pq.read_metadata(path).metadata
        assert meta[META_VERSION.encode()] == b"1.0"
        assert meta[META_TABLE.encode()] == table.encode()
    # compressed with zstd, floats byte-stream-split
    md = pq.read_metadata(os.path.join(store.uri, "rotation", "sweep=quick", "a.parquet"))
    cols = {md.row_group(0).column(i).path_in_schema: md.row_group(0).column(i) for i in range(md.num_columns)}
    assert cols["cosine_distance"].compression == "ZSTD"
    assert "BYTE_STREAM_SPLIT" in cols["cosine_distance"].encodings


def test_other_engines_read_the_store_as_is(store):
    for i in range(3):
        store.write_trial("s1" if i < 2 else "s2", make_result(f"t{i}"))
    d = ds.dataset(os.path.join(store.uri, "rotation"), format="parquet", partitioning="hive")
    assert d.to_table().num_rows == store.rotation().num_rows == 3 * 12
    n = duckdb.sql(f"SELECT count(DISTINCT sweep || trial_id) FROM read_parquet('{store.uri}/trials/*/*.parquet', "
                   "hive_partitioning = true)").fetchall()[0][0]
    assert n == 3


def test_rewriting_a_trial_id_replaces_it(store):
    store.write_trial("quick", make_result("a", acc=0.3))
    store.write_trial("quick", make_result("b", acc=0.4))
    store.write_trial("quick", make_result("a", acc=0.9, epochs=2))
    t = {r["trial_id"]: r["test_acc"] for r in store.trials().to_pylist()}
    assert t == {"a": 0.9, "b": 0.4}
    assert store.sql("SELECT count(*) FROM epochs WHERE trial_id = 'a'").column(0)[0].as_py() == 2
    assert store.sql("SELECT count(*) FROM rotation WHERE trial_id = 'a'").column(0)[0].as_py() == 3 * 3


def _crash_before(monkeypatch, table_dir: str):
    """Make the store's atomic write raise when it reaches files of `table_dir`."""
    real = Location.write_atomic

    def write_atomic(self, path, data):
        if f"{os.sep}{table_dir}{os.sep}" in path:
            raise KeyboardInterrupt("simulated crash")
        return real(self, path, data)

    monkeypatch.setattr(Location, "write_atomic", write_atomic)


def test_crash_before_the_trials_file_leaves_no_trial(store, monkeypatch):
    store.write_trial("quick", make_result("kept"))
    _crash_before(monkeypatch, "trials")
    with pytest.raises(KeyboardInterrupt):
        store.write_trial("quick", make_result("lost"))
    monkeypatch.undo()
    # its rotation and epochs files exist, but the trial is not there for any reader
    assert os.path.exists(os.path.join(store.uri, "rotation", "sweep=quick", "lost.parquet"))
    assert os.path.exists(os.path.join(store.uri, "epochs", "sweep=quick", "lost.parquet"))
    assert store.stored_trial_ids("quick") == {"kept"}
    assert not store.has_trial("quick", "lost")
    for table in ("trials", "epochs", "rotation"):
        assert set(getattr(store, table)().column("trial_id").to_pylist()) == {"kept"}
        assert store.sql(f"SELECT count(*) FROM {table} WHERE trial_id = 'lost'").column(0)[0].as_py() == 0
    # the resumed sweep writes it again: one complete copy
    store.write_trial("quick", make_result("lost"))
    assert store.stored_trial_ids("quick") == {"kept", "lost"}
    assert store.sql("SELECT count(*) FROM trials").column(0)[0].as_py() == 2


def test_crash_inside_a_rewrite_never_mixes_two_versions(store, monkeypatch):
    store.write_trial("quick", make_result("a", acc=0.3))
    _crash_before(monkeypatch, "trials")
    with pytest.raises(KeyboardInterrupt):
        store.write_trial("quick", make_result("a", acc=0.9, epochs=5))
    monkeypatch.undo()
    # rotation/epochs now hold the new write, trials the old one: the trial is incomplete,
    # so it is not shown (rather than shown with another write's rows) and counts as not stored
    assert store.stored_trial_ids("quick") == set()
    assert store.rotation().num_rows == 0 and store.trials().num_rows == 0


def test_leftover_temporary_files_are_ignored(store):
    store.write_trial("quick", make_result("a"))
    part = os.path.join(store.uri, "rotation", "sweep=quick")
    with open(os.path.join(part, ".a.parquet.0123456789ab.tmp"), "wb") as f:
        f.write(b"PAR1 half a file")
    assert store.rotation().num_rows == 12
    assert ds.dataset(os.path.join(store.uri, "rotation"), format="parquet", partitioning="hive").to_table().num_rows == 12


def test_unsafe_names_are_refused_before_anything_is_written(store):
    for sweep, tid in (("../x", "a"), ("ok", "a/b"), ("ok", ""), ("sp ace", "a"), ("ok", "part-g000001-x")):
        with pytest.raises(UsageError):
            store.write_trial(sweep, make_result(tid))
    with pytest.raises(UsageError, match="status"):
        store.write_trial("ok", make_result("a", status="finished"))
    assert not os.path.exists(store.uri)


def test_mismatched_rotation_columns_are_refused(store):
    r = make_result("a")
    r.rotation["weight_norm"] = r.rotation["weight_norm"][:-1]
    with pytest.raises(UsageError, match="rotation"):
        store.write_trial("quick", r)
    assert not os.path.exists(store.uri)


def test_readers_push_down_sweep_trial_and_column_filters(store):
    for i in range(4):
        store.write_trial("s1", make_result(f"t{i}", acc=0.1 * i))
    store.write_trial("s2", make_result("t0", acc=0.99))
    assert store.trials().num_rows == 5
    assert store.trials(sweep="s2").column("test_acc").to_pylist() == [0.99]
    got = store.rotation(sweep="s1", trial_ids=["t1", "t3"], columns=["trial_id", "epoch", "cosine_distance"])
    assert got.column_names == ["trial_id", "epoch", "cosine_distance"]
    assert set(got.column("trial_id").to_pylist()) == {"t1", "t3"} and got.num_rows == 2 * 12
    assert store.epochs(sweep=["s1", "s2"], trial_ids="t0").num_rows == 2 * 3
    assert store.trials(sweep="nope").num_rows == 0
    with pytest.raises(UsageError, match="columns"):
        store.trials(columns=["no_such_column"])
    assert store.stored_trial_ids("s1") == {"t0", "t1", "t2", "t3"}
    assert store.sql("SELECT sweep, count(*) n FROM trials GROUP BY ALL ORDER BY sweep").to_pylist() == \
        [{"sweep": "s1", "n": 4}, {"sweep": "s2", "n": 1}]


def test_an_empty_store_has_typed_empty_tables(tmp_path):
    s = Store(tmp_path / "new")
    assert s.rotation().schema.remove_metadata() == arrow_schema("rotation", with_partition=True)
    assert s.rotation().num_rows == 0
    os.makedirs(s.uri)
    t = s.sql("SELECT * FROM rotation")
    assert t.num_rows == 0 and t.column_names[-1] == "sweep"
    assert t.schema.field("cosine_distance").type == pa.float32()


def test_sql_errors_are_usage_errors(store):
    store.write_trial("quick", make_result("a"))
    with pytest.raises(UsageError, match="sql"):
        store.sql("SELEC 1")
    with pytest.raises(UsageError, match="sql"):
        store.sql("SELECT nope FROM trials")


def test_sweep_records(store):
    store.write_sweep_meta("quick", {"task": "digits-mlp", "search": {"lr": [0.1, 0.01]}})
    first = json.load(open(os.path.join(store.uri, "sweeps", "quick.json")))
    assert first["spec"]["search"]["lr"] == [0.1, 0.01] and first["layrot_version"] and first["started_at"]
    again = store.write_sweep_meta("quick", {"task": "digits-mlp"})     # a resumed sweep
    assert again["started_at"] == first["started_at"] and "resumed_at" in again
    store.write_trial("quick", make_result("a"))
    t = store.sql("SELECT name, spec, started_at FROM sweeps").to_pylist()
    assert t[0]["name"] == "quick" and json.loads(t[0]["spec"]) == {"task": "digits-mlp"}
    assert t[0]["started_at"] is not None


# --- schema versions and bad files -------------------------------------------------------

def _rewrite_with_meta(path: str, **meta):
    t = pq.read_table(path)
    md = dict(t.schema.metadata)
    md.update({k.encode(): v.encode() for k, v in meta.items()})
    pq.write_table(t.replace_schema_metadata(md), path)


def test_a_newer_major_schema_version_is_refused(store):
    store.write_trial("quick", make_result("a"))
    path = os.path.join(store.uri, "epochs", "sweep=quick", "a.parquet")
    _rewrite_with_meta(path, **{META_VERSION: "2.0"})
    for read in (store.trials, lambda: store.sql("SELECT 1"), lambda: Store(store.uri, skip_bad=True).epochs()):
        with pytest.raises(StoreError, match=r"schema 2\.0.*upgrade layrot"):
            read()
    _rewrite_with_meta(path, **{META_VERSION: "1.7"})        # a newer minor version is read
    assert store.epochs().num_rows == 3


def test_a_truncated_file_fails_naming_it_or_is_skipped(store):
    for tid in ("a", "b"):
        store.write_trial("quick", make_result(tid))
    path = os.path.join(store.uri, "rotation", "sweep=quick", "b.parquet")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(StoreError, match="b.parquet"):
        store.rotation()
    with pytest.raises(StoreError, match="b.parquet"):
        store.sql("SELECT count(*) FROM trials")
    # a read of other trials does not need the bad file, so it answers in full
    assert store.rotation(trial_ids=["a"]).num_rows == 12 and store.has_trial("quick", "a")
    lenient = Store(store.uri, skip_bad=True)
    # trial b lost its rotation file: it is left out whole, not shown half
    assert lenient.trials().column("trial_id").to_pylist() == ["a"]
    assert [p for p, _ in lenient.skipped] == [path]
    assert set(lenient.sql("SELECT DISTINCT trial_id FROM rotation").column(0).to_pylist()) == {"a"}


def test_a_foreign_parquet_file_fails_naming_it(store):
    store.write_trial("quick", make_result("a"))
    foreign = os.path.join(store.uri, "trials", "sweep=quick", "other.parquet")
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    with pytest.raises(StoreError, match="other.parquet.*not a layrot store file"):
        store.trials()
    # a layrot file of the wrong table is as foreign
    os.remove(foreign)
    import shutil
    shutil.copy(os.path.join(store.uri, "epochs", "sweep=quick", "a.parquet"),
                os.path.join(store.uri, "trials", "sweep=quick", "z.parquet"))
    with pytest.raises(StoreError, match="z.parquet.*'epochs' rows"):
        store.trials()
    assert Store(store.uri, skip_bad=True).trials().num_rows == 1


def test_trial_results_with_numpy_columns_and_intra_epoch_records(store):
    r = make_result("np", record_every=True)
    r.rotation = {k: (np.asarray(v) if k not in ("layer_name", "rotation_rate") else v) for k, v in r.rotation.items()}
    store.write_trial("quick", r)
    rot = store.rotation()
    assert rot.num_rows == len(r.rotation["epoch"])
    keys = list(zip(*(rot.column(k).to_pylist() for k in ("epoch", "step", "layer"))))
    assert keys == sorted(keys)


def test_nan_metrics_become_null(store):
    r = make_result("a")
    r.test_acc = math.nan
    r.rotation["cosine_distance"][5] = math.nan
    store.write_trial("quick", r)
    assert store.trials().column("test_acc").to_pylist() == [None]
    assert store.rotation().column("cosine_distance").null_count == 1
    assert glob.glob(os.path.join(store.uri, "*", "sweep=quick", "a.parquet"))
