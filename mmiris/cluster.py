"""The one place a Dask client is made: an existing cluster, or a local one started here.

Every Dask-parallel stage (feature extraction, crawls) and the flows get their client from
:func:`dask_client`:

- a ``distributed.Client`` is used as it is (the caller owns it);
- a scheduler address (``tcp://host:8786``) is connected to, and the connection closed after;
- None starts a local cluster for the duration of the block:
  - ``processes=True`` (model work): one worker process per core with one thread each; on a
    machine with CUDA GPUs, one worker per GPU through dask-cuda's ``LocalCUDACluster``
    (each worker sees one device, as ``cuda:0``), every worker declaring the Dask resource
    ``GPU=1``. dask-cuda is imported only then (extra ``mmiris[gpu]``); without it the
    GPU workers are plain ``LocalCluster`` processes that pick ``cuda:<name % GPUs>``.
  - ``processes=False`` (network work): worker threads in this process, so one rate-limit
    bucket and one single-flight map serve them all.

:func:`scheduler_address` reads the flows' ``dask_address`` parameter, else Dask's own
``DASK_SCHEDULER_ADDRESS`` setting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("mmiris.cluster")

GPU_RESOURCE = "GPU"  # workers with a GPU declare {"GPU": 1}; model tasks ask for it


def scheduler_address(address: str | None = None) -> str | None:
    """``address``, else Dask's own setting (``DASK_SCHEDULER_ADDRESS`` / ``scheduler-address``
    in the Dask config), else None."""
    if address:
        return address
    import dask

    return dask.config.get("scheduler-address", None) or None


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def cuda_devices() -> int:
    """CUDA devices this process sees (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextmanager
def dask_client(
    client: Any = None,
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    processes: bool = True,
    gpu: bool | None = None,
) -> Iterator[Any]:
    """A Dask client for the block (see the module docstring).

    ``workers``: local worker count (default: one per core, or one per GPU). ``gpu``: None
    uses the GPUs when there are some, False never (CPU workers only)."""
    if client is not None and not isinstance(client, str):
        yield client
        return
    from distributed import Client

    if isinstance(client, str):
        with Client(client) as connected:
            yield connected
        return
    with local_cluster(workers=workers, threads_per_worker=threads_per_worker, processes=processes, gpu=gpu) as c:
        with Client(c) as local:
            yield local


@contextmanager
def local_cluster(
    *, workers: int | None = None, threads_per_worker: int = 1, processes: bool = True, gpu: bool | None = None
) -> Iterator[Any]:
    """A LocalCluster (or dask-cuda's LocalCUDACluster on GPUs), closed on exit."""
    from distributed import LocalCluster

    n_gpus = cuda_devices() if processes and gpu is not False else 0
    if n_gpus:
        n = min(workers or n_gpus, n_gpus)
        cluster = _gpu_cluster(n, threads_per_worker)
        log.info("local Dask cluster: %d GPU worker(s), one GPU each", n)
    else:
        n = workers or (cores() if processes else 1)
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=threads_per_worker,
            processes=processes,
            dashboard_address=":0" if processes else None,
        )
    try:
        yield cluster
    finally:
        cluster.close()


def _gpu_cluster(n: int, threads_per_worker: int) -> Any:
    kwargs = {"n_workers": n, "threads_per_worker": threads_per_worker, "dashboard_address": ":0"}
    try:
        from dask_cuda import LocalCUDACluster  # lazily: CPU machines never need dask-cuda
    except ImportError:
        # Without dask-cuda every worker sees every GPU and picks cuda:<worker name % GPUs>.
        from distributed import LocalCluster

        log.warning("dask-cuda is not installed (pip install 'mmiris[gpu]'): plain workers pick their GPU by name")
        return LocalCluster(processes=True, resources={GPU_RESOURCE: 1}, **kwargs)
    return LocalCUDACluster(resources={GPU_RESOURCE: 1}, **kwargs)
