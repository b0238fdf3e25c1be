"""The worker side of feature extraction: one task = one id range = one part file.

A task reads its own items from the input artifact (``inputs.read_payloads``), encodes them
in batches under ``torch.inference_mode()`` (decoding/tokenising batch k+1 in a prefetch
thread while batch k runs through the model), takes reused rows from the earlier extraction,
adds the rows of items without content, and writes the part to the staged output version
(``ArtifactStore.write_part``). Only a small :class:`TaskResult` goes back to the driver.

Each worker loads an encoder once (:class:`EncoderCache`, a worker plugin keyed by the
encoder spec). A worker process sets torch's intra-op threads to its Dask thread count and
re-tunes glibc malloc (:func:`tune_allocator`); threads of an in-process cluster leave both
alone, as they belong to the caller.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.artifacts.store import Staged
from mmiris.encoders.registry import EncoderSpec, load_image_encoder, load_text_encoder
from mmiris.errors import MmirisError
from mmiris.features.inputs import read_payloads

try:  # Dask is a dependency; the plugin base class only matters when a cluster runs
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover
    WorkerPlugin = object  # type: ignore[assignment,misc]

log = logging.getLogger("mmiris.extract")

PLUGIN_NAME = "mmiris-encoders"


@dataclass(frozen=True, eq=False)
class Task:
    """One part of the output: its items to encode, to reuse, and without content. The ids
    are int64 arrays, not lists: the driver holds every task of a run until it completes."""

    index: int  # part number
    encode: np.ndarray  # item ids read from the input and encoded
    reuse: np.ndarray  # item ids whose rows come from ``RunSpec.reuse_from``
    missing: list[tuple[int, str]]  # (item id, reason) of items without content


@dataclass(frozen=True)
class RunSpec:
    """What every task of one extraction shares (pickled once per task; small)."""

    store: ArtifactStore
    staged: Staged
    modality: str
    input_ref: ArtifactRef
    spec: EncoderSpec
    batch_size: int | None
    device: str
    torch_threads: int | None
    reuse_from: ArtifactRef | None = None
    dim: int | None = None  # known when no task encodes (then no encoder is loaded)


@dataclass
class TaskResult:
    part: dict  # the part's meta for ArtifactStore.commit
    computed: int
    present: int
    reasons: Counter = field(default_factory=Counter)  # missing rows by reason
    treatments: Counter = field(default_factory=Counter)
    encoder: dict = field(default_factory=dict)  # encoder.describe() on the worker
    worker: str = ""
    seconds: float = 0.0
    malloc_tuned: bool = False
    dim: int = 0


def run_task(run: RunSpec, task: Task, blob: bytes | None = None) -> TaskResult:
    """Runs on a worker (or in the driver when nothing needs a model): write one part."""
    t0 = time.perf_counter()
    rows: dict[int, tuple[np.ndarray | None, str | None]] = {iid: (None, r) for iid, r in task.missing}
    treatments: Counter[str] = Counter()
    enc_info: dict = {}
    worker_name = "local"
    dim = run.dim
    if len(task.encode):
        cache, enc = load_encoder(run.modality, run.spec, run.device, run.torch_threads, blob)
        worker_name, dim, enc_info = cache.worker_name, enc.dim, enc.describe()
        encode = task.encode.tolist()
        got = dict(read_payloads(run.store, run.input_ref, run.modality, encode))
        items = [(iid, got.get(iid)) for iid in encode]  # the planned order (texts: by length)
        for iid, vec, reason in _encode(run, enc, items, treatments):
            rows[iid] = (vec, reason)
    if len(task.reuse):
        assert run.reuse_from is not None
        old = run.store.read_table(run.reuse_from, "features", ids=task.reuse.tolist())
        vecs = vectors(old)
        for k, (iid, present, reason) in enumerate(
            zip(old.column("item_id").to_pylist(), old.column("present").to_pylist(), old.column("reason").to_pylist())
        ):
            rows[iid] = (vecs[k] if present else None, reason)
        dim = dim or vecs.shape[1]
    if dim is None:
        raise MmirisError(f"part {task.index} of {run.staged.ref}: the feature size is unknown")
    table = feature_table(rows, dim)
    part = run.store.write_part(run.staged, "features", task.index, table)
    reasons = Counter(r.split(":", 1)[0] for r in table.column("reason").to_pylist() if r is not None)
    return TaskResult(
        part,
        computed=len(task.encode),
        present=table.num_rows - table.column("feature").null_count,
        reasons=reasons,
        treatments=treatments,
        encoder=enc_info,
        worker=worker_name,
        seconds=time.perf_counter() - t0,
        malloc_tuned=_ALLOCATOR_TUNED,
        dim=dim,
    )


def _encode(run: RunSpec, enc, items: list[tuple[int, Any]], treatments: Counter) -> Iterator[tuple]:
    """(item_id, vector | None, reason | None) for each item, encoded in batches."""
    empty = [(iid, None, "no_image" if run.modality == "image" else "no_text") for iid, p in items if not p]
    yield from empty
    items = [(iid, p) for iid, p in items if p]
    prepare = _prepare_images if run.modality == "image" else _prepare_texts
    batch_size = run.batch_size or default_batch_size(run.modality, str(getattr(enc, "device", "cpu")))
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    for batch, (ok_x, batch_reasons, tr) in _prefetched(batches, lambda b: prepare(enc, b)):
        treatments.update(tr)
        out = iter(enc.run(ok_x)) if ok_x is not None else iter(())
        for (iid, _), reason in zip(batch, batch_reasons):
            yield (iid, next(out), None) if reason is None else (iid, None, reason)


def feature_table(rows: dict[int, tuple[np.ndarray | None, str | None]], dim: int) -> pa.Table:
    """One row per item, by id: ``feature`` null where there is no vector."""
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
    return pa.table({"item_id": ids, "feature": feature, "present": present, "reason": pa.array(reasons, pa.string())})


def vectors(t: pa.Table) -> np.ndarray:
    col = t.column("feature").combine_chunks()
    dim = col.type.list_size
    filled = col.fill_null([0.0] * dim) if col.null_count else col
    return filled.flatten().to_numpy(zero_copy_only=False).reshape(len(t), dim).astype(np.float32)


# ---------------------------------------------------------------------- the encoder, once per worker
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


def resolve_device(device: str, worker) -> str:
    """``cpu``, or the CUDA device of this worker. A worker given its GPU through
    ``CUDA_VISIBLE_DEVICES`` (dask-cuda, ``dask cuda worker``, a one-GPU pod) uses ``cuda:0``;
    plain LocalCluster workers on a multi-GPU machine spread by name (``cuda:<name % n>``)."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        if device == "cuda":
            raise MmirisError("device cuda requested but this worker has no CUDA device")
        return "cpu"
    n = torch.cuda.device_count()
    name = getattr(worker, "name", 0)
    if os.environ.get("CUDA_VISIBLE_DEVICES") or not isinstance(name, int):
        return "cuda:0"
    return f"cuda:{name % n}"


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


def load_encoder(modality: str, spec: EncoderSpec, device: str, torch_threads: int | None, blob: bytes | None):
    """Runs on a worker: the worker's cached encoder for this spec (loaded on first use)."""
    cache, worker = _worker_cache()
    _set_threads(worker, torch_threads)
    dev = "cpu" if spec.family == "doc2vec" else resolve_device(device, worker)
    return cache, cache.get(modality, spec, dev, blob)


def warm_up(*args) -> int:
    """Runs on a worker: load the encoder into the cache; returns its dim (not the model)."""
    return load_encoder(*args)[1].dim


def local_dim(modality: str, spec: EncoderSpec, blob: bytes | None) -> int:
    enc = load_image_encoder(spec) if modality == "image" else load_text_encoder(spec, blob=blob)
    return enc.dim


def default_batch_size(modality: str, device: str) -> int:
    """Items per model call when none is given: 16 images on CPU (measured faster than 32:
    EfficientNet-Lite0 on this project's 2-core machine, 2 Dask workers, 47.4 images/s at 16
    against 33.3 at 32), 64 on CUDA (not measured: no GPU was lent); 32 texts."""
    if modality == "image":
        return 64 if device.startswith("cuda") else 16
    return 32


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
