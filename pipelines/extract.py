"""Feature extraction stage: item images / texts -> image_features / text_features artifacts.

Dask-parallel. The driver reads the input artifact, drops what needs no model (items
without an image or text, rows it can reuse from an earlier extraction with the same
encoder), and splits the rest into chunks scattered across the workers. Each worker loads
the encoder once (``EncoderCache``, a worker plugin keyed by the encoder spec) and encodes
its chunks in batches under ``torch.inference_mode()``, decoding/tokenising the next batch
in a prefetch thread while the current one runs through the model. A worker with CUDA
runs on it (fp16 autocast); when any worker advertises the Dask resource ``GPU``, the model
tasks are pinned to those workers. CPU workers set torch's thread pool to their Dask thread
count, so N workers x 1 thread use N cores, not N x all cores.

Every input item gets an output row: a vector and ``present=True``, or no vector,
``present=False`` and a reason (no image, corrupt image, empty text, ...). Incremental:
rows of the newest earlier extraction with the same encoder (weights hash, preprocessing)
are reused when the item's content hash is unchanged, so a grown catalogue only encodes
its new items.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.code_version import source_version
from mmiris.artifacts.store import full_code_version
from mmiris.encoders.registry import (
    EncoderSpec,
    image_encoder_spec,
    image_preprocessing,
    load_image_encoder,
    load_text_encoder,
    text_encoder_spec,
)
from mmiris.errors import InputError, MmirisError
from mmiris.progress import Progress

try:  # Dask is a dependency; the plugin base class only matters when a cluster runs
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover
    WorkerPlugin = object  # type: ignore[assignment,misc]

log = logging.getLogger("mmiris.extract")

PLUGIN_NAME = "mmiris-encoders"
CODE = ("mmiris.pipelines.extract", "mmiris.encoders")  # encoders, preprocessing, the run


# ====================================================================== public stage functions
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
    for a LocalCluster of ``workers`` processes (default: one per core) with one thread each.
    ``device``: ``auto`` (CUDA where a worker has it), ``cpu`` or ``cuda``. ``batch_size``:
    images per model call; None picks per worker device (``default_batch_size``).
    """
    spec = image_encoder_spec(encoder)
    ref = store.resolve(item_images_ref)
    prep = image_preprocessing(spec)
    params = {
        "encoder": spec.id,
        "family": spec.family,
        "weights_sha256": spec.weights_sha256,
        "options": spec.opts,
        "preprocessing": prep.to_dict(),
    }
    run = _RunOptions(client, workers, batch_size, device, torch_threads, chunk_size)

    def build() -> Output:
        items, missing, pre = _read_images(store, ref)
        return _extract(store, "image", ref, spec, params, items, missing, pre, run, name=name, reuse=reuse)

    return store.get_or_create(name, "image_features", [ref], params, build, code_version=source_version(*CODE))


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
    ``Doc2VecConfig`` for ``encoder="doc2vec"``, which is trained here on the catalogue's texts.
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
    run = _RunOptions(client, workers, batch_size, device, torch_threads, chunk_size)

    def build() -> Output:
        items, missing, pre = _read_texts(store, ref)
        files = {}
        run_spec, blob = spec, None
        if spec.family == "doc2vec":
            from mmiris.encoders.doc2vec import Doc2VecConfig, train_doc2vec

            if not items:
                raise InputError(f"artifact {ref}: no item has text; Doc2Vec has nothing to train on")
            blob = train_doc2vec([it.payload for it in items], Doc2VecConfig(**spec.opts))
            run_spec = replace(spec, weights_sha256=hashlib.sha256(blob).hexdigest())
            files["doc2vec.model"] = blob
        out = _extract(
            store,
            "text",
            ref,
            run_spec,
            params,
            items,
            missing,
            pre,
            run,
            name=name,
            reuse=reuse and spec.family != "doc2vec",
            blob=blob,
        )
        out.files.update(files)
        return out

    return store.get_or_create(name, "text_features", [ref], params, build, code_version=source_version(*CODE))


# ====================================================================== inputs
@dataclass
class _Item:
    item_id: int
    sha256: str  # content hash (image bytes / normalised text): the reuse key with item_id
    payload: bytes | str


def _read_images(store: ArtifactStore, ref: ArtifactRef):
    """Items with image bytes to encode, and item_id -> reason for those without."""
    t = store.read_table(ref, "item_images", columns=["item_id", "image", "present", "reason", "sha256"])
    items: list[_Item] = []
    missing: dict[int, str] = {}
    pre: Counter[str] = Counter()
    seen = set()
    for iid, data, present, reason, sha in zip(*(t.column(c).to_pylist() for c in t.column_names)):
        if iid in seen:
            pre["duplicate_item_id_dropped"] += 1
            continue
        seen.add(iid)
        if not present or not data:
            missing[iid] = reason or "no_image"
            continue
        items.append(_Item(iid, sha or hashlib.sha256(data).hexdigest(), data))
    return items, missing, pre


def _read_texts(store: ArtifactStore, ref: ArtifactRef):
    from mmiris.encoders.text import normalize_text

    t = store.read_table(ref, "item_text", columns=["item_id", "text", "present", "reason"])
    # Read the text as bytes: a string column written by another tool may hold invalid UTF-8,
    # which normalize_text decodes (cp1252/latin-1) instead of failing the whole run.
    raw = t.column("text").cast(pa.binary()).to_pylist()
    items: list[_Item] = []
    missing: dict[int, str] = {}
    pre: Counter[str] = Counter()
    seen = set()
    for iid, data, present, reason in zip(
        t.column("item_id").to_pylist(), raw, t.column("present").to_pylist(), t.column("reason").to_pylist()
    ):
        if iid in seen:
            pre["duplicate_item_id_dropped"] += 1
            continue
        seen.add(iid)
        if not present or data is None:
            missing[iid] = reason or "no_text"
            continue
        norm = normalize_text(data)
        pre.update(norm.treatments)
        if norm.text is None:
            missing[iid] = norm.reason or "no_text"
            continue
        items.append(_Item(iid, hashlib.sha256(norm.text.encode()).hexdigest(), norm.text))
    return items, missing, pre


def _content_hashes(store: ArtifactStore, modality: str, ref: ArtifactRef) -> dict[int, str]:
    items, _, _ = _read_images(store, ref) if modality == "image" else _read_texts(store, ref)
    return {it.item_id: it.sha256 for it in items}


# ====================================================================== incremental reuse
def _reusable_rows(store: ArtifactStore, name: str, kind: str, params: dict, modality: str):
    """(item_id, content sha256) -> (vector | None, reason) from the newest extraction made
    with the same encoder, preprocessing and extraction code, and that artifact's ref."""
    code = full_code_version(source_version(*CODE))
    for m in reversed(store.versions(name)):
        if m.kind != kind or m.params != params or m.code_version != code or not m.parents:
            continue
        try:
            hashes = _content_hashes(store, modality, ArtifactRef.parse(m.parents[0]))
            t = store.read_table(m.ref, "features")
        except MmirisError as exc:
            log.warning("cannot reuse %s (%s); skipping it", m.ref, exc)
            continue
        vecs = _vectors(t)
        rows = {}
        for i, (iid, present, reason) in enumerate(
            zip(t.column("item_id").to_pylist(), t.column("present").to_pylist(), t.column("reason").to_pylist())
        ):
            sha = hashes.get(iid)
            if sha is None:
                continue  # the item had no content then: nothing was computed for it
            rows[(iid, sha)] = (vecs[i] if present else None, reason)
        return rows, m.ref
    return {}, None


def _vectors(t: pa.Table) -> np.ndarray:
    col = t.column("feature").combine_chunks()
    dim = col.type.list_size
    filled = col.fill_null([0.0] * dim) if col.null_count else col
    return filled.flatten().to_numpy(zero_copy_only=False).reshape(len(t), dim).astype(np.float32)


# ====================================================================== the run
@dataclass
class _RunOptions:
    client: object = None
    workers: int | None = None
    batch_size: int | None = None  # None: default_batch_size on each worker
    device: str = "auto"
    torch_threads: int | None = None
    chunk_size: int | None = None


@dataclass
class _ChunkResult:
    item_ids: list[int]
    vectors: np.ndarray  # [n_ok, dim] float32, rows of the items with reason None
    reasons: list[str | None]
    treatments: Counter = field(default_factory=Counter)
    encoder: dict = field(default_factory=dict)  # encoder.describe() on the worker
    worker: str = ""
    seconds: float = 0.0
    malloc_tuned: bool = False  # the worker process re-tuned glibc malloc (tune_allocator)


def _extract(
    store, modality, ref, spec, params, items, missing, pre, run: _RunOptions, *, name, reuse, blob=None
) -> Output:
    kind = f"{modality}_features"
    t0 = time.perf_counter()
    reused, reused_from = ({}, None)
    if reuse:
        reused, reused_from = _reusable_rows(store, name, kind, params, modality)
    todo = [it for it in items if (it.item_id, it.sha256) not in reused]
    n_reused = len(items) - len(todo)
    if reused_from is not None:
        log.info(
            "reusing %d rows of %s (same encoder, unchanged content); %d to encode", n_reused, reused_from, len(todo)
        )

    results: list[_ChunkResult] = []
    workers_used = 0
    if todo:
        with dask_client(run.client, run.workers) as client:
            workers_used = len(client.scheduler_info(n_workers=-1)["workers"])
            results = list(_run_chunks(client, modality, spec, todo, run, blob))
    seconds = time.perf_counter() - t0

    # ---- assemble one row per input item, in item_id order
    enc_info = next((r.encoder for r in results if r.encoder), {})
    dim = enc_info.get("dim") or next((len(v) for v, _ in reused.values() if v is not None), None)
    if dim is None:  # nothing encoded and nothing reused: ask the encoder its size
        dim = _local_dim(modality, spec, blob)
    rows: dict[int, tuple[np.ndarray | None, str | None]] = {iid: (None, reason) for iid, reason in missing.items()}
    for it in items:
        if (it.item_id, it.sha256) in reused:
            rows[it.item_id] = reused[(it.item_id, it.sha256)]
    treatments = Counter(pre)
    for r in results:
        treatments.update(r.treatments)
        ok = iter(r.vectors)
        for iid, reason in zip(r.item_ids, r.reasons):
            rows[iid] = (next(ok), None) if reason is None else (None, reason)
    ids = np.array(sorted(rows), dtype=np.int64)
    feats = np.zeros((len(ids), dim), dtype=np.float32)
    present = np.zeros(len(ids), dtype=bool)
    reasons = []
    for k, iid in enumerate(ids.tolist()):
        vec, reason = rows[iid]
        if vec is not None:
            feats[k], present[k] = vec, True
        reasons.append(reason)
    feature = pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1)), dim, mask=pa.array(~present))
    table = pa.table({"item_id": ids, "feature": feature, "present": present, "reason": pa.array(reasons, pa.string())})

    by_reason = Counter(_reason_class(r) for r in reasons if r is not None)
    n_computed = sum(len(r.item_ids) for r in results)
    stats = {
        "items": len(ids),
        "present": int(present.sum()),
        "missing": int((~present).sum()),
        "missing_by_reason": dict(sorted(by_reason.items())),
        "treatments": dict(sorted(treatments.items())),
        "computed": n_computed,
        "reused": n_reused,
        "dim": dim,
    }
    per_worker = Counter(r.worker for r in results)
    info = {
        "encoder": {**spec.to_dict(), **{k: v for k, v in enc_info.items() if k != "device"}},
        "input": str(ref),
        "reused_from": str(reused_from) if reused_from else None,
        "workers": workers_used,
        "chunks_per_worker": dict(per_worker),
        "devices": sorted({r.encoder.get("device", "") for r in results}),
        "precision": sorted({r.encoder.get("precision", "") for r in results}),
        "worker_malloc_tuned": sorted({r.malloc_tuned for r in results}),
        "seconds": round(seconds, 3),
        "computed_items_per_s": round(n_computed / seconds, 3) if seconds > 0 else None,
    }
    log.info(
        "%s features: %d items, %d present, %d missing %s, %d computed, %d reused",
        modality,
        stats["items"],
        stats["present"],
        stats["missing"],
        stats["missing_by_reason"],
        n_computed,
        n_reused,
    )
    return Output(tables={"features": table}, stats=stats, info=info)


def _reason_class(reason: str) -> str:
    return reason.split(":", 1)[0]


def _local_dim(modality: str, spec: EncoderSpec, blob: bytes | None) -> int:
    enc = load_image_encoder(spec) if modality == "image" else load_text_encoder(spec, blob=blob)
    return enc.dim


def _run_chunks(
    client, modality: str, spec: EncoderSpec, todo: list[_Item], run: _RunOptions, blob: bytes | None
) -> Iterator[_ChunkResult]:
    from distributed import as_completed

    client.register_plugin(EncoderCache(), name=PLUGIN_NAME)
    info = client.scheduler_info(n_workers=-1)["workers"]
    gpu_workers = [a for a, w in info.items() if w.get("resources", {}).get("GPU", 0) > 0]
    use_gpu = bool(gpu_workers) and run.device != "cpu" and spec.family != "doc2vec"
    slots = sum(w["nthreads"] for a, w in info.items() if not use_gpu or a in gpu_workers) or 1
    if modality == "text":
        # Similar lengths in a batch: little padding, several times less transformer work.
        todo = sorted(todo, key=lambda it: len(it.payload))
    per_call = run.batch_size or 32
    size = run.chunk_size or max(per_call, min(per_call * 8, math.ceil(len(todo) / (slots * 4))))
    chunks = [[(it.item_id, it.payload) for it in todo[i : i + size]] for i in range(0, len(todo), size)]
    targets = gpu_workers if use_gpu else None
    resources = {"GPU": 1} if use_gpu else None
    blob_f = client.scatter(blob, broadcast=True, workers=targets) if blob is not None else None
    data = client.scatter(chunks, workers=targets)
    addrs = targets or list(info)
    if len(chunks) >= len(addrs):
        # Load the model on every worker first (one task each, pinned), so the progress rate
        # and ETA below measure encoding, not start-up; the cache keeps it for the chunks.
        t = time.perf_counter()
        client.gather(
            [
                client.submit(
                    _warm_up,
                    modality,
                    spec,
                    run.device,
                    run.torch_threads,
                    blob_f,
                    workers=[a],
                    allow_other_workers=False,
                    resources=resources,
                    pure=False,
                )
                for a in addrs
            ]
        )
        log.info("%s loaded on %d worker(s) in %.1fs", spec.id, len(addrs), time.perf_counter() - t)
    futures = [
        client.submit(
            _encode_chunk,
            modality,
            spec,
            d,
            run.batch_size,
            run.device,
            run.torch_threads,
            blob_f,
            resources=resources,
            pure=False,
        )
        for d in data
    ]
    log.info(
        "%s: %d items in %d chunks on %d worker(s)%s",
        spec.id,
        len(todo),
        len(chunks),
        len(info),
        " (GPU workers)" if use_gpu else "",
    )
    with Progress(len(todo), f"extract {modality} features ({spec.id})", log) as progress:
        for fut in as_completed(futures):
            res = fut.result()
            progress.update(len(res.item_ids))
            fut.release()
            yield res


@contextmanager
def dask_client(client=None, workers: int | None = None):
    """A given Client as is; a scheduler address connected to; else a LocalCluster here."""
    from distributed import Client, LocalCluster

    if client is not None and not isinstance(client, str):
        yield client
        return
    if isinstance(client, str):
        c = Client(client)
        try:
            yield c
        finally:
            c.close()
        return
    n = workers or _cores()
    resources = None
    try:
        import torch

        if torch.cuda.is_available():
            n = workers or torch.cuda.device_count()
            resources = {"GPU": 1}
    except ImportError:  # pragma: no cover
        pass
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0", resources=resources
    )
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


# ====================================================================== worker side
class EncoderCache(WorkerPlugin):
    """Per-worker cache of loaded encoders, keyed by spec: each model is loaded once per worker.

    ``loads`` counts loads by encoder key (tests and the manifest read it).
    """

    idempotent = True  # registering again keeps the loaded models

    def __init__(self):
        self.encoders: dict[str, object] = {}
        self.loads: Counter = Counter()
        self.worker_name = "local"

    def __getstate__(self) -> dict:  # shipped to workers empty; the models load there
        return {}

    def __setstate__(self, state: dict) -> None:
        EncoderCache.__init__(self)

    def setup(self, worker) -> None:
        self.worker_name = str(worker.name)
        if _own_process(worker):  # once per worker process, before any model runs
            tune_allocator()

    def get(self, modality: str, spec: EncoderSpec, device: str, blob: bytes | None = None):
        key = f"{spec.key}@{device}"
        # One load at a time per process: two task threads must not both load, and
        # transformers' lazy imports are not safe to race (in-process clusters).
        with _LOAD_LOCK:
            if key not in self.encoders:
                t = time.perf_counter()
                if modality == "image":
                    enc = load_image_encoder(spec, device)
                else:
                    enc = load_text_encoder(spec, device, blob)
                self.encoders[key] = enc
                self.loads[spec.key] += 1
                log.info(
                    "worker %s loaded encoder %s on %s in %.1fs",
                    self.worker_name,
                    spec.id,
                    device,
                    time.perf_counter() - t,
                )
            return self.encoders[key]


_LOAD_LOCK = threading.Lock()
_LOCAL_CACHE = EncoderCache()  # outside a Dask worker (direct calls)


def _worker_cache() -> tuple[EncoderCache, Any]:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return _LOCAL_CACHE, None
    cache: EncoderCache = worker.plugins.get(PLUGIN_NAME, _LOCAL_CACHE)  # type: ignore[assignment]
    return cache, worker


def _resolve_device(device: str, worker) -> str:
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        if device == "cuda":
            raise MmirisError("device cuda requested but this worker has no CUDA device")
        return "cpu"
    n = torch.cuda.device_count()
    name = getattr(worker, "name", 0)
    # LocalCluster names workers 0..n-1: spread them over the GPUs. Workers started by hand
    # get their GPU through CUDA_VISIBLE_DEVICES and see it as cuda:0.
    return f"cuda:{name % n}" if isinstance(name, int) else "cuda:0"


MMAP_THRESHOLD = 32 << 20  # glibc's largest; tensors below it are reused from the heap
TRIM_THRESHOLD = 64 << 20
_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Let glibc malloc keep the encoder's activation buffers between batches.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory back to
    the OS), and setting that variable switches off glibc's dynamic mmap threshold: every
    buffer over 128 KiB - every conv activation - is then mmapped, page-faulted and unmapped
    again each batch. Measured on EfficientNet-Lite0, 1 thread, batch 32: 20.2 images/s
    encoding in a plain process, 16.8 with the nanny's variable, 25.0 with it plus this
    function. Raising the mmap threshold to its maximum (32 MiB) and the trim threshold to
    64 MiB restores reuse, at the price of freed memory staying in the worker's heap.
    ``MMIRIS_MALLOC_TUNING=0`` turns it off. Returns whether it applied (glibc only)."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or os.environ.get("MMIRIS_MALLOC_TUNING", "1") == "0":
        return _ALLOCATOR_TUNED
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        _ALLOCATOR_TUNED = bool(
            libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD) and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED


def _own_process(worker) -> bool:
    """Whether this is a Dask worker in a process of its own. Threads of an in-process cluster
    share the client's torch and allocator, which are not ours to change."""
    return worker is not None and multiprocessing.current_process().name != "MainProcess"


def _set_threads(worker, torch_threads: int | None) -> None:
    """Torch intra-op threads = this worker's Dask threads (or as given): no oversubscription.
    Only in a worker process of its own (``_own_process``)."""
    import torch

    if not _own_process(worker):
        return
    n = torch_threads or worker.state.nthreads
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _load_encoder(modality: str, spec: EncoderSpec, device: str, torch_threads: int | None, blob: bytes | None):
    """Runs on a worker: the worker's cached encoder for this spec (loaded on first use)."""
    cache, worker = _worker_cache()
    _set_threads(worker, torch_threads)
    dev = "cpu" if spec.family == "doc2vec" else _resolve_device(device, worker)
    return cache, cache.get(modality, spec, dev, blob)


def _warm_up(*args) -> int:
    """Runs on a worker: load the encoder into the cache; returns its dim (not the model)."""
    return _load_encoder(*args)[1].dim


def default_batch_size(modality: str, device: str) -> int:
    """Items per model call when none is given: 16 images on CPU (measured faster than 32:
    EfficientNet-Lite0 on this project's 2-core machine, 2 Dask workers, 47.4 images/s at 16
    against 33.3 at 32), 64 on CUDA (not measured: no GPU was lent); 32 texts."""
    if modality == "image":
        return 64 if device.startswith("cuda") else 16
    return 32


def _encode_chunk(
    modality: str,
    spec: EncoderSpec,
    chunk: list[tuple[int, object]],
    batch_size: int | None,
    device: str,
    torch_threads: int | None,
    blob: bytes | None,
) -> _ChunkResult:
    """Runs on a worker: encode one chunk of (item_id, image bytes | text)."""
    t0 = time.perf_counter()
    cache, enc = _load_encoder(modality, spec, device, torch_threads, blob)
    prepare = _prepare_images if modality == "image" else _prepare_texts
    batch_size = batch_size or default_batch_size(modality, str(getattr(enc, "device", "cpu")))
    batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    ids: list[int] = []
    reasons: list[str | None] = []
    vecs: list[np.ndarray] = []
    treatments: Counter[str] = Counter()
    for batch, (ok_x, batch_reasons, tr) in _prefetched(batches, lambda b: prepare(enc, b)):
        ids.extend(iid for iid, _ in batch)
        reasons.extend(batch_reasons)
        treatments.update(tr)
        if ok_x is not None:
            vecs.append(enc.run(ok_x))
    dim = enc.dim
    return _ChunkResult(
        ids,
        np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32),
        reasons,
        treatments,
        enc.describe(),
        cache.worker_name,
        time.perf_counter() - t0,
        malloc_tuned=_ALLOCATOR_TUNED,
    )


def _prefetched(batches: list, prepare) -> Iterator[tuple[list, Any]]:
    """Yield (batch, prepare(batch)), preparing batch k+1 in a thread while k is consumed."""
    if not batches:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="mmiris-prefetch") as pool:
        fut = pool.submit(prepare, batches[0])
        for k, batch in enumerate(batches):
            prepared = fut.result()
            if k + 1 < len(batches):
                fut = pool.submit(prepare, batches[k + 1])
            yield batch, prepared


def _prepare_images(enc, batch):
    import torch

    from mmiris.encoders.image import decode_image

    decoded = [decode_image(data, enc.prep) for _, data in batch]
    treatments = Counter(t for d in decoded for t in d.treatments)
    ok = [d.tensor for d in decoded if d.reason is None]
    return (torch.stack(ok) if ok else None), [d.reason for d in decoded], treatments


def _prepare_texts(enc, batch):
    inputs, n_cut = enc.prepare([text for _, text in batch])
    return inputs, [None] * len(batch), Counter({"truncated_tokens": n_cut} if n_cut else {})


# ====================================================================== loaders for raw folders
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def images_from_folder(
    store: ArtifactStore,
    folder: str | Path,
    *,
    id_map: dict[str, int] | None = None,
    limit: int | None = None,
    name: str = "item_images",
) -> ArtifactRef:
    """Publish an ``item_images`` artifact from ``<folder>/<key>.<ext>`` files.

    ``key`` is the file stem; it is the item id (an integer) unless ``id_map`` maps it.
    Files are stored as fetched; format and size are read by content (posters named .jpg
    may be PNG or TIFF). Unreadable files stay in the artifact with ``present`` false.
    The version is keyed by content: every file's sha256 with its name and item id, and the
    id map, so an edited poster gives a new version and an unchanged folder finds the old one.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder}: not a directory")
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: (len(p.stem), p.stem)
    )
    rows = []
    for p in files:
        key = p.stem
        if id_map is not None:
            if key not in id_map:
                continue
            iid = id_map[key]
        else:
            try:
                iid = int(key)
            except ValueError:
                raise InputError(
                    f"image file {p}: name {key!r} is not an integer item id "
                    f"(pass id_map to map file names to item ids)"
                ) from None
        rows.append((iid, p))
    rows = sorted(rows)[:limit] if limit else sorted(rows)
    cols: dict[str, list] = {
        c: [] for c in ("item_id", "image", "present", "reason", "sha256", "width", "height", "format", "source_url")
    }
    for iid, p in rows:
        data = p.read_bytes()
        w = h = fmt = reason = None
        try:
            with Image.open(p) as im:
                w, h, fmt = im.size[0], im.size[1], im.format
        except Exception as exc:  # noqa: BLE001 - recorded, extraction reports it too
            reason = f"unreadable_image: {type(exc).__name__}"
        for c, v in zip(
            cols,
            (
                iid,
                data,
                bool(data),
                reason if data else "empty_file",
                hashlib.sha256(data).hexdigest(),
                w,
                h,
                fmt,
                p.as_uri(),
            ),
        ):
            cols[c].append(v)
    # An unreadable file keeps present=True: extraction is where it is decoded and reported.
    table = pa.table({c: pa.array(v) for c, v in cols.items()})
    content = _digest([(iid, p.name, sha) for (iid, p), sha in zip(rows, cols["sha256"])])
    return store.publish(
        name,
        "item_images",
        Output({"item_images": table}, info={"source": str(folder)}),
        params={
            "folder": str(folder.resolve()),
            "files": len(rows),
            "content_sha256": content,
            "id_map_sha256": _id_map_digest(id_map),
            "limit": limit,
        },
        code_version=source_version("mmiris.pipelines.extract"),
    )


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _id_map_digest(id_map: dict[str, int] | None) -> str | None:
    return None if id_map is None else _digest(sorted((str(k), int(v)) for k, v in id_map.items()))


def texts_from_jsonl(
    store: ArtifactStore,
    path: str | Path,
    *,
    id_field: str = "movie_id",
    text_field: str = "Plot",
    id_map: dict[str, int] | None = None,
    limit: int | None = None,
    name: str = "item_text",
) -> ArtifactRef:
    """Publish an ``item_text`` artifact from a JSON-lines file (e.g. OMDb records).

    Lines are read as bytes: a line that is not UTF-8 is decoded as cp1252. A malformed line
    raises naming file and line. The version is keyed by the file's sha256 and the id map.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"text file {path}: not found")
    cols: dict[str, list] = {
        c: []
        for c in (
            "item_id",
            "text",
            "present",
            "reason",
            "title",
            "genre",
            "director",
            "actors",
            "year",
            "imdb_id",
            "match_method",
            "raw_json",
        )
    }
    file_hash = hashlib.sha256()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            file_hash.update(raw)
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("cp1252", errors="replace")
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not a JSON object ({exc.msg})") from None
            key = rec.get(id_field)
            if key is None:
                raise InputError(f"{path}:{lineno}: field {id_field!r} missing (expected the item id)")
            if id_map is not None:
                if str(key) not in id_map:
                    continue
                iid = id_map[str(key)]
            else:
                iid = int(key)
            text = rec.get(text_field)
            ok = isinstance(text, str) and text.strip() not in ("", "N/A")
            vals = (
                iid,
                text if isinstance(text, str) else None,
                ok,
                None if ok else f"no_{text_field.lower()}",
                rec.get("Title"),
                rec.get("Genre"),
                rec.get("Director"),
                rec.get("Actors"),
                rec.get("Year"),
                rec.get("imdbID"),
                "id",
                line.strip(),
            )
            for c, v in zip(cols, vals):
                cols[c].append(v)
            if limit and len(cols["item_id"]) >= limit:
                break
    table = pa.table({c: pa.array(v) for c, v in cols.items()})
    return store.publish(
        name,
        "item_text",
        Output({"item_text": table}, info={"source": str(path)}),
        params={
            "file": str(path.resolve()),
            "sha256": file_hash.hexdigest(),
            "id_field": id_field,
            "text_field": text_field,
            "id_map_sha256": _id_map_digest(id_map),
            "limit": limit,
        },
        code_version=source_version("mmiris.pipelines.extract"),
    )
