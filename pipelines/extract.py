"""Feature extraction stage: item images / texts -> image_features / text_features artifacts.

Dask-parallel, with the driver out of the data path. The driver reads the input's index
(item ids, content hashes, reasons of items without content; ``mmiris.features.inputs``),
finds the rows it can reuse from an earlier extraction with the same encoder
(``mmiris.features.reuse``), and cuts the items into tasks over consecutive id ranges
(``mmiris.features.run``). Each task's worker reads its own items from the store, encodes
them with the encoder it loaded once (``mmiris.features.worker``) and writes its own part
file of the output; the driver commits the parts as one version.

Every input item gets an output row: a vector and ``present=True``, or no vector,
``present=False`` and a reason (no image, corrupt image, empty text, ...).

``images_from_folder`` / ``texts_from_jsonl`` (publishing inputs from raw files) live in
``mmiris.ingest.folders`` and are re-exported here.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.artifacts.code_version import source_version
from mmiris.encoders.registry import EncoderSpec, image_encoder_spec, image_preprocessing, text_encoder_spec
from mmiris.errors import InputError
from mmiris.features.inputs import image_index, text_index
from mmiris.features.run import RunOptions, extract
from mmiris.features.worker import PLUGIN_NAME, EncoderCache, default_batch_size, tune_allocator
from mmiris.ingest.folders import IMAGE_SUFFIXES, images_from_folder, texts_from_jsonl

__all__ = [
    "CODE",
    "IMAGE_SUFFIXES",
    "PLUGIN_NAME",
    "EncoderCache",
    "default_batch_size",
    "extract_image_features",
    "extract_text_features",
    "images_from_folder",
    "texts_from_jsonl",
    "tune_allocator",
]

CODE = ("mmiris.pipelines.extract", "mmiris.features", "mmiris.encoders")  # the run, encoders, preprocessing


def extract_image_features(
    store: ArtifactStore,
    item_images_ref: ArtifactRef | str,
    encoder: str | EncoderSpec = "efficientnet-lite0",
    *,
    client=None,
    workers: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    torch_threads: int | None = None,
    chunk_size: int | None = None,
    reuse: bool = True,
    name: str = "image_features",
) -> ArtifactRef:
    """Encode every item's image into an ``image_features`` artifact.

    ``client``: a ``distributed.Client``, a scheduler address (``tcp://host:8786``), or None
    for a local cluster (``mmiris.cluster.dask_client``: ``workers`` processes, default one
    per core, one thread each; one per GPU through dask-cuda on a GPU machine). ``device``:
    ``auto`` (CUDA where a worker has it), ``cpu`` or ``cuda``. ``batch_size``: images per
    model call; None picks per worker device (``default_batch_size``). ``chunk_size``: items
    a task encodes (one output part file per task).
    """
    spec = image_encoder_spec(encoder)
    ref = store.resolve(item_images_ref)
    params = {
        "encoder": spec.id,
        "family": spec.family,
        "weights_sha256": spec.weights_sha256,
        "options": spec.opts,
        "preprocessing": image_preprocessing(spec).to_dict(),
    }
    code = source_version(*CODE)
    found = store.ref_for(name, "image_features", [ref], params, code)
    if store.exists(found):
        return _found(found)
    opts = RunOptions(client, workers, batch_size, device, torch_threads, chunk_size)
    index = image_index(store, ref)
    return extract(store, "image", ref, spec, params, code, index, opts, name=name, reuse=reuse)


def extract_text_features(
    store: ArtifactStore,
    item_text_ref: ArtifactRef | str,
    encoder: str | EncoderSpec = "minilm",
    *,
    client=None,
    workers: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    torch_threads: int | None = None,
    chunk_size: int | None = None,
    reuse: bool = True,
    pooling: str | None = None,
    max_length: int | None = None,
    doc2vec=None,
    name: str = "text_features",
) -> ArtifactRef:
    """Encode every item's text into a ``text_features`` artifact (see extract_image_features).

    ``pooling`` (mean|cls) and ``max_length`` override the encoder's; ``doc2vec`` takes a
    ``Doc2VecConfig`` for ``encoder="doc2vec"``, which is trained here, on the driver, on the
    catalogue's texts (the one case where the driver reads every text).
    """
    spec = text_encoder_spec(encoder, pooling=pooling, max_length=max_length, doc2vec=doc2vec)
    ref = store.resolve(item_text_ref)
    params = {
        "encoder": spec.id,
        "family": spec.family,
        "weights_sha256": spec.weights_sha256,
        "options": spec.opts,
        "preprocessing": {"normalize_text": "v1"},
    }
    code = source_version(*CODE)
    found = store.ref_for(name, "text_features", [ref], params, code)
    if store.exists(found):
        return _found(found)
    opts = RunOptions(client, workers, batch_size, device, torch_threads, chunk_size)
    index = text_index(store, ref)
    run_spec, blob, files = spec, None, {}
    if spec.family == "doc2vec":
        from mmiris.encoders.doc2vec import Doc2VecConfig, train_doc2vec
        from mmiris.features.inputs import texts_in_table_order

        if not len(index):
            raise InputError(f"artifact {ref}: no item has text; Doc2Vec has nothing to train on")
        blob = train_doc2vec(texts_in_table_order(store, ref), Doc2VecConfig(**spec.opts))
        run_spec = replace(spec, weights_sha256=hashlib.sha256(blob).hexdigest())
        files["doc2vec.model"] = blob
    return extract(
        store,
        "text",
        ref,
        run_spec,
        params,
        code,
        index,
        opts,
        name=name,
        reuse=reuse and spec.family != "doc2vec",
        blob=blob,
        files=files,
    )


def _found(ref: ArtifactRef) -> ArtifactRef:
    import logging

    logging.getLogger("mmiris.store").info("found existing %s (same inputs and parameters); not recomputing", ref)
    return ref
