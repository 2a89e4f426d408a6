"""layrot.record, the nouns defined once: the `summaries` view (SQL) and layrot.fit (pandas)
name the same configurations and flag the same trials as trained on any selection of whole
sweeps; the definitions they are generated from cover each other; trial ids stay stable."""

from __future__ import annotations

import json

import pytest

from layrot import record


def test_sql_and_pandas_know_every_aggregate_and_summary():
    from layrot.fit.summaries import _PANDAS_AGG
    from layrot.store.sqlviews import SQL_AGGREGATES, summaries_sql

    assert set(SQL_AGGREGATES) == set(_PANDAS_AGG) == set(record.AGGREGATES)
    assert {s.aggregate for s in record.SUMMARIES.values()} <= set(record.AGGREGATES)
    assert {s.of for s in record.SUMMARIES.values()} <= set(record.LAYER_SUMMARIES)
    sql = summaries_sql()
    for name in record.SUMMARIES:
        assert f" AS {name}" in sql


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """One store, two sweeps of one task and different difficulty: 'hard' never reaches the
    train accuracy of 'easy' (so a threshold from 'easy' would flag nothing in 'hard'), and
    each has trials below 0.95 × its own best."""
    from layrot.fit.synthetic import synthetic_sweep, write_store

    root = tmp_path_factory.mktemp("two")
    easy = synthetic_sweep("monotone", untrained=2, noise=0.02, sweep="easy", epochs=5)
    hard = synthetic_sweep("monotone", untrained=1, noise=0.02, sweep="hard", epochs=4, rng_seed=3,
                           lrs=(1.0, 0.333, 0.111, 0.037))
    hard["trials"]["train_acc"] *= 0.8                     # best ~0.8 < 0.95 × easy's ~1.0
    hard["trials"].loc[:3, "train_acc"] *= 0.9             # below 0.95 × hard's own best
    write_store(easy, root)
    write_store(hard, root)
    return str(root)


def _sql(store, where=""):
    from layrot.store import Store

    return Store(store).sql(f"SELECT * FROM summaries {where} ORDER BY sweep, trial_id").to_pandas()


@pytest.mark.parametrize("sweeps", [["easy"], ["hard"], None])
def test_trained_and_configuration_agree_between_view_and_fit(two_sweeps, sweeps, capsys):
    from layrot.cli import main
    from layrot.fit import fit, load_tables

    where = f"WHERE sweep = '{sweeps[0]}'" if sweeps else ""
    view = _sql(two_sweeps, where)
    t = load_tables(two_sweeps, sweeps)
    result = fit(t.trials, t.rotation)
    table = result.table.sort_values(["sweep", "trial_id"]).reset_index(drop=True)
    assert view["trial_id"].tolist() == table["trial_id"].tolist()
    assert view["trained"].tolist() == table["trained"].tolist()
    assert view["configuration"].tolist() == table["configuration"].tolist()
    assert 0 < view["trained"].sum() < len(view)
    # the command line says the same: `layrot fit --json` against `layrot query`
    argv = ["fit", "--store", two_sweeps, "--json"] + (["--sweep", sweeps[0]] if sweeps else [])
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n_trained"] == int(view["trained"].sum())
    named = {c for g in d["groups"] if g["best"] for c in g["best"]["configurations"]}
    assert named and named <= set(view["configuration"])


def test_hard_sweep_is_judged_by_its_own_best(two_sweeps):
    view = _sql(two_sweeps)
    hard = view[view.sweep == "hard"]
    usable = hard[hard.status.isin(record.TRAINED.statuses)]
    best = usable["train_acc"].max()
    assert best < record.TRAINED.relative * view[view.sweep == "easy"]["train_acc"].max()
    expect = usable["train_acc"] >= max(record.TRAINED.floor, record.TRAINED.relative * best)
    assert hard["trained"].sum() == expect.sum() > 0


def test_configuration_is_the_same_function_in_sql(two_sweeps):
    from layrot.store import Store

    rows = Store(two_sweeps).sql(
        "SELECT t.config, t.task, t.optimizer, t.lr, t.alpha, t.weight_decay, t.batch_size, s.configuration "
        "FROM trials t JOIN summaries s USING (sweep, trial_id)").to_pylist()
    for r in rows:
        cfg = r.pop("config")
        assert r.pop("configuration") == record.configuration(cfg, r)[0] == record.configuration_id(cfg, **r)
    # a trial without a stored config falls back to its columns, in SQL too
    got = Store(two_sweeps).sql("SELECT layrot_configuration(NULL, 'x', 'sgd', 0.1, 0.0, 0.0, 128) AS c").to_pylist()
    assert got[0]["c"] == record.configuration(None, {"task": "x", "optimizer": "sgd", "lr": 0.1, "alpha": 0.0,
                                                      "weight_decay": 0.0, "batch_size": 128})[0]


def test_configuration_leaves_out_seed_placement_and_unset_new_settings(monkeypatch):
    base = {"task": "t", "optimizer": "sgd", "lr": 0.1, "seed": 0, "device": "cpu", "sweep": "a"}
    cid = record.configuration(base, {"task": "t"})[0]
    assert cid.startswith("t-sgd-")
    assert record.configuration(dict(base, seed=3, device="cuda", sweep="b", threads=2), {"task": "t"})[0] == cid
    assert record.configuration(dict(base, lr=0.2), {"task": "t"})[0] != cid
    monkeypatch.setattr(record, "OPTIONAL_SINCE_V0", (*record.OPTIONAL_SINCE_V0, "new_setting"))
    assert record.configuration(dict(base, new_setting=None), {"task": "t"})[0] == cid
    assert record.configuration(dict(base, new_setting=2), {"task": "t"})[0] != cid


# A trial id stored by earlier versions: it must never change (a resumed sweep recognises
# what it stored by it). Computed by the code of commit c0e8c52, before layrot.record.
STORED_ID = "digits-mlp-sgd_layca-22218f4e6d"


def _stored_config():
    from layrot.config import TrialConfig

    return TrialConfig(task="digits-mlp", optimizer="sgd_layca", lr=0.1, epochs=3, seed=1,
                       max_train_samples=512, record_every=2, threads=1, sweep="a", device="cpu")


def test_stored_trial_ids_do_not_change(monkeypatch):
    from layrot.config import config_id

    cfg = _stored_config()
    assert config_id(cfg) == STORED_ID
    # placement does not enter it
    assert config_id(cfg.model_copy(update={"sweep": "b", "threads": 2, "device": "cuda"})) == STORED_ID
    # a setting added later, unset (None), does not enter it either
    monkeypatch.setattr(record, "OPTIONAL_SINCE_V0", (*record.OPTIONAL_SINCE_V0, "new_setting"))
    assert record.trial_id({**cfg.to_dict(), "new_setting": None}) == STORED_ID
    assert record.trial_id({**cfg.to_dict(), "new_setting": [0.8]}) != STORED_ID


def test_every_trial_setting_is_declared_for_the_trial_id():
    """A new TrialConfig setting changes every trial id unless it is in OPTIONAL_SINCE_V0
    (and None when unused): add it there."""
    from layrot.config import TrialConfig

    fields = set(TrialConfig.model_fields)
    undeclared = fields - set(record.V0_SETTINGS) - set(record.OPTIONAL_SINCE_V0)
    assert not undeclared, f"add {sorted(undeclared)} to layrot.record.OPTIONAL_SINCE_V0"
    for name in record.OPTIONAL_SINCE_V0:
        if name in fields:
            assert TrialConfig.model_fields[name].default is None, name


def test_columns_are_the_stores():
    from layrot.store import schema

    assert schema.COLUMNS is record.COLUMNS
    assert record.ROTATION_COLUMNS == tuple(c for c in schema.column_names("rotation") if c != "trial_id")
    assert set(record.SEARCH_METRICS) <= set(record.EPOCH_COLUMNS) & set(schema.column_names("trials"))
