"""Which Dask cluster a Dask-parallel stage runs on: an existing one, or its own local one.
Clients and local clusters come from ``mmiris.cluster``, the project's one factory."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from mmiris import cluster

log = logging.getLogger("mmiris.flows")


def scheduler_address(dask_address: str | None) -> str | None:
    """The flow parameter, else Dask's own setting (``DASK_SCHEDULER_ADDRESS`` /
    ``scheduler-address`` in the Dask config), else None."""
    return cluster.scheduler_address(dask_address)


@contextlib.contextmanager
def existing_cluster(dask_address: str | None) -> Iterator[object | None]:
    """A ``distributed.Client`` connected to the cluster at the address (closed on exit; the
    cluster stays up), or None when there is none: the stage then starts a LocalCluster."""
    address = scheduler_address(dask_address)
    if not address:
        log.info("no Dask scheduler address given: the stage starts a local Dask cluster")
        yield None
        return
    log.info("using the Dask cluster at %s", address)
    with cluster.dask_client(address) as client:
        yield client


@contextlib.contextmanager
def feature_cluster(dask_address: str | None, workers: int | None) -> Iterator[str]:
    """The scheduler address the feature stages of one pipeline run share: the given cluster,
    or one LocalCluster started here (the extract stage's own local setup) for both image
    and text extraction, instead of one per stage."""
    address = scheduler_address(dask_address)
    if address:
        yield address
        return
    with cluster.dask_client(None, workers=workers) as client:
        log.info("local Dask cluster for feature extraction at %s", client.scheduler.address)
        yield client.scheduler.address
