"""Flow: evaluate a model (pipelines/evaluate.py): sampled 1+99 and full ranking, HR/NDCG@N."""

from __future__ import annotations

from typing import Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.flows.stage_logs import forward_stage_logs, now
from mmiris.flows.ui_artifacts import finish_stage, show_metrics
from mmiris.pipelines.evaluate import evaluate_model

Protocol = Literal["sampled", "full"]


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_task(
    store: str | None, model: str, split: str | None, protocols: list[str], part: str, device: str
) -> str:
    return str(evaluate_model(ArtifactStore(store), model, split, protocols=protocols, part=part, device=device))


@flow(name="evaluate")
def evaluate_flow(
    model: str = "model-nais_prod@latest",
    split: str | None = None,
    protocols: list[Protocol] = ["sampled", "full"],  # noqa: B006 - Prefect parameter
    part: Literal["test", "valid"] = "test",
    device: Literal["auto", "cpu", "cuda"] = "auto",
    store: str | None = None,
) -> str:
    """Metrics of ``model`` on ``split`` (default: the split it was trained on) -> a
    ``metrics`` artifact, also shown as a table in the UI. Returns ``metrics-<model>@…``."""
    forward_stage_logs()
    started = now()
    ref = evaluate_task(store, model, split, list(protocols), part, device)
    s = ArtifactStore(store)
    finish_stage(s, {"metrics": ref}, f"evaluate {model.split('@')[0]}", started)
    show_metrics(s, ref)
    return ref
