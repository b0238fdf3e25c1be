"""Data-parallel setup, nanoGPT-style: a dozen explicit lines around torch.distributed.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and the rendezvous); without them this is a
single process and every helper here is a no-op. gloo on CPU, NCCL on GPU. Only rank 0
publishes artifacts and writes checkpoints. A collective that fails because a peer died is
re-raised as an error naming this rank and what it was doing; torchrun then stops the group
(and restarts it from the last checkpoint when run with ``--max-restarts``).
"""

from __future__ import annotations

import datetime
import gc
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel

from mmiris.errors import MmirisError
from mmiris.train.config import pick_device


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def restarted() -> bool:
    """True when torchrun restarted this worker group after a failure (resume, don't restart)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def setup(device_policy: str = "auto", timeout_s: float = 600.0) -> Dist:
    """Join the process group torchrun describes (idempotent); one process otherwise."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(device_policy, local_rank)
    if world > 1 and not tdist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = datetime.timedelta(seconds=timeout_s)
        # The env:// store, with a prefix per torchrun restart so a restarted group never
        # reads the connection keys its killed predecessor left in the same store.
        store, _, _ = next(tdist.rendezvous("env://", timeout=timeout))
        store = tdist.PrefixStore(f"mmiris/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        tdist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            store=store,
            rank=rank,
            world_size=world,
            timeout=timeout,
            device_id=device if device.type == "cuda" else None,
        )
    return Dist(rank, world, local_rank, device)


def wrap(module: torch.nn.Module, dist: Dist) -> torch.nn.Module:
    """DDP around the loss module; feature buffers are constants, so no buffer broadcasts."""
    if not dist.enabled:
        return module
    with warnings.catch_warnings():  # torch 2.14 deprecates the name, and asks to keep it for this use
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        return DistributedDataParallel(
            module, device_ids=[dist.device] if dist.device.type == "cuda" else None, broadcast_buffers=False
        )


def all_reduce_sum(t: torch.Tensor, dist: Dist, what: str) -> torch.Tensor:
    """Sum ``t`` over ranks (returns a new tensor on t's device)."""
    if not dist.enabled:
        return t
    out = t.to(dist.device).clone()
    collective(lambda: tdist.all_reduce(out), dist, what)
    return out.to(t.device)


def barrier(dist: Dist, what: str) -> None:
    if dist.enabled:
        collective(tdist.barrier, dist, what)


def broadcast_object(obj, dist: Dist, what: str):
    """Rank 0's ``obj`` on every rank."""
    if not dist.enabled:
        return obj
    box = [obj]
    collective(lambda: tdist.broadcast_object_list(box, src=0), dist, what)
    return box[0]


def collective(fn, dist: Dist, what: str) -> None:
    """Run ``fn``, which talks to the other ranks; in a group, a RuntimeError from it names
    this rank and what it was doing. Alone there are no peers to blame: ``fn`` just runs."""
    if not dist.enabled:
        fn()
        return
    try:
        fn()
    except (RuntimeError, tdist.DistBackendError) as exc:  # a peer died or timed out
        raise MmirisError(
            f"rank {dist.rank}/{dist.world_size}: {what} failed, another rank "
            f"probably died (see torchrun's log for the failing rank): {exc}"
        ) from exc


def teardown() -> None:
    """Leave the group. Garbage first: work objects of the backend that are only reachable
    through reference cycles would otherwise be freed at interpreter exit, after the group."""
    if tdist.is_initialized():
        gc.collect()
        tdist.destroy_process_group()
