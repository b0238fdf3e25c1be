"""The driver of feature extraction: plan, submit, commit. It never holds image bytes or
output vectors: it reads the input's index (ids, hashes, reasons), cuts the items into tasks
over consecutive id ranges, and each task's worker reads its own items from the store and
writes its own part of the output version (``mmiris.features.worker``). The driver commits
the parts (``ArtifactStore.commit``): readers see the version complete or not at all.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.cluster import GPU_RESOURCE, dask_client
from mmiris.encoders.registry import EncoderSpec
from mmiris.features.inputs import InputIndex
from mmiris.features.reuse import reusable
from mmiris.features.worker import PLUGIN_NAME, EncoderCache, RunSpec, Task, TaskResult, local_dim, run_task, warm_up
from mmiris.progress import Progress

log = logging.getLogger("mmiris.extract")

MAX_TASK_ITEMS = 4096  # items a task encodes at most: bounds a worker's memory and a part's size
MAX_TASK_ROWS = 65536  # rows of a part (encoded, reused and missing together)
ENCODE, REUSE, MISSING = 0, 1, 2  # what a task does with an item (plan)


@dataclass
class RunOptions:
    client: object = None
    workers: int | None = None
    batch_size: int | None = None  # None: default_batch_size on each worker
    device: str = "auto"
    torch_threads: int | None = None
    chunk_size: int | None = None  # items encoded per task (one part file each)


def extract(
    store: ArtifactStore,
    modality: str,
    ref: ArtifactRef,
    spec: EncoderSpec,
    params: dict,
    code_version: str,
    index: InputIndex,
    opts: RunOptions,
    *,
    name: str,
    reuse: bool,
    blob: bytes | None = None,
    files: dict[str, bytes] | None = None,
) -> ArtifactRef:
    """Encode the items of ``index`` into a new ``<modality>_features`` version."""
    kind = f"{modality}_features"
    t0 = time.perf_counter()
    reuse_ids = np.zeros(0, dtype=np.int64)
    reused_from: ArtifactRef | None = None
    if reuse and len(index):
        reuse_ids, reused_from = reusable(store, name, kind, params, modality, code_version, index)
    n_todo = len(index) - len(reuse_ids)
    if reused_from is not None:
        log.info(
            "reusing %d rows of %s (same encoder, unchanged content); %d to encode", len(reuse_ids), reused_from, n_todo
        )
    staged = store.stage(name, kind, [ref], params, code_version)
    try:
        results: list[TaskResult] = []
        workers_used = 0
        run = RunSpec(store, staged, modality, ref, spec, opts.batch_size, opts.device, opts.torch_threads, reused_from)
        if n_todo:
            with dask_client(opts.client, workers=opts.workers) as client:
                info = client.scheduler_info(n_workers=-1)["workers"]
                workers_used = len(info)
                results = list(_run_on_dask(client, run, index, reuse_ids, opts, blob))
        else:  # nothing needs a model: write the parts here, from reused rows and reasons
            dim = store.manifest(reused_from).stats.get("dim") if reused_from else local_dim(modality, spec, blob)
            run = replace(run, dim=dim)
            results = [run_task(run, t) for t in plan(index, reuse_ids, opts.chunk_size or MAX_TASK_ITEMS)]
        seconds = time.perf_counter() - t0
        output = _summary(results, run, index, reuse_ids, reused_from, workers_used, seconds)
        output.files.update(files or {})
        return store.commit(staged, {"features": [r.part for r in results]}, output)
    except BaseException:
        store.abort(staged)
        raise


def plan(index: InputIndex, reuse_ids: np.ndarray, size: int) -> list[Task]:
    """The tasks, one part file each (``reuse_ids``: sorted ids whose rows are reused).

    Images: consecutive id ranges, each encoding up to ``size`` items and carrying the reused
    and missing rows of its range, so the parts are sorted, disjoint id ranges. Texts: the
    items to encode sorted by length (similar lengths in a batch: little padding), cut into
    tasks of ``size``, then the reused and missing rows by id range. ``size`` is a multiple
    of the model batch, so batches are the same whatever the number of workers."""
    kinds = np.where(np.isin(index.ids, reuse_ids), REUSE, ENCODE).astype(np.int8)
    if index.lengths is not None:
        todo = kinds == ENCODE
        rows = index.rows if index.rows is not None else np.arange(len(index))
        by_length = index.ids[todo][np.lexsort((rows[todo], index.lengths[todo]))]  # ties: input's row order
        none = np.zeros(0, dtype=np.int64)
        tasks = [Task(k, by_length[i : i + size], none, []) for k, i in enumerate(range(0, len(by_length), size))]
        return tasks + _id_range_tasks(index, ~todo, kinds, size, first=len(tasks), force=not tasks)
    return _id_range_tasks(index, np.ones(len(index), dtype=bool), kinds, size, first=0, force=True)


def _id_range_tasks(
    index: InputIndex, take: np.ndarray, kinds: np.ndarray, size: int, first: int, force: bool
) -> list[Task]:
    """Tasks over the items of ``index`` where ``take`` (encoded or reused, by ``kinds``) and
    its missing items, in id order: each ends after ``size`` items to encode or
    ``MAX_TASK_ROWS`` rows."""
    n_take = int(take.sum())
    ids = np.concatenate([index.ids[take], index.missing_ids])
    kind = np.concatenate([kinds[take], np.full(len(index.missing_ids), MISSING, dtype=np.int8)])
    order = np.argsort(ids, kind="stable")
    ids, kind = ids[order], kind[order]
    encoded_before = np.concatenate([[0], np.cumsum(kind == ENCODE)])  # items to encode before each row
    tasks: list[Task] = []
    start = 0
    while start < len(ids) or (force and not tasks):
        full = int(np.searchsorted(encoded_before, encoded_before[start] + size))  # ``size`` items to encode
        end = min(full, start + MAX_TASK_ROWS, len(ids))
        t_ids, t_kind = ids[start:end], kind[start:end]
        missing = t_kind == MISSING
        reasons = index.missing_reasons.take(order[start:end][missing] - n_take).to_pylist()
        tasks.append(
            Task(
                first + len(tasks),
                t_ids[t_kind == ENCODE],
                t_ids[t_kind == REUSE],
                list(zip(t_ids[missing].tolist(), reasons)),
            )
        )
        start = end
    return tasks


def task_size(n_todo: int, slots: int, batch_size: int | None, chunk_size: int | None) -> int:
    """Items a task encodes: about 4 tasks per worker thread, at most MAX_TASK_ITEMS, rounded
    up to a multiple of the model batch (of 64 when the workers pick it: 16, 32 and 64 all
    divide it). ``chunk_size`` overrides."""
    if chunk_size:
        return chunk_size
    step = batch_size or 64
    n = max(1, min(MAX_TASK_ITEMS, math.ceil(n_todo / (max(slots, 1) * 4))))
    return step * math.ceil(n / step)


def _run_on_dask(client, run: RunSpec, index: InputIndex, reuse_ids: np.ndarray, opts: RunOptions, blob) -> Iterator:
    from distributed import as_completed

    client.register_plugin(EncoderCache(), name=PLUGIN_NAME)
    info = client.scheduler_info(n_workers=-1)["workers"]
    gpu_workers = [a for a, w in info.items() if w.get("resources", {}).get(GPU_RESOURCE, 0) > 0]
    use_gpu = bool(gpu_workers) and opts.device != "cpu" and run.spec.family != "doc2vec"
    slots = sum(w["nthreads"] for a, w in info.items() if not use_gpu or a in gpu_workers) or 1
    n_todo = len(index) - len(reuse_ids)
    tasks = plan(index, reuse_ids, task_size(n_todo, slots, opts.batch_size, opts.chunk_size))
    targets = gpu_workers if use_gpu else None
    resources = {GPU_RESOURCE: 1} if use_gpu else None
    blob_f = client.scatter(blob, broadcast=True, workers=targets) if blob is not None else None
    addrs = targets or list(info)
    # Load the model on every worker first (one task each, pinned), so the progress rate and
    # ETA below measure encoding, not start-up; the cache keeps it for the tasks. With fewer
    # tasks than workers, one worker: the feature size is needed for parts without a model.
    t = time.perf_counter()
    args = (run.modality, run.spec, opts.device, opts.torch_threads, blob_f)
    warm = addrs if len(tasks) >= len(addrs) else addrs[:1]
    dims = client.gather(
        [
            client.submit(warm_up, *args, workers=[a], allow_other_workers=False, resources=resources, pure=False)
            for a in warm
        ]
    )
    log.info("%s loaded on %d worker(s) in %.1fs", run.spec.id, len(warm), time.perf_counter() - t)
    run = replace(run, dim=dims[0])
    run_f = client.scatter(run, broadcast=True, workers=targets)
    futures = [client.submit(run_task, run_f, t, blob_f, resources=resources, pure=False) for t in tasks]
    log.info(
        "%s: %d items to encode in %d tasks (one part each) on %d worker(s)%s",
        run.spec.id,
        n_todo,
        len(tasks),
        len(addrs),
        " (GPU workers)" if use_gpu else "",
    )
    with Progress(n_todo, f"extract {run.modality} features ({run.spec.id})", log) as progress:
        for fut in as_completed(futures):
            res = fut.result()
            progress.update(res.computed)
            fut.release()
            yield res


def _summary(results, run: RunSpec, index, reuse_ids, reused_from, workers_used: int, seconds: float) -> Output:
    enc_info: dict = next((r.encoder for r in results if r.encoder), {})
    dim = next((r.dim for r in results if r.dim), None)
    items = sum(r.part["rows"] for r in results)
    present = sum(r.present for r in results)
    by_reason: Counter[str] = Counter()
    treatments: Counter[str] = Counter(index.treatments)
    for r in results:
        by_reason.update(r.reasons)
        treatments.update(r.treatments)
    n_computed = sum(r.computed for r in results)
    # Ids the input's loader dropped because they matched no item (mmiris.ingest.folders): no
    # row here stands for them, so only the input's manifest can say they existed.
    source = run.store.manifest(run.input_ref).stats
    stats = {
        "items": items,
        "present": present,
        "missing": items - present,
        "missing_by_reason": dict(sorted(by_reason.items())),
        "treatments": dict(sorted(treatments.items())),
        "computed": n_computed,
        "reused": len(reuse_ids),
        "dim": dim,
        "unmatched_ids": int(source.get("unmatched_ids", 0)),
        "unmatched_examples": list(source.get("unmatched_examples", [])),
    }
    computed = [r for r in results if r.computed]
    info = {
        "encoder": {**run.spec.to_dict(), **{k: v for k, v in enc_info.items() if k != "device"}},
        "input": str(run.input_ref),
        "reused_from": str(reused_from) if reused_from else None,
        "workers": workers_used,
        "parts": len(results),
        "chunks_per_worker": dict(Counter(r.worker for r in computed)),
        "devices": sorted({r.encoder.get("device", "") for r in computed}),
        "precision": sorted({r.encoder.get("precision", "") for r in computed}),
        "worker_malloc_tuned": sorted({r.malloc_tuned for r in computed}),
        "seconds": round(seconds, 3),
        "computed_items_per_s": round(n_computed / seconds, 3) if seconds > 0 else None,
    }
    log.info(
        "%s features: %d items, %d present, %d missing %s, %d computed, %d reused; %d unmatched ids left out of %s",
        run.modality,
        items,
        present,
        items - present,
        stats["missing_by_reason"],
        n_computed,
        len(reuse_ids),
        stats["unmatched_ids"],
        run.input_ref,
    )
    return Output(tables={}, stats=stats, info=info)
