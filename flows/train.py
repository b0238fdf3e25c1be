"""Flow: train (or fit) a model on a split (pipelines/train.py); optionally DDP via torchrun.

Runs alone on existing artifacts: ``split`` (and the feature artifacts the model reads) are
refs to what is already in the store. ``nproc_per_node`` > 1 runs data-parallel ranks on
this machine under ``torchrun --standalone`` (gloo on CPU, NCCL on GPUs); for several nodes
see infra/training/. No retries: a training failure is a bug or bad input, and a killed run
continues with ``resume=True``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.flows.stage_logs import forward_stage_logs, now
from mmiris.flows.torchrun import run_torchrun, train_argv
from mmiris.flows.ui_artifacts import finish_stage, show_training_log
from mmiris.pipelines.train import train_model
from mmiris.train.config import TrainConfig


@task(name="train-model", cache_policy=NO_CACHE)
def train_task(
    store: str | None,
    split: str,
    model: str,
    model_settings: dict | None,
    train_settings: dict | None,
    image_features: str | None,
    text_features: str | None,
    init_from: str | list[str] | None,
    resume: bool,
    nproc_per_node: int,
) -> str:
    cfg = TrainConfig.from_dict(train_settings or {})  # a bad field fails here, before any rank starts
    if nproc_per_node > 1:
        argv = train_argv(
            split,
            model,
            model_settings,
            train_settings,
            store=store,
            image_features=image_features,
            text_features=text_features,
            init_from=init_from,
            resume=resume,
        )
        return run_torchrun(nproc_per_node, argv)
    return str(
        train_model(
            ArtifactStore(store),
            split,
            model,
            model_config=model_settings,
            train_config=cfg,
            image_features=image_features,
            text_features=text_features,
            init_from=init_from,
            resume=resume,
        )
    )


@flow(name="train")
def train_flow(
    split: str = "split@latest",
    model: str = "nais_prod",
    model_settings: dict[str, Any] | None = None,
    train_settings: dict[str, Any] | None = None,
    image_features: str | None = None,
    text_features: str | None = None,
    init_from: str | list[str] | None = None,
    resume: bool = False,
    nproc_per_node: int = 1,
    store: str | None = None,
) -> str:
    """Train ``model`` (registry name: itempop, mf, ease, fism, nais_prod, nais_concat, vbpr,
    neumf, image_iris, image_add_text_iris, multimodal_iris) and publish ``model-<name>``.
    ``model_settings``: model config fields, e.g. {"emb": 16}; ``train_settings``:
    TrainConfig fields, e.g. {"epochs": 20, "lr": 0.001}; ``init_from``: published model(s)
    to start from (NAIS or IRIS from a trained FISM; NeuMF from [GMF, MLP]). Returns ``model-<name>@<version>``."""
    forward_stage_logs()
    started = now()
    ref = train_task(
        store,
        split,
        model,
        model_settings,
        train_settings,
        image_features,
        text_features,
        init_from,
        resume,
        nproc_per_node,
    )
    s = ArtifactStore(store)
    finish_stage(s, {"model": ref}, f"train {model}", started)
    show_training_log(s, ref)
    return ref
