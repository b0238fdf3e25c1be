"""Stage ``tune``: an Optuna search over one model's hyperparameters on a split → ``tune-<model>``.

    ref = tune_model(store, "split", "nais_prod", n_trials=20, init_from="model-fism",
                     space={"lr": "1e-4:1e-2:log", "beta": [0.5, 0.8]})

Each trial trains the model in memory (``mmiris.train.trainer.train``; nothing is published
per trial) and is scored on the split's **validation** items only (sampled protocol, best
HR@10 over its epochs); the test items are never read. A median pruner, fed every epoch's
validation HR@10, stops trials that trail the others after an epoch or two. Features and
``init_from`` models are artifacts already in the store, loaded once for all trials.

The study lives in an Optuna RDB storage next to the store (``<store>/_tune/<study>.db``,
SQLite), so rerunning the same call continues it and runs only the trials still missing; a
trial whose process was killed is marked ``fail`` and its parameters are tried again. The
result is a versioned artifact: table ``trials`` (schemas/tune.json), the space and settings
in ``params``, the best trial and its model / training config fields in ``stats`` (what
``mmiris train --params-from`` applies).

The search space (its grammar, defaults and checks) is ``mmiris.train.search_space``; the
trial objective, progress log and recovery of killed trials ``mmiris.train.tuning``. See
docs/training.md "Tuning".
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.code_version import source_version
from mmiris.data.split import load_split
from mmiris.errors import MmirisError
from mmiris.models import get_model_class
from mmiris.models.build import build_config, load_features, load_model
from mmiris.pipelines.train import model_code_version, model_inputs
from mmiris.train import distributed as D
from mmiris.train.config import TrainConfig, pick_device, resolve_precision
from mmiris.train.search_space import model_class, search_space
from mmiris.train.tuning import (
    Objective,
    ProgressLog,
    recover_killed_trials,
    safe_url,
    study_summary,
)

log = logging.getLogger("mmiris.tune")

# What decides a study's trials besides the trained model's code (model_code_version).
TUNE_CODE = ("mmiris.pipelines.tune", "mmiris.train.search_space", "mmiris.train.tuning")
PRUNERS = ("median", "none")
SAMPLERS = ("tpe", "random")


def tune_artifact_name(model_name: str) -> str:
    return f"tune-{model_name}"


def default_storage(store: ArtifactStore, study_name: str) -> str:
    """``sqlite:///<store>/_tune/<study>.db`` for a local store; ``./mmiris-tune/`` otherwise
    (an object store cannot hold a SQLite file: pass ``storage`` to share a study)."""
    base = Path(store.root) / "_tune" if store.is_local else Path("mmiris-tune").resolve()
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(base / f'{study_name}.db').as_posix()}"


def tune_model(
    store: ArtifactStore,
    split_ref: ArtifactRef | str,
    model_name: str,
    *,
    n_trials: int = 20,
    space: dict | None = None,
    only: list[str] | None = None,
    model_config: dict | None = None,
    train_config: TrainConfig | None = None,
    image_features: ArtifactRef | str | None = None,
    text_features: ArtifactRef | str | None = None,
    init_from: ArtifactRef | str | list | tuple | None = None,
    sampler: str = "tpe",
    sampler_seed: int = 0,
    pruner: str = "median",
    startup_trials: int = 3,
    warmup_epochs: int = 0,
    baseline: bool = True,
    enqueue: list[dict] | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    timeout: float | None = None,
    fail_running: bool = False,
) -> ArtifactRef:
    """Run (or continue) the study until ``n_trials`` trials have finished (complete or
    pruned), then publish ``tune-<model>``; see the module doc.

    ``model_config`` / ``train_config``: the fixed settings every trial starts from (emb,
    epochs, patience, seed, threads...); sampled fields replace theirs. ``baseline``: a fresh
    study's first trial is those settings as they are (where inside the space), so the
    winner is never worse on validation than the untuned defaults. ``enqueue``: more
    parameter sets to try first. ``startup_trials``: trials that must finish before the
    pruner stops any; ``warmup_epochs``: epochs a trial always gets. ``fail_running``: mark
    every trial still ``running`` as failed (use when no other worker is on the study; a
    killed process on this machine is detected without it).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one voice: this module logs the trials
    if n_trials < 1:
        raise MmirisError(f"tune: n_trials must be >= 1, got {n_trials}")
    if sampler not in SAMPLERS:
        raise MmirisError(f"tune: sampler {sampler!r}: expected one of {SAMPLERS}")
    if pruner not in PRUNERS:
        raise MmirisError(f"tune: pruner {pruner!r}: expected one of {PRUNERS}")
    if startup_trials < 0 or warmup_epochs < 0:
        raise MmirisError(f"tune: startup_trials and warmup_epochs must be >= 0, got {startup_trials}, {warmup_epochs}")
    cls = model_class(model_name)
    tc = train_config or TrainConfig()
    dist = D.Dist(device=pick_device(tc.device))  # one process, no process group
    # "auto" resolved as train_model does, so the study's settings name the dtype that trains
    base_tc = replace(tc, precision=resolve_precision(tc.precision, cls, dist.device))
    base_mc = build_config(cls, model_config).to_dict()
    params = search_space(model_name, space, only, base_mc, base_tc)
    split_ref = store.resolve(split_ref)
    feat_refs, init_refs = model_inputs(store, cls, image_features, text_features, init_from)

    settings = {
        "model": model_name,
        "split": str(split_ref),
        "features": [str(r) for r in feat_refs],
        "init_from": [str(r) for r in init_refs],
        "space": {p.name: p.to_dict() for p in params},
        "model_config": base_mc,
        "train_config": base_tc.key_params(),
        "sampler": sampler,
        "sampler_seed": sampler_seed,
        "pruner": {"name": pruner, "startup_trials": startup_trials, "warmup_epochs": warmup_epochs},
        "baseline": baseline,
        "code": _code_version(cls),  # trials of other code are not continued
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    study_name = study_name or f"{model_name}-{split_ref.name}-{key[:8]}"
    url = storage or default_storage(store, study_name)
    study = optuna.create_study(
        study_name=study_name,
        direction="maximize",
        load_if_exists=True,
        storage=optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        ),
        # Epochs are the pruner's steps (1-based): the earliest prune is at epoch warmup_epochs + 1.
        pruner=(
            optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs + 1)
            if pruner == "median"
            else optuna.pruners.NopPruner()
        ),
    )
    if study.user_attrs.get("key") not in (None, key):
        raise MmirisError(
            f"study {study_name!r} in {safe_url(url)} was created with other settings "
            f"({study.user_attrs.get('settings')}); pick another study name"
        )
    if "key" not in study.user_attrs:
        study.set_user_attr("key", key)
        study.set_user_attr("settings", settings)
    recover_killed_trials(study, fail_running)

    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in (S.COMPLETE, S.PRUNED) for t in trials)
    todo = max(0, n_trials - finished)
    if trials:
        log.info(
            "continuing study %s (%s): %d of %d trials finished, %d to run",
            study_name,
            safe_url(url),
            finished,
            n_trials,
            todo,
        )
    else:
        log.info(
            "new study %s in %s: %d trials of %s over %s",
            study_name,
            safe_url(url),
            n_trials,
            model_name,
            ", ".join(f"{p.name}={p.describe()}" for p in params),
        )
        first = []
        if baseline:
            base = {**base_mc, **base_tc.to_dict()}
            first.append({p.name: base[p.name] for p in params if p.contains(base.get(p.name))})
        for values in [*first, *(enqueue or [])]:
            if values:
                study.enqueue_trial(values)
    # A resumed study must not redraw the first run's parameters: seed + trials so far.
    seed = sampler_seed + len(trials)
    study.sampler = (
        optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    )

    if todo:
        split = load_split(store, split_ref)
        if not len(split.valid_users):
            raise MmirisError(f"split {split_ref} has no validation items: tuning scores trials on them")
        feats = load_features(store, feat_refs, split.n_items)
        init_models = [load_model(store, r) for r in init_refs]
        objective = Objective(model_name, params, base_mc, base_tc, split, feats, init_models, dist)
        study.optimize(
            objective,
            n_trials=todo,
            timeout=timeout,
            gc_after_trial=True,
            catch=(RuntimeError, FloatingPointError),
            callbacks=[
                optuna.study.MaxTrialsCallback(n_trials, states=(S.COMPLETE, S.PRUNED)),
                ProgressLog(todo, n_trials, finished),
            ],
        )
    return _publish(
        store,
        study,
        model_name,
        split_ref,
        [*feat_refs, *init_refs],
        settings,
        study_name,
        url,
        n_trials,
        params,
        dist.device,
    )


def _publish(
    store, study, model_name, split_ref, other_parents, settings, study_name, url, n_trials, params, device
) -> ArtifactRef:
    table, stats = study_summary(study, params)
    finished = stats["n_complete"] + stats["n_pruned"]
    if "best_trial" not in stats:
        log.warning("study %s has no complete trial yet; publishing the trials table without a best", study_name)
    version_params = {
        **settings,
        "study": study_name,
        "n_trials": n_trials,
        "finished": finished,
        "failed": stats["n_fail"],
    }
    out = Output(
        tables={"trials": table},
        stats=stats,
        info={"storage": safe_url(url), "study": study_name, "threads": torch.get_num_threads(), "device": str(device)},
    )
    return store.publish(
        tune_artifact_name(model_name),
        "tune",
        out,
        parents=[split_ref, *other_parents],
        params=version_params,
        code_version=_code_version(get_model_class(model_name)),
    )


def _code_version(cls: type) -> str:
    """The trained model's code version and the tuning code's."""
    return f"{model_code_version(cls)}+{source_version(*TUNE_CODE)}"
