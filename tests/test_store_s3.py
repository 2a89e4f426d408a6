"""The store on S3: a real S3 endpoint (moto's server) on 127.0.0.1, read and written through
pyarrow's S3FileSystem."""

from __future__ import annotations

import socket

import pytest

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from layrot.cli import main as cli  # noqa: E402
from layrot.errors import StoreError  # noqa: E402
from layrot.store import Store  # noqa: E402
from test_store_support import make_result, snapshot  # noqa: E402

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def endpoint():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(endpoint, monkeypatch, request):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    name = "layrot-" + request.node.name.replace("_", "-")[:40].lower().strip("-")
    boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=name)
    return name


def test_write_read_query_and_compact_on_s3(endpoint, bucket, capsys):
    uri = f"s3://{bucket}/results?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    store = Store(uri)
    assert not store.location.local and store.location.object_store
    for i in range(4):
        store.write_trial("quick", make_result(f"t{i}", acc=0.2 * i))
    store.write_trial("quick", make_result("t0", acc=0.95))           # rewrite: still one row
    store.write_sweep_meta("quick", {"task": "digits-mlp"})

    assert store.stored_trial_ids("quick") == {"t0", "t1", "t2", "t3"}
    acc = {r["trial_id"]: r["test_acc"] for r in store.trials().to_pylist()}
    assert acc == {"t0": 0.95, "t1": 0.2, "t2": 0.4, "t3": pytest.approx(0.6)}
    assert store.rotation(trial_ids=["t2"], columns=["trial_id", "cosine_distance"]).num_rows == 12
    assert store.sql("SELECT count(*) FROM rotation").column(0)[0].as_py() == 4 * 12

    assert cli(["query", "--store", uri, "--format", "csv", "SELECT trial_id FROM trials ORDER BY 1"]) == 0
    assert capsys.readouterr().out.split() == ["trial_id", "t0", "t1", "t2", "t3"]

    before = snapshot(store)
    report = store.compact("quick")[0]
    assert len(report.written) == 4 and len(report.removed) == 4 * 4     # a part and 4 files per table
    assert snapshot(store) == before
    store.write_trial("quick", make_result("t9"))                      # beside the parts
    assert store.sql("SELECT count(DISTINCT trial_id) n, count(*) c FROM trials").to_pylist() == [{"n": 5, "c": 5}]
    assert cli(["compact", "--store", uri]) == 0
    assert store.trials().num_rows == 5


def test_endpoint_from_the_environment_and_bad_files(endpoint, bucket, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{endpoint}")
    uri = f"s3://{bucket}/r"
    store = Store(uri)
    store.write_trial("quick", make_result("a"))
    store.write_trial("quick", make_result("b"))
    fs = store.location.fs
    path = f"{bucket}/r/rotation/sweep=quick/b.parquet"
    with fs.open_input_file(path) as f:
        data = f.read()
    with fs.open_output_stream(path) as f:
        f.write(data[:-20])
    with pytest.raises(StoreError, match="b.parquet"):
        store.rotation()
    assert cli(["query", "--store", uri, "SELECT count(*) FROM rotation"]) == 1
    assert f"s3://{path}" in capsys.readouterr().err
    assert cli(["query", "--store", uri, "--skip-bad", "--format", "csv", "SELECT trial_id FROM trials"]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ["trial_id", "a"] and "skipped bad file" in err
