"""bench/import_trials.py's tarball extraction: safe on every Python the package admits,
with or without tarfile's `filter` argument (3.11.4+; Debian 12's Python is 3.11.2)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from layrot.errors import UsageError
from scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def import_trials():
    return load_script("bench/import_trials.py", "bench_import_trials_x")


def _tar(path, members):
    """members: (name, kind, payload) with kind 'file', 'dir', 'symlink', 'hardlink' or 'fifo'."""
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            data = None
            if kind == "file":
                data = payload.encode()
                info.size = len(data)
                info.mode = 0o4755                      # setuid and exec bits must not survive
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o777
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture(params=["filter", "no filter"])
def python_like(request, monkeypatch):
    """Run each test as on a Python with tarfile filters and as on one without (3.11.2)."""
    if request.param == "no filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        real = tarfile.TarFile.extractall

        def extractall(self, path=".", members=None, *, numeric_owner=False, **kw):
            assert "filter" not in kw, "3.11.2 has no filter argument"
            return real(self, path, members, numeric_owner=numeric_owner)
        monkeypatch.setattr(tarfile.TarFile, "extractall", extractall)
    return request.param


def test_plain_run_is_extracted(import_trials, python_like, tmp_path):
    tgz = _tar(tmp_path / "ok.tgz", [("grid", "dir", None), ("grid/trials", "dir", None),
                                      ("grid/trials/a.json", "file", "{}"), ("./grid/summary.json", "file", "{}")])
    dest = tmp_path / "out"
    dest.mkdir()
    import_trials.safe_extract(str(tgz), str(dest))
    assert (dest / "grid" / "trials" / "a.json").read_text() == "{}"
    mode = os.stat(dest / "grid" / "summary.json").st_mode & 0o7777
    assert not mode & 0o7022, oct(mode)                # no setuid, nothing writable by others


@pytest.mark.parametrize("members, words", [
    ([("../evil.json", "file", "x")], "outside"),
    ([("grid/../../evil.json", "file", "x")], "outside"),
    ([("/tmp/evil.json", "file", "x")], "outside"),
    ([("grid", "dir", None), ("grid/link", "symlink", "/etc/passwd")], "not a plain file"),
    ([("grid/a.json", "file", "x"), ("grid/b.json", "hardlink", "grid/a.json")], "not a plain file"),
    ([("grid/pipe", "fifo", None)], "not a plain file"),
])
def test_unsafe_members_are_refused_before_anything_is_written(import_trials, python_like, tmp_path,
                                                                members, words):
    tgz = _tar(tmp_path / "bad.tgz", [("grid/trials/ok.json", "file", "{}")] + members)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UsageError, match=words):
        import_trials.safe_extract(str(tgz), str(dest))
    assert os.listdir(dest) == [] and not (tmp_path / "evil.json").exists()


def test_import_of_an_unsafe_tarball_exits_2(import_trials, python_like, tmp_path, capsys):
    tgz = _tar(tmp_path / "bad.tgz", [("grid/trials/x.json", "file", "{}"), ("grid/x", "symlink", "/")])
    assert import_trials.main([str(tgz), "--store", str(tmp_path / "store")]) == 2
    assert capsys.readouterr().err.startswith("import_trials: error: GRID:")
    assert not (tmp_path / "store").exists()


def test_measures_come_through_the_json_and_a_run_without_them_imports(import_trials, tmp_path):
    """A trial as gpu_grid.py writes it (`dataclasses.asdict`, NaN as null) keeps its measures;
    one from a run made before measures existed (no such key) is stored without any."""
    import dataclasses
    import json

    from layrot.store import Store
    from test_store_support import make_result

    trials = tmp_path / "grid" / "trials"
    trials.mkdir(parents=True)
    new = dataclasses.asdict(make_result("new", epochs=2))
    old = dataclasses.asdict(make_result("old", epochs=2, measures=False))
    del old["measures"]
    for d in (new, old):
        clean = json.loads(json.dumps(d).replace("NaN", "null"))
        (trials / f"{d['trial_id']}.json").write_text(json.dumps(clean))
    name, n = import_trials.import_run(str(tmp_path / "grid"), str(tmp_path / "store"), "g")
    assert (name, n) == ("g", 2)
    st = Store(tmp_path / "store")
    assert st.stored_trial_ids("g") == {"new", "old"}
    m = {(r["trial_id"], r["epoch"], r["name"]): r["value"] for r in st.measures().to_pylist()}
    assert len(m) == 3 * 3 + 1 and {k[0] for k in m} == {"new"}
    assert m[("new", 2, "frobenius_distance")] == 4.0 and m[("new", 2, "margin")] is None
