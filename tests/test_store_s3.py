"""The artifact store and an ingest against a real S3-compatible server (moto's server mode
on 127.0.0.1), through a store URI and through a pyarrow S3FileSystem."""

import pyarrow.fs as pafs
import pytest

from mmiris.artifacts import ArtifactStore
from mmiris.data.split import load_split
from mmiris.errors import ArtifactNotFound
from mmiris.pipelines.ingest import ingest_movielens
from mmiris.pipelines.split import split_leave_one_out
from tests.test_ingest_movielens import write_ml1m
from tests.test_store import _interactions


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free local port with fake credentials and a bucket ``mmiris``.

    The server binds port 0 itself: a port found free first and bound later can be taken in
    between by another test process (the server thread then fails, and its start never
    returns). The bucket is made with a patient client: on a loaded machine the in-process
    server can take longer than the AWS SDK's 3 s request timeout to answer, which failed
    this fixture, and every test using it, at setup."""
    from moto.server import ThreadedMotoServer

    mp = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        mp.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    endpoint = f"127.0.0.1:{port}"
    patient_s3(endpoint, allow_bucket_creation=True).create_dir("mmiris")
    yield endpoint
    server.stop()
    mp.undo()


def patient_s3(endpoint: str, **kwargs) -> pafs.S3FileSystem:
    """A client of the moto server that waits as long as a loaded machine needs."""
    return pafs.S3FileSystem(
        endpoint_override=endpoint,
        scheme="http",
        region="us-east-1",
        connect_timeout=60,
        request_timeout=120,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=5),
        **kwargs,
    )


def test_store_publish_read_latest_lineage_on_s3(s3):
    store = ArtifactStore(f"s3://mmiris/store-a?endpoint_override={s3}&scheme=http&region=us-east-1")
    assert not store.is_local
    with pytest.raises(ArtifactNotFound):
        store.latest("interactions")
    a = store.publish("interactions", "interactions", _interactions(), params={"p": 1})
    assert store.publish("interactions", "interactions", _interactions(), params={"p": 1}) == a
    b = store.publish("interactions", "interactions", _interactions(3), params={"p": 2}, parents=[a])
    assert store.latest("interactions") == b and store.resolve(f"interactions@{a.version[:6]}") == a
    assert store.read_table(a, "users").num_rows == 5 and store.read_table(b, "users").num_rows == 3
    assert [m.version for m in store.versions("interactions")] == [a.version, b.version]
    assert store.names() == ["interactions"]
    assert store.lineage(b)["parents"][0]["ref"] == str(a)
    # the objects are where the documented layout says
    fs = patient_s3(s3)
    with fs.open_input_stream("mmiris/store-a/interactions/LATEST") as f:
        assert f.read().decode().strip() == b.version
    assert fs.get_file_info(f"mmiris/store-a/interactions/{a.version}/manifest.json").size > 0


def test_ingest_and_split_into_s3_with_a_filesystem_object(s3, tmp_path):
    fs = patient_s3(s3)
    store = ArtifactStore("mmiris/store-b", filesystem=fs)
    res = ingest_movielens(store, write_ml1m(tmp_path / "ml-1m"))
    assert ingest_movielens(store, tmp_path / "ml-1m") == res  # found again, not re-published
    items = store.read_table(res.items)
    assert items.num_rows == 5 and "Toy Story (1995)" in items.column("title").to_pylist()
    split = split_leave_one_out(store, res.interactions, n_negatives=1, seed=0)
    s = load_split(store, split)
    assert s.n_users == 3 and len(s.test_users) == 3 and s.test_negatives.shape == (3, 1)
    assert store.lineage(split)["parents"][0]["ref"] == str(res.interactions)
