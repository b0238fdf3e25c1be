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

Search-space grammar (CLI ``--space NAME=SPEC``, JSON files and the ``space`` argument):
``LOW:HIGH`` uniform, ``LOW:HIGH:log`` log-uniform, ``...:int`` integers (int fields are
integers anyway), ``A,B,C`` choices (JSON values), ``V`` one fixed value, ``off`` drop a
default parameter. See docs/training.md "Tuning".
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
from dataclasses import MISSING, dataclass, fields, replace
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.code_version import source_version
from mmiris.data.split import load_split
from mmiris.errors import MmirisError
from mmiris.models import get_model_class
from mmiris.pipelines.train import model_code_version
from mmiris.train import distributed as D
from mmiris.train.checkpoint import build_config, build_model, load_features, load_model
from mmiris.train.config import TrainConfig, pick_device, resolve_precision
from mmiris.train.trainer import train

log = logging.getLogger("mmiris.tune")

# TrainConfig fields a search may vary; epochs, patience and seed are the budget, set per run.
TRAIN_FIELDS = ("lr", "batch_size", "negatives", "loss")
PRUNERS = ("median", "none")
SAMPLERS = ("tpe", "random")
WORKER_ATTR = "worker"  # host:pid:start of the process running a trial (to spot killed ones)
ORPHAN_S = 30.0  # a running trial that names no worker after this long was left by a killed process


@dataclass(frozen=True)
class Param:
    """One searched field: a float/int range (optionally log) or a list of choices."""

    name: str
    target: str  # "model" (model config field) or "train" (TrainConfig field)
    type: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def to_dict(self) -> dict:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        return {"type": self.type, "low": self.low, "high": self.high, "log": self.log}

    def describe(self) -> str:
        if self.type == "categorical":
            return ",".join(json.dumps(c) for c in self.choices)
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "") + (":int" if self.type == "int" else "")

    def suggest(self, trial):
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value) -> bool:
        if self.type == "categorical":
            return value in self.choices
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and self.low is not None
            and self.high is not None
            and self.low <= value <= self.high
        )


def _range(low, high, log=False) -> dict:
    return {"type": "float", "low": low, "high": high, "log": log}


# Defaults: learning rate, batch size, and the λ terms of eq. 12 / β / attention size where
# the model's config has them (a field the config lacks is never offered).
DEFAULT_SPACE: dict[str, dict] = {
    "lr": _range(1e-4, 1e-2, log=True),
    "batch_size": {"type": "categorical", "choices": [256, 512, 1024]},
    "reg_emb": _range(1e-8, 1e-3, log=True),  # λ1
    "reg_attention": _range(1e-8, 1e-3, log=True),  # λ2
    "reg_feature": _range(1e-8, 1e-3, log=True),  # λ3
    "reg_share": _range(1e-8, 1e-3, log=True),  # λ4
}
ATTENTION_SPACE: dict[str, dict] = {  # models with an attention network (cls.has_attention)
    "beta": _range(0.3, 1.0),
    "attention_size": {"type": "categorical", "choices": [8, 16, 32, 64]},
}
MODEL_SPACE: dict[str, dict[str, dict]] = {  # per-model additions and replacements
    "ease": {"l2": _range(10.0, 1e4, log=True)},
    "vbpr": {"reg_visual": _range(1e-8, 1e-3, log=True)},
    "neumf": {"reg_mlp": _range(1e-8, 1e-3, log=True)},
}


# ------------------------------------------------------------------------------ search space
def _field_kinds(cls) -> dict[str, str]:
    """Tunable fields of the model config and TrainConfig → "float", "int", "bool" or "str"."""
    out = {}
    for f in fields(cls.config_cls):
        out[f.name] = _kind(f)
    if cls.trainable:
        for f in fields(TrainConfig):
            if f.name in TRAIN_FIELDS:
                out[f.name] = _kind(f)
    return out


def _kind(f) -> str:
    default = f.default if f.default is not MISSING else None
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(default, t):
            return name
    ann = str(f.type)
    return "int" if ann.startswith("int") else "float" if ann.startswith("float") else "other"


def default_space(model_name: str) -> dict[str, dict]:
    """The model's default search space (canonical dicts), only fields its configs have."""
    cls = _model_class(model_name)
    kinds = _field_kinds(cls)
    space = dict(DEFAULT_SPACE)
    if cls.has_attention:
        space.update(ATTENTION_SPACE)
    space.update(MODEL_SPACE.get(model_name, {}))
    return {k: v for k, v in space.items() if k in kinds}


def parse_spec(name: str, spec) -> dict | None:
    """A space entry (grammar in the module doc; or a list, number, canonical dict) → canonical
    dict, or None for ``off``."""
    where = f"search space {name}={spec if isinstance(spec, str) else json.dumps(spec)}"
    if spec is None or spec == "off":
        return None
    if isinstance(spec, dict):
        if "choices" in spec:
            return {"type": "categorical", "choices": list(spec["choices"])}
        try:
            return {
                "type": spec.get("type", "float"),
                "low": float(spec["low"]),
                "high": float(spec["high"]),
                "log": bool(spec.get("log", False)),
            }
        except (KeyError, TypeError, ValueError):
            raise MmirisError(f'{where}: expected {{"low", "high"[, "log"]}} or {{"choices": [...]}}') from None
    if isinstance(spec, (list, tuple)):
        return {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, str):
        return {"type": "categorical", "choices": [spec]}
    text = spec.strip()
    if ":" in text:
        low, high, *flags = (p.strip() for p in text.split(":"))
        bad = [f for f in flags if f not in ("log", "int")]
        if bad:
            raise MmirisError(f"{where}: unknown flag(s) {bad}; expected LOW:HIGH[:log][:int]")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            raise MmirisError(f"{where}: LOW and HIGH must be numbers") from None
        return {"type": "int" if "int" in flags else "float", "low": lo, "high": hi, "log": "log" in flags}
    return {"type": "categorical", "choices": [_value(v.strip()) for v in text.split(",") if v.strip()]}


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def search_space(
    model_name: str,
    space: dict | None = None,
    only: list[str] | None = None,
    model_config: dict | None = None,
    train_config: TrainConfig | None = None,
) -> list[Param]:
    """The parameters a study of ``model_name`` searches: the defaults, with ``space`` entries
    replacing or adding fields (``None``/``"off"`` drops one), restricted to ``only``. Every
    range end and choice is checked against the model and training configs."""
    cls = _model_class(model_name)
    kinds = _field_kinds(cls)
    merged: dict[str, dict | None] = dict(default_space(model_name))
    for name, spec in (space or {}).items():
        if name not in kinds:
            extra = (
                f"; {', '.join(TRAIN_FIELDS)} do not apply: {model_name} is fitted in closed form"
                if name in TRAIN_FIELDS
                else ""
            )
            raise MmirisError(
                f"search space: unknown parameter {name!r} for model {model_name}; tunable: {sorted(kinds)}{extra}"
            )
        merged[name] = parse_spec(name, spec)
    if only is not None:
        unknown = sorted(set(only) - set(kinds))
        if unknown:
            raise MmirisError(
                f"search space: --only {unknown} not tunable for model {model_name}; tunable: {sorted(kinds)}"
            )
        merged = {k: v for k, v in merged.items() if k in only}
        missing = sorted(k for k in only if merged.get(k) is None)
        if missing:
            raise MmirisError(
                f"search space: --only {missing} have no default range for {model_name}: "
                "give one with --space NAME=SPEC"
            )
    params = []
    for name, d in merged.items():
        if d is None:
            continue
        params.append(_param(name, d, kinds[name], "train" if name in TRAIN_FIELDS else "model"))
    if not params:
        raise MmirisError(f"search space for {model_name} is empty")
    for p in params:
        _check_values(cls, p, model_config, train_config)
    return params


def _param(name: str, d: dict, kind: str, target: str) -> Param:
    where = f"search space {name}"
    if d["type"] == "categorical":
        choices = d["choices"]
        if not choices:
            raise MmirisError(f"{where}: no choices")
        out = []
        for c in choices:
            if kind == "float" and isinstance(c, (int, float)) and not isinstance(c, bool):
                c = float(c)
            ok = {
                "float": isinstance(c, float),
                "int": isinstance(c, int) and not isinstance(c, bool),
                "bool": isinstance(c, bool),
                "str": isinstance(c, str),
            }.get(kind, isinstance(c, (int, float, str)))
            if not ok:
                raise MmirisError(f"{where}: choice {c!r} is not a valid {kind} value")
            out.append(c)
        return Param(name, target, "categorical", choices=tuple(out))
    if kind not in ("float", "int"):
        raise MmirisError(f"{where}: a {kind} field takes choices (A,B,...), not a range")
    lo, hi, is_log = d["low"], d["high"], bool(d.get("log"))
    typ = "int" if kind == "int" or d["type"] == "int" else "float"
    if kind == "float" and typ == "int":
        typ = "float"  # ":int" on a float field: keep it a float range
    if not lo < hi:
        raise MmirisError(f"{where}: LOW {lo:g} must be below HIGH {hi:g}")
    if is_log and lo <= 0:
        raise MmirisError(f"{where}: a log range needs LOW > 0, got {lo:g}")
    if typ == "int" and (lo != int(lo) or hi != int(hi)):
        raise MmirisError(f"{where}: {name} is an integer field; LOW and HIGH must be integers")
    return Param(name, target, typ, lo, hi, is_log)


def _check_values(cls, p: Param, model_config: dict | None, train_config: TrainConfig | None) -> None:
    """Build the configs at each range end / choice, so a bad value fails now, not in trial 7."""
    values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
    for v in values:
        v = int(v) if p.type == "int" and v is not None else v
        try:
            if p.target == "train":
                TrainConfig.from_dict({**(train_config or TrainConfig()).to_dict(), p.name: v})
            else:
                build_config(cls, {**(model_config or {}), p.name: v})
        except (MmirisError, ValueError, TypeError) as exc:
            raise MmirisError(f"search space {p.name}: value {v!r} is not accepted: {exc}") from None


def _model_class(model_name: str):
    try:
        return get_model_class(model_name)
    except KeyError as exc:
        raise MmirisError(str(exc).strip("\"'")) from None


# ------------------------------------------------------------------------------ the stage
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
    cls = _model_class(model_name)
    tc = train_config or TrainConfig()
    dist = D.Dist(device=pick_device(tc.device))  # one process, no process group
    # "auto" resolved as train_model does, so the study's settings name the dtype that trains
    base_tc = replace(tc, precision=resolve_precision(tc.precision, cls, dist.device))
    base_mc = build_config(cls, model_config).to_dict()
    params = search_space(model_name, space, only, base_mc, base_tc)
    split_ref = store.resolve(split_ref)
    given = {"image": image_features, "text": text_features}
    missing = [m for m in cls.modalities if given.get(m) is None]
    if missing:
        raise MmirisError(
            f"model {model_name} needs {' and '.join(missing)} features: pass "
            + " and ".join(f"--{m}-features" for m in missing)
        )
    feat_refs = [store.resolve(r) for m in cls.modalities if (r := given[m]) is not None]
    if isinstance(init_from, (str, ArtifactRef)):
        init_from = [init_from]
    init_refs = [store.resolve(r) for r in init_from or []]
    if init_refs and not hasattr(cls, "init_from"):
        raise MmirisError(f"model {model_name} cannot be initialised from another model (no init_from)")

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
            f"study {study_name!r} in {_safe(url)} was created with other settings "
            f"({study.user_attrs.get('settings')}); pick another study name"
        )
    if "key" not in study.user_attrs:
        study.set_user_attr("key", key)
        study.set_user_attr("settings", settings)
    _recover(study, fail_running)

    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in (S.COMPLETE, S.PRUNED) for t in trials)
    todo = max(0, n_trials - finished)
    if trials:
        log.info(
            "continuing study %s (%s): %d of %d trials finished, %d to run",
            study_name,
            _safe(url),
            finished,
            n_trials,
            todo,
        )
    else:
        log.info(
            "new study %s in %s: %d trials of %s over %s",
            study_name,
            _safe(url),
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
        objective = _Objective(model_name, params, base_mc, base_tc, split, feats, init_models, dist)
        study.optimize(
            objective,
            n_trials=todo,
            timeout=timeout,
            gc_after_trial=True,
            catch=(RuntimeError, FloatingPointError),
            callbacks=[
                optuna.study.MaxTrialsCallback(n_trials, states=(S.COMPLETE, S.PRUNED)),
                _ProgressLog(todo, n_trials, finished),
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


class _Objective:
    """One trial: the configs with its sampled fields, a fresh model, ``train`` in memory."""

    def __init__(self, model_name, params, base_mc, base_tc, split, feats, init_models, dist):
        self.model_name, self.params, self.base_mc, self.base_tc = model_name, params, base_mc, base_tc
        self.split, self.feats, self.init_models, self.dist = split, feats, init_models, dist

    def __call__(self, trial) -> float:
        import optuna

        trial.set_user_attr(WORKER_ATTR, _worker_id())
        values = {p.name: p.suggest(trial) for p in self.params}
        mc = {**self.base_mc, **{p.name: values[p.name] for p in self.params if p.target == "model"}}
        tc = TrainConfig.from_dict(
            {**self.base_tc.to_dict(), **{p.name: values[p.name] for p in self.params if p.target == "train"}}
        )
        torch.manual_seed(tc.seed)  # every trial starts from the same initial draw as `mmiris train`
        model = build_model(self.model_name, mc, self.split, self.feats)
        if self.init_models:
            try:
                model.init_from(*self.init_models)  # type: ignore[operator]  # checked in tune_model
            except ValueError as exc:
                raise MmirisError(f"init_from: {exc}") from None
        best = {"hr10": -math.inf}

        def on_validation(epoch: int, m: dict) -> None:
            trial.report(float(m["hr10"]), epoch)
            if m["hr10"] > best["hr10"]:
                best.update(hr10=float(m["hr10"]), ndcg10=float(m.get("ndcg10", math.nan)), epoch=epoch)
                trial.set_user_attr("best", dict(best))
            trial.set_user_attr("epochs", epoch)
            if model.trainable and trial.should_prune():  # a closed-form fit has nothing left to stop
                raise optuna.TrialPruned(
                    f"validation HR@10 {m['hr10']:.4f} at epoch {epoch} is below the median of earlier trials"
                )

        res = train(model, self.split, tc, self.dist, checkpoint_dir=None, on_validation=on_validation)
        return float(res.best_metrics["hr10"])


class _ProgressLog:
    """A log line per finished trial: its value, the best so far, trials per minute, ETA."""

    def __init__(self, todo: int, n_trials: int, finished_before: int):
        self.todo, self.n_trials, self.before = todo, n_trials, finished_before
        self.done, self.t0 = 0, time.perf_counter()

    def __call__(self, study, trial) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed * 60 if elapsed > 0 else 0.0
        eta = (self.todo - self.done) / (rate / 60) if rate > 0 else math.inf
        best = _best_trial(study)
        got = trial.user_attrs.get("best", {}).get("hr10")
        secs = trial.duration.total_seconds() if trial.duration else math.nan
        log.info(
            "trial %d %s: HR@10 %s after %s epoch(s) in %.1fs (%s); best %s; %d/%d this run, %.2f trials/min, ETA %s",
            trial.number,
            trial.state.name.lower(),
            "–" if got is None else f"{got:.4f}",
            trial.user_attrs.get("epochs", 0),
            secs,
            ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items()),
            "–" if best is None else f"{best.value:.4f} (trial {best.number})",
            self.done,
            self.todo,
            rate,
            "–" if math.isinf(eta) else f"{eta:.0f}s",
        )


def _best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _publish(
    store, study, model_name, split_ref, other_parents, settings, study_name, url, n_trials, params, device
) -> ArtifactRef:
    import optuna

    S = optuna.trial.TrialState
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == S.WAITING:
            continue  # enqueued, never started
        best = t.user_attrs.get("best") or {}
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": best.get("hr10"),
                "ndcg10": None if best.get("ndcg10") is None or math.isnan(best["ndcg10"]) else best["ndcg10"],
                "best_epoch": best.get("epoch"),
                "epochs": int(t.user_attrs.get("epochs", 0)),
                "params": json.dumps(t.params, sort_keys=True),
                "seconds": t.duration.total_seconds() if t.duration else None,
            }
        )
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")}
    best = _best_trial(study)
    stats = {f"n_{s}": n for s, n in counts.items()}
    if best is not None:
        stats.update(
            best_trial=best.number,
            best_value=best.value,
            best_epoch=(best.user_attrs.get("best") or {}).get("epoch"),
            best_params=best.params,
            best_model_config={p.name: best.params[p.name] for p in params if p.target == "model"},
            best_train_config={p.name: best.params[p.name] for p in params if p.target == "train"},
        )
        log.info(
            "best of %d finished trials: trial %d, validation HR@10 %.4f, %s",
            counts["complete"] + counts["pruned"],
            best.number,
            best.value,
            ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()),
        )
    else:
        log.warning("study %s has no complete trial yet; publishing the trials table without a best", study_name)
    version_params = {
        **settings,
        "study": study_name,
        "n_trials": n_trials,
        "finished": counts["complete"] + counts["pruned"],
        "failed": counts["fail"],
    }
    schema = pa.schema(
        [
            ("number", pa.int64()),
            ("state", pa.string()),
            ("value", pa.float64()),
            ("ndcg10", pa.float64()),
            ("best_epoch", pa.int32()),
            ("epochs", pa.int32()),
            ("params", pa.string()),
            ("seconds", pa.float64()),
        ]
    )
    out = Output(
        tables={"trials": pa.Table.from_pylist(rows, schema=schema)},
        stats=stats,
        info={"storage": _safe(url), "study": study_name, "threads": torch.get_num_threads(), "device": str(device)},
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
    return f"{model_code_version(cls)}+{source_version('mmiris.pipelines.tune')}"


def best_params(store: ArtifactStore, tune_ref: ArtifactRef | str, model_name: str | None = None) -> tuple[dict, dict]:
    """(model config fields, training config fields) of a tune artifact's best trial."""
    m = store.manifest(store.resolve(tune_ref))
    if m.kind != "tune":
        raise MmirisError(f"artifact {m.ref} is a {m.kind!r} artifact, expected a tune artifact")
    if model_name is not None and m.params.get("model") != model_name:
        raise MmirisError(f"{m.ref} tuned model {m.params.get('model')!r}, not {model_name!r}")
    if "best_model_config" not in m.stats:
        raise MmirisError(f"{m.ref} has no complete trial, so no best parameters")
    return dict(m.stats["best_model_config"]), dict(m.stats["best_train_config"])


# ------------------------------------------------------------------------------ killed trials
def _recover(study, fail_running: bool) -> None:
    """Mark trials left ``running`` by a dead process (this machine) or, with ``fail_running``,
    all of them, as failed, and enqueue their parameters again (once)."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR, "")
        # No worker yet: its process died between creating the trial and starting it (a live
        # one records itself within milliseconds).
        orphan = (
            not worker
            and t.datetime_start is not None
            and (datetime.now() - t.datetime_start).total_seconds() > ORPHAN_S
        )
        if not (fail_running or orphan or _dead_here(worker)):
            log.warning(
                "trial %d is running on %s; leaving it (pass --fail-running if that run died)",
                t.number,
                worker or "an unknown worker",
            )
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        retry = bool(t.params) and "retry_of" not in t.user_attrs  # once: they may be what kills it (OOM)
        if retry:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        log.warning(
            "trial %d was left running by %s, which is gone: marked fail; %s",
            t.number,
            worker or "an unknown worker",
            "its parameters are tried again"
            if retry
            else "not retried (it was already a retry)"
            if t.params
            else "it had no parameters yet",
        )


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _dead_here(worker: str) -> bool:
    host, _, rest = worker.partition(":")
    pid_s, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    pid = int(pid_s)
    if pid == os.getpid():
        return True  # this process is starting the study: no trial of it can be running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        text = stat.read_text().rsplit(")", 1)[1].split()
        return text[0] == "Z" or (bool(started) and text[19] != started)  # zombie, or pid reused
    return False


def _safe(url: str) -> str:
    """The storage URL without a password (it goes to logs and the manifest)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: show it as given
        return url
