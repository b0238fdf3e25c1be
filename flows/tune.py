"""Flow: a hyperparameter search of one model on a split (pipelines/tune.py).

Runs alone on existing artifacts: ``split``, the feature artifacts the model reads and the
``init_from`` model (e.g. a FISM for NAIS / IRIS) are refs to what is already in the store;
trials never re-extract features or retrain the pretraining model. The Optuna study lives
next to the store, so a rerun of a killed or timed-out flow continues it. No retries: a
rerun is the retry, and runs only the trials still missing.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.flows.stage_logs import forward_stage_logs, now
from mmiris.flows.ui_artifacts import artifact_key, finish_stage
from mmiris.pipelines.tune import tune_model
from mmiris.train.config import TrainConfig


@task(name="tune-model", cache_policy=NO_CACHE)
def tune_task(
    store: str | None,
    split: str,
    model: str,
    n_trials: int,
    space: dict | None,
    only: list[str] | None,
    model_settings: dict | None,
    train_settings: dict | None,
    image_features: str | None,
    text_features: str | None,
    init_from: str | list[str] | None,
    sampler_seed: int,
    startup_trials: int,
    warmup_epochs: int,
    study: str | None,
    timeout_s: float | None,
) -> str:
    return str(
        tune_model(
            ArtifactStore(store),
            split,
            model,
            n_trials=n_trials,
            space=space,
            only=only,
            model_config=model_settings,
            train_config=TrainConfig.from_dict(train_settings or {}),
            image_features=image_features,
            text_features=text_features,
            init_from=init_from,
            sampler_seed=sampler_seed,
            startup_trials=startup_trials,
            warmup_epochs=warmup_epochs,
            study_name=study,
            timeout=timeout_s,
        )
    )


def show_trials(store: ArtifactStore, tune_ref: str) -> list[dict]:
    """A table artifact of the study's trials (UI: Artifacts tab), best first."""
    rows = store.read_table(tune_ref, "trials").to_pylist()
    out = [
        {
            "trial": r["number"],
            "state": r["state"],
            "hr@10": None if r["value"] is None else round(r["value"], 4),
            "epochs": r["epochs"],
            **json.loads(r["params"]),
        }
        for r in rows
    ]
    out.sort(key=lambda r: (r["hr@10"] is None, -(r["hr@10"] or 0.0), r["trial"]))
    stats = store.manifest(tune_ref).stats
    create_table_artifact(
        out,
        key=artifact_key("trials", tune_ref.split("@")[0]),
        description=f"trials of {tune_ref} (best: trial {stats.get('best_trial')}, {stats.get('best_params')})",
    )
    return out


@flow(name="tune")
def tune_flow(
    split: str = "split@latest",
    model: str = "nais_prod",
    n_trials: int = 20,
    space: dict[str, Any] | None = None,
    only: list[str] | None = None,
    model_settings: dict[str, Any] | None = None,
    train_settings: dict[str, Any] | None = None,
    image_features: str | None = None,
    text_features: str | None = None,
    init_from: str | list[str] | None = None,
    sampler_seed: int = 0,
    startup_trials: int = 3,
    warmup_epochs: int = 0,
    study: str | None = None,
    timeout_s: float | None = None,
    store: str | None = None,
) -> str:
    """Search ``model``'s hyperparameters on ``split``'s validation items and publish
    ``tune-<model>`` (the trials table; best parameters in its stats). ``space``: field ->
    spec as ``mmiris tune --space`` ("1e-4:1e-2:log", [0.5, 0.8], "off"); ``only``: search
    just these fields; ``model_settings`` / ``train_settings``: fixed settings of every trial
    (e.g. {"emb": 16}, {"epochs": 10, "patience": 2}); ``init_from``: a published model every
    trial starts from (a FISM for NAIS / IRIS). Returns ``tune-<model>@<version>``; train with
    ``mmiris train --params-from`` it."""
    forward_stage_logs()
    started = now()
    ref = tune_task(
        store,
        split,
        model,
        n_trials,
        space,
        only,
        model_settings,
        train_settings,
        image_features,
        text_features,
        init_from,
        sampler_seed,
        startup_trials,
        warmup_epochs,
        study,
        timeout_s,
    )
    s = ArtifactStore(store)
    finish_stage(s, {"tune": ref}, f"tune {model}", started)
    show_trials(s, ref)
    return ref
