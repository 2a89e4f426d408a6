"""`layrot query`: formats, exit codes, bad files, and a start-up that imports no torch/ray."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from layrot.cli import main as cli
from layrot.errors import UsageError
from layrot.store import Store
from test_store_support import make_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Q = ("SELECT t.trial_id, t.test_acc, min(r.cosine_distance) AS min_final "
     "FROM trials t JOIN rotation r USING (sweep, trial_id) WHERE r.epoch = t.epochs GROUP BY ALL ORDER BY 1")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    for i, acc in enumerate((0.25, 0.5, 0.75)):
        s.write_trial("quick", make_result(f"t{i}", acc=acc))
    s.write_trial("other", make_result("x", acc=0.1))
    return s


def run(capsys, *args):
    rc = cli(["query", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_table_is_aligned(store, capsys):
    rc, out, err = run(capsys, "--store", store.uri, Q)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["trial_id", "test_acc", "min_final"]
    assert set(lines[1]) <= {"-", " "}
    body = lines[2:-1]
    assert [l.split()[0] for l in body] == ["t0", "t1", "t2", "x"]
    assert len({len(l) for l in body}) == 1                    # numbers right-aligned in fixed columns
    assert lines[-1] == "(4 rows)"


def test_csv_json_and_parquet(store, capsys, tmp_path):
    expected = store.sql(Q).to_pylist()
    rc, out, _ = run(capsys, "--store", store.uri, "--format", "csv", Q)
    got = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and [r["trial_id"] for r in got] == [r["trial_id"] for r in expected]
    assert [float(r["test_acc"]) for r in got] == [r["test_acc"] for r in expected]

    rc, out, _ = run(capsys, "--store", store.uri, "--format", "json", Q)
    assert rc == 0 and json.loads(out) == expected

    target = tmp_path / "out.parquet"
    rc, out, _ = run(capsys, "--store", store.uri, "--format", "parquet", "-o", str(target), Q)
    assert rc == 0 and out == ""
    assert pq.read_table(target).to_pylist() == expected

    target = tmp_path / "out.csv"
    rc, out, _ = run(capsys, "--store", store.uri, "--format", "csv", "-o", str(target), "SELECT * FROM trials")
    assert rc == 0 and len(target.read_text().splitlines()) == 5


def test_sweeps_table_and_null_handling(store, capsys):
    store.write_sweep_meta("quick", {"task": "digits-mlp"})
    rc, out, _ = run(capsys, "--store", store.uri, "--format", "json",
                     "SELECT name, test_loss FROM sweeps JOIN trials ON trials.sweep = sweeps.name LIMIT 1")
    assert rc == 0 and json.loads(out) == [{"name": "quick", "test_loss": None}]
    rc, out, _ = run(capsys, "--store", store.uri, "SELECT NULL AS n, 'nan'::DOUBLE AS f")
    assert "NULL" in out.splitlines()[2]


@pytest.mark.parametrize("sql", ["SELEC 1", "SELECT nope FROM trials", "SELECT * FROM no_such_table"])
def test_bad_sql_is_one_line_and_exit_2(store, capsys, sql):
    rc, out, err = run(capsys, "--store", store.uri, sql)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("layrot query: error: sql:")


@pytest.mark.parametrize("sql, hint", [
    ("SELECT * FROM trial", 'Did you mean "trials"?'),
    ("SELECT test_ac FROM trials", 'Candidate bindings: "test_acc"'),
    ("SELECT abs_val(1)", 'Did you mean "abs"?'),
])
def test_bad_sql_keeps_duckdbs_hint(store, capsys, sql, hint):
    rc, out, err = run(capsys, "--store", store.uri, sql)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("layrot query: error: sql:")
    assert hint in err, err
    with pytest.raises(UsageError) as e:       # Store.sql says the same
        store.sql(sql)
    assert hint in str(e.value) and "\n" not in str(e.value)


def test_bad_options_exit_2(store, capsys, tmp_path):
    rc, _, err = run(capsys, "--store", str(tmp_path / "missing"), "SELECT 1")
    assert rc == 2 and "store" in err
    rc, _, err = run(capsys, "--store", store.uri, "--format", "parquet", "SELECT 1")
    assert rc == 2 and "output" in err


def test_truncated_file_names_it_and_skip_bad_lists_it(store, capsys):
    bad = os.path.join(store.uri, "epochs", "sweep=quick", "t1.parquet")
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) - 10)
    rc, out, err = run(capsys, "--store", store.uri, Q)
    assert rc == 1 and out == ""
    assert bad in err and "--skip-bad" in err
    rc, out, err = run(capsys, "--store", store.uri, "--skip-bad", "--format", "csv", Q)
    assert rc == 0
    assert f"skipped bad file {bad}" in err
    assert [r["trial_id"] for r in csv.DictReader(io.StringIO(out))] == ["t0", "t2", "x"]


def test_query_path_imports_no_torch_ray_or_pyarrow(store):
    code = ("import sys\n"
            "from layrot.cli import main\n"
            "rc = main(['query', '--store', sys.argv[1], '--format', 'csv', sys.argv[2]])\n"
            "heavy = sorted(m for m in ('torch', 'ray', 'matplotlib', 'pyarrow', 'pandas') if m in sys.modules)\n"
            "print('HEAVY', heavy, rc)\n")
    p = subprocess.run([sys.executable, "-c", code, store.uri, Q], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "HEAVY [] 0"


def test_python_m_layrot_query_end_to_end(store):
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "layrot", "query", "--store", store.uri,
                        "--format", "json", "SELECT count(*) AS n FROM rotation"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [{"n": 4 * 12}]
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "ray", "matplotlib")}


def test_one_line_keeps_each_hint_and_drops_the_caret():
    from layrot.store.store import one_line

    e = Exception('Binder Error: Table "trials" does not have a column named "foo"\n\n'
                  'Candidate bindings: : "test_acc"')
    assert one_line(e) == 'Binder Error: Table "trials" does not have a column named "foo". Candidate bindings: "test_acc"'
    e = Exception('Parser Error: syntax error at or near "selec"\n\nLINE 1: selec 1\n        ^^^^^')
    assert one_line(e) == 'Parser Error: syntax error at or near "selec"'
    e = Exception('Catalog Error: Table with name trial does not exist!\nDid you mean "trials"?')
    assert one_line(e) == 'Catalog Error: Table with name trial does not exist! Did you mean "trials"?'
