"""Flow: leave-one-out split with stored negatives (pipelines/split.py)."""

from __future__ import annotations

from typing import Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.flows.stage_logs import forward_stage_logs, now
from mmiris.flows.ui_artifacts import finish_stage
from mmiris.pipelines.split import split_leave_one_out


@task(name="split-leave-one-out", cache_policy=NO_CACHE)
def split_task(
    store: str | None, interactions: str, mode: str, n_negatives: int, seed: int, short_users: str, name: str
) -> str:
    return str(
        split_leave_one_out(
            ArtifactStore(store),
            interactions,
            mode=mode,
            n_negatives=n_negatives,
            seed=seed,
            short_users=short_users,
            name=name,
        )
    )


@flow(name="split")
def split_flow(
    interactions: str = "interactions@latest",
    mode: Literal["random", "latest"] = "random",
    n_negatives: int = 99,
    seed: int = 0,
    short_users: Literal["drop", "train", "error"] = "drop",
    name: str = "split",
    store: str | None = None,
) -> str:
    """One test and one validation item per user with ``n_negatives`` sampled negatives;
    ``mode`` random (the paper) or latest by timestamp (NCF). Returns ``split@<version>``."""
    forward_stage_logs()
    started = now()
    ref = split_task(store, interactions, mode, n_negatives, seed, short_users, name)
    finish_stage(ArtifactStore(store), {"split": ref}, f"split {name}", started)
    return ref
