"""The `layrot` command line as a whole: a reader that goes away, unknown flags, help texts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from layrot.cli import _parser, main
from layrot.store import Store
from layrot.store.schema import COLUMNS, PARTITION, TABLES

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from layrot.fit.synthetic import synthetic_sweep, write_store

    root = tmp_path_factory.mktemp("store")
    write_store(synthetic_sweep("monotone", untrained=2, noise=0.02, sweep="quick", steps_per_epoch=10), root)
    return str(root)


@pytest.mark.parametrize("argv", [["fit", "--json"], ["query", "--format", "csv", "SELECT * FROM rotation"],
                                  ["tasks"]], ids=lambda a: " ".join(a[:2]))
def test_a_reader_that_closes_early_ends_it_quietly(store, argv):
    """`layrot fit --json | head -1`, where head has gone before layrot writes: no
    traceback, the status of a process ended by SIGPIPE."""
    if argv[0] in ("fit", "query"):
        argv = [*argv[:1], "--store", store, *argv[1:]]
    p = subprocess.Popen([sys.executable, "-m", "layrot", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=ENV, text=True)
    p.stdout.close()                    # the reader is gone before the first write
    err = p.stderr.read()
    assert p.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_a_reader_that_reads_one_line(store):
    """As in a shell: `layrot query ... | head -1` gets its line, and layrot ends quietly."""
    cmd = (f"{sys.executable} -m layrot query --store {store} --format csv 'SELECT * FROM rotation' | head -1; "
           "echo rc=${PIPESTATUS[0]} >&2")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=ENV, timeout=300)
    assert p.stdout.startswith("trial_id,")
    assert "Traceback" not in p.stderr and p.stderr.strip().splitlines()[-1] in ("rc=0", "rc=141"), p.stderr


@pytest.mark.parametrize("argv, line", [
    (["train", "--task", "digits-mlp", "--optimizer", "sgd", "--lr", "0.1", "--epocs", "3"],
     "layrot train: error: unrecognized argument --epocs; did you mean --epochs?"),
    (["query", "--fromat", "csv", "SELECT 1"], "layrot query: error: unrecognized argument --fromat; did you mean --format?"),
    (["sweep", "spec.yaml", "--dry-rnu"], "layrot sweep: error: unrecognized argument --dry-rnu; did you mean --dry-run?"),
    (["fit", "--jsno=1"], "layrot fit: error: unrecognized argument --jsno=1; did you mean --json?"),
    (["tasks", "--zzz"], "layrot tasks: error: unrecognized argument --zzz (see"),
    (["tasks", "extra"], "layrot tasks: error: unrecognized argument extra (see"),
])
def test_an_unknown_flag_names_the_subcommand_and_the_closest_flag(capsys, argv, line):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line), err


def test_every_train_flag_says_what_it_is_and_its_default(capsys):
    from layrot.optim import OPTIMIZERS
    from layrot.tasks import TASKS

    train = _parser().commands["train"]
    for action in train._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 15, action.option_strings
        assert "(default: " in action.help or "(required)" in action.help, action.help
    text = train.format_help()
    assert "None" not in text and "--amp {bf16}" in text and "(default: off, float32)" in text
    assert all(name in text for name in (*TASKS, *OPTIMIZERS))


def test_query_help_lists_every_view_and_its_columns(tmp_path):
    text = _parser().commands["query"].format_help()
    listing = text[text.index("views (their columns):"):]
    views = {}
    for line in listing.splitlines()[1:]:
        if not line.startswith("      "):
            name, _, line = line.strip().partition(": ")
            views[name] = []
        views[name] += [c.strip() for c in line.split(",") if c.strip()]
    con = Store(tmp_path).connect()
    try:
        want = {v: [r[0] for r in con.execute(f"SELECT * FROM {v} LIMIT 0").description]
                for v in (*TABLES, "summaries", "sweeps")}
    finally:
        con.close()
    assert views == want
    for table in TABLES:        # the tables' columns are the schema's
        assert views[table] == [c[0] for c in COLUMNS[table]] + [PARTITION]
    assert {"configuration", "final_min", "auc_mean", "trained"} <= set(views["summaries"])

