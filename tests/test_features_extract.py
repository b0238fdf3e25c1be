"""The extraction stage on a real Dask cluster (in-process workers), with tiny encoders."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from mmiris.artifacts import Output
from mmiris.data.modality import load_modality
from mmiris.encoders import get_image_encoder, get_text_encoder
from mmiris.encoders.image import decode_image
from mmiris.encoders.text import normalize_text
from mmiris.pipelines.extract import PLUGIN_NAME, extract_image_features, extract_text_features

TEXT_COLUMNS = ["title", "genre", "director", "actors", "year", "imdb_id", "match_method", "raw_json"]


@pytest.fixture(scope="module")
def client():
    from mmiris.cluster import dask_client

    with dask_client(None, workers=2, processes=False) as c:  # in-process workers: quick to start
        yield c


def img(color=(200, 30, 10), size=(60, 80), mode="RGB", fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


def publish_images(store, images: dict[int, bytes | None], name="item_images"):
    ids = sorted(images)
    n = len(ids)
    t = pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "image": pa.array([images[i] for i in ids], pa.binary()),
            "present": [images[i] is not None for i in ids],
            "reason": [None if images[i] is not None else "no_poster" for i in ids],
            "sha256": pa.array([None] * n, pa.string()),
            "width": pa.array([None] * n, pa.int32()),
            "height": pa.array([None] * n, pa.int32()),
            "format": pa.array([None] * n, pa.string()),
            "source_url": pa.array([None] * n, pa.string()),
        }
    )
    return store.publish(name, "item_images", Output({"item_images": t}), params={"n": n, "ids": ids})


def publish_texts(store, texts: dict[int, object], name="item_text"):
    ids = sorted(texts)
    values = [texts[i] for i in ids]
    if any(isinstance(v, bytes) for v in values):
        # A string column holding bytes that are not UTF-8, as a foreign writer may produce.
        raw = pa.array(values, pa.binary())
        text = pa.StringArray.from_buffers(
            len(raw), raw.buffers()[1], raw.buffers()[2], raw.buffers()[0], raw.null_count
        )
    else:
        text = pa.array(values, pa.string())
    cols = {
        "item_id": pa.array(ids, pa.int64()),
        "text": text,
        "present": [v is not None for v in values],
        "reason": [None if v is not None else "no_match" for v in values],
    }
    cols.update({c: pa.array([None] * len(ids), pa.string()) for c in TEXT_COLUMNS})
    return store.publish(
        name, "item_text", Output({"item_text": pa.table(cols)}), params={"ids": ids, "v": repr(values)[:2000]}
    )


def features(store, ref) -> dict[int, tuple[np.ndarray | None, str | None]]:
    t = store.read_table(ref, "features")
    out = {}
    for iid, vec, present, reason in zip(
        *(t.column(c).to_pylist() for c in ("item_id", "feature", "present", "reason"))
    ):
        assert present == (vec is not None)
        out[iid] = (np.array(vec, np.float32) if present else None, reason)
    return out


BAD_IMAGES = {
    0: img((255, 0, 0)),
    1: img((0, 255, 0), size=(300, 200)),
    2: b"not an image at all",
    3: None,
    4: img(90, mode="L"),
    5: img((0, 200, 200, 0), mode="CMYK"),
    6: img(fmt="PNG"),
    7: img(fmt="TIFF"),
    8: img(size=(1, 1), fmt="GIF"),
    9: img((5, 5, 5), size=(20, 20)),
    10: img()[:150],
    11: img((1, 2, 3, 0), mode="RGBA", fmt="PNG"),
}


def test_image_features_row_per_item_reasons_and_vectors_match_a_plain_loop(store, client):
    ref = publish_images(store, BAD_IMAGES)
    out = extract_image_features(store, ref, "tiny-random-cnn", client=client, batch_size=2, chunk_size=3)
    rows = features(store, out)
    assert sorted(rows) == sorted(BAD_IMAGES)  # every item has a row
    assert rows[3] == (None, "no_poster")  # the input's own reason is kept
    for iid, prefix in {2: "corrupt_image", 8: "image_too_small", 10: "corrupt_image"}.items():
        assert rows[iid][0] is None and rows[iid][1].startswith(prefix)
    # Reference: the same encoder, one image at a time, in this process.
    enc = get_image_encoder("tiny-random-cnn")
    for iid in (0, 1, 4, 5, 6, 7, 9, 11):
        ref_vec = enc.encode(decode_image(BAD_IMAGES[iid], enc.prep).tensor[None])[0]
        np.testing.assert_allclose(rows[iid][0], ref_vec, atol=1e-5)
    m = store.manifest(out)
    assert m.stats["present"] == 8 and m.stats["missing"] == 4 and m.stats["dim"] == 32
    assert m.stats["missing_by_reason"] == {"corrupt_image": 2, "image_too_small": 1, "no_poster": 1}
    for treatment in ("mode_L", "mode_CMYK", "format_PNG", "format_TIFF", "mode_RGBA", "upscaled"):
        assert m.stats["treatments"][treatment] >= 1
    assert m.params["encoder"] == "tiny-random-cnn"
    assert m.params["preprocessing"]["crop"] == 32 and m.params["preprocessing"]["mean"][0] == 0.485
    assert m.info["workers"] == 2 and len(m.info["chunks_per_worker"]) == 2
    # models read it as the paper's zero vector where missing
    mod = load_modality(store, out, n_items=12)
    assert mod.dim == 32 and mod.present.tolist() == [r[0] is not None for _, r in sorted(rows.items())]
    assert torch.all(mod.features[2] == 0)


def test_model_is_loaded_once_per_worker_not_per_task(store, client):
    images = {i: img((i * 20 % 255, 10, 10)) for i in range(16)}
    ref = publish_images(store, images, name="many_images")
    out = extract_image_features(
        store, ref, "tiny-random-cnn", client=client, batch_size=2, chunk_size=2, name="once", reuse=False
    )
    assert sum(store.manifest(out).info["chunks_per_worker"].values()) == 8  # 8 tasks
    loads = client.run(lambda dask_worker: dict(dask_worker.plugins[PLUGIN_NAME].loads))
    key = [k for k in next(iter(loads.values())) if k.startswith("tiny-random-cnn")][0]
    assert sorted(w.get(key, 0) for w in loads.values()) == [1, 1]
    # A second extraction on the same cluster reuses the loaded models.
    extract_image_features(store, ref, "tiny-random-cnn", client=client, chunk_size=4, name="twice", reuse=False)
    loads = client.run(lambda dask_worker: dict(dask_worker.plugins[PLUGIN_NAME].loads))
    assert sorted(w.get(key, 0) for w in loads.values()) == [1, 1]


def test_incremental_items_already_extracted_are_not_recomputed(store, client):
    first = {i: img((i * 30, 100, 50)) for i in range(6)}
    ref1 = publish_images(store, first)
    out1 = extract_image_features(store, ref1, "tiny-random-cnn", client=client)
    assert store.manifest(out1).stats["computed"] == 6
    # same input and encoder: the same version, found, not recomputed
    assert extract_image_features(store, ref1, "tiny-random-cnn", client=client) == out1
    grown = {**first, 6: img((1, 1, 200)), 7: img((2, 200, 2)), 3: img((9, 9, 9))}  # 3 changed
    ref2 = publish_images(store, grown)
    out2 = extract_image_features(store, ref2, "tiny-random-cnn", client=client)
    m = store.manifest(out2)
    assert out2 != out1 and m.stats["computed"] == 3 and m.stats["reused"] == 5
    assert m.info["reused_from"] == str(out1)
    old, new = features(store, out1), features(store, out2)
    for iid in (0, 1, 2, 4, 5):
        np.testing.assert_array_equal(old[iid][0], new[iid][0])
    assert not np.allclose(old[3][0], new[3][0])  # the changed image was re-encoded


def test_index_keeps_the_first_row_of_an_id_across_parts_and_the_plan_places_each_item_once(store):
    import hashlib

    from mmiris.features.inputs import text_index
    from mmiris.features.run import plan

    def part(ids, texts):
        cols = {
            "item_id": pa.array(ids, pa.int64()),
            "text": pa.array(texts, pa.string()),
            "present": [t is not None for t in texts],
            "reason": [None if t is not None else "no_match" for t in texts],
        }
        cols.update({c: pa.array([None] * len(ids), pa.string()) for c in TEXT_COLUMNS})
        return pa.table(cols)

    staged = store.stage("two_part_text", "item_text", [], {"v": 1})
    metas = [
        store.write_part(staged, "item_text", 0, part([5, 1, 5, 9], ["five", "the longest text of all", "5", None])),
        store.write_part(staged, "item_text", 1, part([1, 7, 3, 8], ["again", "seven", "", "eight"])),
    ]
    index = text_index(store, store.commit(staged, {"item_text": metas}))
    assert index.ids.tolist() == [1, 5, 7, 8] and index.treatments["duplicate_item_id_dropped"] == 2
    assert index.sha256[1] == hashlib.sha256(b"five").hexdigest().encode()  # the first row of id 5
    assert dict(zip(index.missing_ids.tolist(), index.missing_reasons.to_pylist())) == {9: "no_match", 3: "empty_text"}
    tasks = plan(index, np.array([5]), size=2)
    assert [t.encode.tolist() for t in tasks] == [[7, 8], [1], []]  # by length, then the id-range rest
    assert tasks[2].reuse.tolist() == [5] and tasks[2].missing == [(3, "empty_text"), (9, "no_match")]


def test_text_features_bad_inputs_and_reference(store, client):
    texts = {
        0: "A toy cowboy fears being replaced.",
        1: "",
        2: "N/A",
        3: None,
        4: "very long plot " * 2000,
        5: "caf\xe9 soci\xe9ty".encode("cp1252"),  # not UTF-8
        6: "Two   spaces\tand\nnewlines",
    }
    ref = publish_texts(store, texts)
    out = extract_text_features(store, ref, "tiny-random-bert", client=client, batch_size=2)
    rows = features(store, out)
    assert sorted(rows) == sorted(texts)
    assert rows[1] == (None, "empty_text") and rows[2] == (None, "empty_text")
    assert rows[3] == (None, "no_match")
    enc = get_text_encoder("tiny-random-bert")
    for iid in (0, 4, 5, 6):
        expected = enc.encode([normalize_text(texts[iid]).text])[0]
        np.testing.assert_allclose(rows[iid][0], expected, atol=1e-5)
    m = store.manifest(out)
    assert m.stats["treatments"]["decoded_cp1252"] == 1
    assert m.stats["treatments"]["truncated_tokens"] == 1
    assert m.stats["present"] == 4 and m.stats["missing_by_reason"] == {"empty_text": 2, "no_match": 1}
    assert m.params["encoder"] == "tiny-random-bert" and m.info["encoder"]["dim"] == 32
    assert m.info["encoder"]["preprocessing"]["pooling"] == "mean"


def test_minilm_manifest_records_encoder_id_weights_hash_and_preprocessing(store, client):
    from mmiris.artifacts import file_sha256
    from mmiris.encoders.registry import minilm_folder

    ref = publish_texts(store, {0: "a dog", 1: "a cat", 2: None})
    out = extract_text_features(store, ref, "minilm", client=client)
    m = store.manifest(out)
    assert m.params["encoder"] == "all-MiniLM-L6-v2"
    assert m.params["weights_sha256"] == file_sha256(minilm_folder() / "model.safetensors")
    assert m.info["encoder"]["preprocessing"]["max_length"] == 256
    assert m.info["encoder"]["preprocessing"]["l2_normalize"] is True
    assert m.stats["dim"] == 384 and load_modality(store, out, 3).dim == 384


def test_doc2vec_trained_on_the_catalogue_ships_its_model(store, client):
    from mmiris.encoders.doc2vec import Doc2VecConfig

    texts = {i: f"a story about {w} and more {w}" for i, w in enumerate(["dogs", "cats", "kings"] * 3)}
    texts[9] = ""
    ref = publish_texts(store, texts)
    out = extract_text_features(
        store, ref, "doc2vec", client=client, doc2vec=Doc2VecConfig(vector_size=8, epochs=3, infer_epochs=3)
    )
    m = store.manifest(out)
    assert m.stats["dim"] == 8 and m.stats["present"] == 9 and "doc2vec.model" in m.files
    assert m.info["encoder"]["weights_sha256"] == m.files["doc2vec.model"]["sha256"]
    rows = features(store, out)
    np.testing.assert_array_equal(rows[0][0], rows[3][0])  # same text, same vector


def test_gpu_resource_routes_model_tasks_to_gpu_workers(store):
    """Workers started with ``--resources GPU=1`` get the model work (CPU-only here: the
    device then resolves to cpu, but the routing is the same)."""
    from distributed import Scheduler, SpecCluster, Worker

    spec = {
        "cpu": {"cls": Worker, "options": {"nthreads": 1}},
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
    }
    with SpecCluster(workers=spec, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}}) as cluster:
        ref = publish_images(store, {i: img((i, 0, 0)) for i in range(6)})
        # connect by address, as `--scheduler` does
        out = extract_image_features(store, ref, "tiny-random-cnn", client=cluster.scheduler_address, chunk_size=1)
    assert list(store.manifest(out).info["chunks_per_worker"]) == ["gpu"]


def test_own_cluster_runs_process_workers_with_the_allocator_tuned(store):
    """With no client the stage starts its own LocalCluster of worker processes, as `mmiris
    features` does. Dask's nanny gives those workers MALLOC_TRIM_THRESHOLD_=65536, which makes
    glibc mmap and unmap every conv activation each batch; the workers re-tune malloc
    (pipelines.extract.tune_allocator) and say so in the manifest. Vectors are unchanged."""
    images = {i: img((10 * i, 40, 200 - 10 * i)) for i in range(5)}
    ref = publish_images(store, images)
    out = extract_image_features(store, ref, "tiny-random-cnn", workers=1, reuse=False)  # default batch
    m = store.manifest(out)
    assert m.info["workers"] == 1
    assert m.info["worker_malloc_tuned"] == [True]
    enc = get_image_encoder("tiny-random-cnn")
    rows = features(store, out)
    for i, data in images.items():
        want = enc.encode(decode_image(data, enc.prep).tensor[None])[0]
        np.testing.assert_allclose(rows[i][0], want, rtol=1e-5, atol=1e-6)


def test_tune_allocator_applies_under_the_nannys_malloc_setting():
    import subprocess
    import sys

    code = "from mmiris.pipelines.extract import tune_allocator; print(tune_allocator(), tune_allocator())"
    env = {**__import__("os").environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
    env["MMIRIS_MALLOC_TUNING"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_default_batch_size_per_modality_and_device():
    from mmiris.pipelines.extract import default_batch_size

    assert default_batch_size("image", "cpu") == 16
    assert default_batch_size("image", "cuda:1") == 64
    assert default_batch_size("text", "cpu") == default_batch_size("text", "cuda:0") == 32
