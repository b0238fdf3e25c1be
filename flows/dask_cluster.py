"""A Dask client for the Dask-parallel stages: an existing cluster by address, else local."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from distributed import Client, LocalCluster

log = logging.getLogger("mmiris.flows")


@contextlib.contextmanager
def dask_client(address: str | None = None, n_workers: int = 2,
                threads_per_worker: int = 1) -> Iterator[Client]:
    """``with dask_client("tcp://scheduler:8786") as client:`` — or a LocalCluster of
    ``n_workers`` when no address is given (closed on exit; an external cluster is left up)."""
    if address:
        log.info("using the Dask cluster at %s", address)
        with Client(address) as client:
            yield client
        return
    log.info("starting a local Dask cluster (%d workers x %d threads)", n_workers,
             threads_per_worker)
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                      processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client
