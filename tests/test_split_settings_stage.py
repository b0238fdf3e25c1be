"""`mmiris split --from SPLIT --keep / --cold-items`: derived split artifacts, evaluated end to end."""

import numpy as np
import pytest

from mmiris.artifacts import ArtifactStore
from mmiris.cli import main
from mmiris.data.split import load_split


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from mmiris.pipelines.demo_data import generate_demo_dataset
    from mmiris.pipelines.split import split_leave_one_out

    store = ArtifactStore(tmp_path_factory.mktemp("settings") / "store")
    refs = generate_demo_dataset(store, n_users=60, n_items=40)
    return store, split_leave_one_out(store, refs.interactions, n_negatives=5)


def test_cold_split_through_the_cli_then_train_and_evaluate(demo, capsys):
    store, split = demo
    assert store.manifest(split).stats["setting"] == "full"
    rc = main(["--store", str(store.root), "split", "--from", str(split), "--cold-items", "0.5", "--negatives", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "cold setting" in out
    m = store.manifest(store.latest("split_cold"))
    assert m.params["setting"] == "cold" and m.stats["setting"] == "cold" and str(split) in m.parents
    cold = load_split(store, m.ref)
    assert not set(cold.test_items.tolist()) & set(cold.train_items.tolist())
    from mmiris.pipelines.evaluate import evaluate_model, read_metrics
    from mmiris.pipelines.train import train_model

    model = train_model(store, m.ref, "itempop")
    met = read_metrics(store, evaluate_model(store, model, protocols=("sampled", "full")))
    # ItemPop cannot tell cold items apart (none has a training count): every cold candidate
    # ties, so the sampled HR@10 of 1 + 3 candidates is 1 and full ranking still scores every case
    assert 0.0 <= met["full"]["hr10"] <= 1.0 and met["sampled"]["hr10"] == pytest.approx(1.0)


def test_sparse_split_keeps_the_held_out_rows(demo, capsys):
    store, split = demo
    rc = main(["--store", str(store.root), "split", "--from", str(split), "--keep", "0.5", "--seed", "3"])
    assert rc == 0
    full, sparse = load_split(store, split), load_split(store, store.latest("split_sparse"))
    np.testing.assert_array_equal(sparse.test_negatives, full.test_negatives)
    assert len(sparse.train_items) < len(full.train_items)
    assert store.manifest(store.latest("split_sparse")).params == {"setting": "sparse", "keep": 0.5, "seed": 3}


def test_settings_need_a_source_split_and_exactly_one_setting(demo, capsys):
    store, split = demo
    assert main(["--store", str(store.root), "split", "--keep", "0.5"]) == 2
    assert "--from SPLIT" in capsys.readouterr().err
    assert (
        main(["--store", str(store.root), "split", "--from", str(split), "--keep", "0.5", "--cold-items", "0.2"]) == 2
    )
    assert "exactly one of" in capsys.readouterr().err


def test_cold_validation_through_the_cli_trains_and_stops_on_cold_items(demo, capsys, caplog):
    store, split = demo
    argv = ["--store", str(store.root), "split", "--from", str(split), "--cold-items", "0.3", "--negatives", "3"]
    rc = main([*argv, "--cold-valid", "0.3", "--name", "split_coldval"])
    out = capsys.readouterr().out
    assert rc == 0 and "cold validation items" in out
    m = store.manifest(store.latest("split_coldval"))
    assert m.params["cold_valid"] == 0.3 and m.stats["validation"] == "cold"
    assert main([*argv, "--name", "split_cold_plain"]) == 0
    plain = store.manifest(store.latest("split_cold_plain"))
    assert "cold_valid" not in plain.params and "validation" not in plain.stats  # 0: the split as before
    cv, cold = load_split(store, m.ref), load_split(store, plain.ref)
    np.testing.assert_array_equal(cv.test_items, cold.test_items)  # the same test
    np.testing.assert_array_equal(cv.test_negatives, cold.test_negatives)
    held = set(cv.valid_items.tolist()) | set(cv.valid_negatives.ravel().tolist())
    assert not held & set(cv.train_items.tolist()) and not held & set(cv.test_items.tolist())
    from mmiris.pipelines.train import train_model
    from mmiris.train.config import TrainConfig

    with caplog.at_level("WARNING", logger="mmiris"):
        ref = train_model(store, m.ref, "mf", train_config=TrainConfig(epochs=2, batch_size=64, threads=1))
    # MF cannot score the cold validation items: it says its early stopping reads noise
    assert "which mf cannot score: its validation is near random" in caplog.text
    stats = store.manifest(ref).stats  # validation on the cold items ran every epoch
    assert stats["epochs_run"] == 2 and 0.0 <= stats["valid_hr10"] <= 1.0
    capsys.readouterr()
    assert (
        main(["--store", str(store.root), "split", "--from", str(split), "--keep", "0.5", "--cold-valid", "0.2"]) == 2
    )
    assert "give --cold-items too" in capsys.readouterr().err
