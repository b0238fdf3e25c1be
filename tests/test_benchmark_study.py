"""The study benchmark's own logic (benchmarks/study.py): row keys, the results file, the
shuffled-content control's permutation — on tiny data, without ../shared/data."""

import json

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import study
from mmiris.artifacts import ArtifactStore, Output


def _features(store, name, kind, dim, ids, seed):
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(len(ids), dim)).astype(np.float32)
    table = pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "feature": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel(), pa.float32()), dim),
            "present": pa.array([True] * len(ids)),
            "reason": pa.array([None] * len(ids), pa.string()),
        }
    )
    return str(store.publish(name, kind, Output({"features": table}), params={"seed": seed})), vecs


def test_shuffled_features_move_each_items_pair_to_another_item(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    ids = np.arange(30)
    img_ref, img = _features(store, "img", "image_features", 5, ids, 0)
    txt_ref, txt = _features(store, "txt", "text_features", 3, ids[::2], 1)  # text for half the items
    out = study.shuffled_features(store, {"image": img_ref, "text": txt_ref}, seed=0)
    si, st = store.read_table(out["image"]), store.read_table(out["text"])
    new_img = {
        int(i): np.asarray(v) for i, v in zip(si.column("item_id").to_pylist(), si.column("feature").to_pylist())
    }
    new_txt = {
        int(i): np.asarray(v) for i, v in zip(st.column("item_id").to_pylist(), st.column("feature").to_pylist())
    }
    assert sorted(new_img) == list(range(30)) and len(new_txt) == 15
    moved = sum(not np.allclose(new_img[i], img[i]) for i in range(30))
    assert moved >= 25  # a permutation, not the identity
    # the same permutation for both: an item's image and text still come from one source item
    src_of = {i: int(np.flatnonzero(np.all(np.isclose(img, new_img[i]), axis=1))[0]) for i in range(30)}
    for i, v in new_txt.items():
        assert np.allclose(v, txt[src_of[i] // 2]) and src_of[i] % 2 == 0
    again = study.shuffled_features(store, {"image": img_ref, "text": txt_ref}, seed=0)
    assert again == out  # the same control artifacts on a rerun


def test_row_keys_round_trip_and_bad_keys_are_errors():
    assert study.parse_key("multimodal_iris+shuffled:16:2") == ("multimodal_iris", 16, 2, "shuffled")
    assert study.parse_key("hybrid_iris+nodrop:16:0") == ("hybrid_iris", 16, 0, "nodrop")
    assert study.row_key("nais_prod", 64, 0) == "nais_prod:64:0"
    with pytest.raises(ValueError, match="model\\[\\+variant\\]:emb:seed"):
        study.parse_key("nais_prod:16")
    with pytest.raises(ValueError, match="variant"):
        study.parse_key("nais_prod+weird:16:0")


def test_results_file_is_rewritten_whole_with_a_summary(tmp_path):
    path = tmp_path / "results" / "study.json"
    rows = {}
    for seed, hr in ((0, 0.70), (1, 0.72)):
        key = study.row_key("nais_prod", 16, seed)
        rows[key] = {
            "key": key,
            "model": "nais_prod",
            "emb": 16,
            "seed": seed,
            "variant": "",
            "hr10": hr,
            "ndcg10": 0.4,
            "full_hr10": 0.1,
            "full_ndcg10": 0.05,
            "best_epoch": 7,
            "epoch_seconds": 30.0,
            "explanation_overlap": 0.1,
            "stopped": "early",
        }
    study.save_results(path, rows)
    doc = json.loads(path.read_text())
    assert [r["seed"] for r in doc["rows"]] == [0, 1]
    s = doc["summary"]["nais_prod:16"]
    assert s["hr10"]["mean"] == pytest.approx(0.71) and s["hr10"]["n"] == 2 and s["stopped"] == ["early"]
    assert s["published_hr10_ndcg10"] == [0.6969, 0.4194]
    assert study.load_results(path).keys() == rows.keys()


def test_a_row_is_claimed_by_one_live_process_and_stale_claims_are_taken_over(tmp_path):
    results = tmp_path / "study.json"
    lock = study.claim_row(results, "multimodal_iris+shuffled:16:0")
    assert lock is not None and lock.read_text() == str(__import__("os").getpid())
    assert study.claim_row(results, "multimodal_iris+shuffled:16:0") is None  # held by a live process
    lock.write_text("999999999")  # a process that is gone
    again = study.claim_row(results, "multimodal_iris+shuffled:16:0")
    assert again == lock


def test_content_full_setting_takes_the_studys_row_only_when_it_is_the_same_row():
    from benchmarks import content

    row = {"key": "nais_concat:16:0", "model": "nais_concat", "hr10": 0.71, "command": {"epochs": 50, "patience": 3}}
    rows = {row["key"]: row, "fism:16:0": {**row, "key": "fism:16:0", "error": "boom"}}
    same = content.study_row(rows, "nais_concat", 16, 0, epochs=50, patience=3)
    assert same is not None and same["hr10"] == 0.71 and same["from_study"] is True
    assert content.study_row(rows, "nais_concat", 16, 1, epochs=50, patience=3) is None  # another seed
    assert content.study_row(rows, "nais_concat", 16, 0, epochs=20, patience=3) is None  # another cap
    assert content.study_row(rows, "nais_concat", 16, 0, epochs=50, patience=5) is None
    assert content.study_row(rows, "fism", 16, 0, epochs=50, patience=3) is None  # a failed row
    shuffled = {"nais_concat:16:0": {**row, "variant": "shuffled"}}
    assert content.study_row(shuffled, "nais_concat", 16, 0, epochs=50, patience=3) is None


def test_a_row_is_run_again_when_its_tuned_settings_changed():
    """A row made before a new search finished is stale, and stays stale when the study reads
    the results file again before running it (it used to skip such a row as "finished by
    another study process")."""
    from benchmarks.study import row_is_current

    old = {"key": "mf:16:0", "hr10": 0.56, "tuned_params": {"lr": 0.0106}}
    assert row_is_current(old, lambda: {"lr": 0.0106})
    assert not row_is_current(old, lambda: {"lr": 0.0037})
    assert not row_is_current(old, lambda: {"lr": 0.0106}, rerun=True)
    assert not row_is_current(None, lambda: {}) and not row_is_current({"error": "boom"}, lambda: {})
    assert row_is_current({"key": "ease:16:0", "tuned_params": None}, lambda: {})  # never tuned


def test_a_store_that_lost_its_tune_artifacts_goes_on_with_the_recorded_settings(tmp_path):
    """A new machine (an empty store) must not turn the tuned rows stale and retrain them with
    the defaults: the results file records each model's tuned settings and where they came from."""
    store = ArtifactStore(tmp_path / "store")  # no tune-* artifacts at all
    rows = {
        "mf:16:0": {
            "key": "mf:16:0",
            "model": "mf",
            "emb": 16,
            "date": "2026-11-30",
            "tuned_params": {"lr": 0.0106},
            "tuned_from": "tune-mf@old",
        },
        "mf:16:1": {
            "key": "mf:16:1",
            "model": "mf",
            "emb": 16,
            "date": "2026-12-01",
            "tuned_params": {"lr": 0.0037},
            "tuned_from": "tune-mf@new",
        },
        "mf:16:2": {"key": "mf:16:2", "model": "mf", "emb": 16, "date": "2026-12-02", "error": "boom"},
        "mf:64:0": {
            "key": "mf:64:0",
            "model": "mf",
            "emb": 64,
            "date": "2026-12-02",
            "tuned_params": {"lr": 0.5},
            "tuned_from": "tune-mf@64",
        },
        "nais_prod:16:0": {
            "key": "nais_prod:16:0",
            "model": "nais_prod",
            "emb": 16,
            "tuned_params": {},
            "tuned_from": None,
        },
    }
    assert study.tuned_params(store, "split@x", "mf", 16) == ({}, None)
    assert study.resolve_tuning(store, "split@x", "mf", 16, rows) == ({"lr": 0.0037}, "tune-mf@new")  # the newest
    assert study.resolve_tuning(store, "split@x", "mf", 64, rows) == ({"lr": 0.5}, "tune-mf@64")
    assert study.resolve_tuning(store, "split@x", "nais_prod", 16, rows) == ({}, None)  # never tuned
    assert study.resolve_tuning(store, "split@x", "mf", 16, None) == ({}, None)
    now = lambda: study.resolve_tuning(store, "split@x", "mf", 16, rows)[0]  # noqa: E731
    assert study.row_is_current(rows["mf:16:1"], now)  # not stale: no retraining with the defaults
    assert not study.row_is_current(rows["mf:16:0"], now)  # made with the older winner


def test_every_variants_settings_are_valid_hybrid_and_training_configs():
    """A variant's table entry names real fields (a misspelt one would otherwise surface only
    when a study run reaches that row, hours in), training settings are in range (TrainConfig
    checks them; the model checks its ranges when built, not here), and each sets what it names."""
    from mmiris.models.hybrid_iris import HybridIRISConfig
    from mmiris.train.config import TrainConfig

    assert set(study.VARIANT_MODEL) | set(study.VARIANT_TRAIN) <= set(study.VARIANTS)
    for variant, fields in study.VARIANT_MODEL.items():
        cfg = HybridIRISConfig.from_dict({"emb": 16, **fields})
        assert all(getattr(cfg, k) == v for k, v in fields.items()), variant
    for variant, fields in study.VARIANT_TRAIN.items():
        tc = TrainConfig(seed=0, **fields)
        assert all(getattr(tc, k) == v for k, v in fields.items()), variant
    wide = HybridIRISConfig.from_dict({"emb": 16, **study.VARIANT_MODEL["simwide"]})
    assert wide.content_similarity == 64 and wide.content_metric and wide.new_items == "similarity"
    assert study.VARIANT_TRAIN["simwide"] == study.VARIANT_TRAIN["simfine"]
