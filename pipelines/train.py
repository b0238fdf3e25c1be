"""Stage ``train``: split (+ image/text features) → a ``model`` artifact.

Works as a plain call, and the same call on every rank under torchrun: all ranks train,
rank 0 publishes, every rank returns the same ref. Closed-form models (itempop, ease) go
through the same function (fit, then validate). The artifact holds ``files/model.pt``
(see ``mmiris.models.build``), the ``training_log`` table (loss per step, validation
metrics per epoch), the model and training configs in ``params`` (the version key), and
best epoch / early stopping in ``stats``; timings, world size and device go to ``info``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.code_version import referenced_modules, source_version
from mmiris.data.split import load_split
from mmiris.errors import MmirisError
from mmiris.models import get_model_class
from mmiris.models.base import Recommender
from mmiris.models.build import build_config, build_model, load_features, load_model, model_bytes
from mmiris.train import distributed as D
from mmiris.train.checkpoint import checkpoint_exists, remove_checkpoint
from mmiris.train.config import TrainConfig, resolve_config
from mmiris.train.trainer import train

log = logging.getLogger("mmiris.train")

# What decides a trained model besides the model's own modules (model_code_version).
TRAIN_CODE = (
    "mmiris.pipelines.train",
    "mmiris.train.trainer",
    "mmiris.train.sampler",
    "mmiris.train.config",
    "mmiris.train.checkpoint",
    "mmiris.models.build",
    "mmiris.models.losses",
    "mmiris.data",
)


def model_code_version(cls: type) -> str:
    """The code version of models of class ``cls``: its module and its bases' modules, what
    they use under ``mmiris.models`` (the attention path ``attentive.py`` and the kernel's C
    source for attentive models, ``layers.py``, the registry file), and the trainer, sampler,
    losses and data loading. Editing another model's module leaves it unchanged."""
    return source_version(*referenced_modules(cls, "mmiris.models"), *TRAIN_CODE)


def model_artifact_name(model_name: str) -> str:
    return f"model-{model_name}"


def checkpoint_location(given: str | os.PathLike) -> Path | str:
    """A checkpoint directory given by the user: a filesystem URI as is, else a local path."""
    text = str(given)
    return text if "://" in text and not text.startswith("file://") else Path(text).expanduser()


def default_checkpoint_dir(store: ArtifactStore, ref: ArtifactRef) -> Path | str:
    """``<store>/_checkpoints/<name>-<version>``, on the store's own filesystem: a local folder,
    or a URI on S3 (any pyarrow filesystem), which every node of a torchrun group can reach."""
    if store.is_local:
        return Path(store.root) / "_checkpoints" / f"{ref.name}-{ref.version}"
    base, sep, query = store.uri.partition("?")
    return f"{base.rstrip('/')}/_checkpoints/{ref.name}-{ref.version}{sep}{query}"


def model_inputs(
    store: ArtifactStore,
    cls: type[Recommender],
    image_features: ArtifactRef | str | None,
    text_features: ArtifactRef | str | None,
    init_from: ArtifactRef | str | list | tuple | None,
) -> tuple[list[ArtifactRef], list[ArtifactRef]]:
    """(the feature artifacts ``cls`` reads, the models it starts from), resolved. A modality
    it reads but was not given, or ``init_from`` for a model that cannot take it, is an error;
    features it does not read are ignored with a warning."""
    given = {"image": image_features, "text": text_features}
    missing = [m for m in cls.modalities if given.get(m) is None]
    if missing:
        raise MmirisError(
            f"model {cls.name} needs {' and '.join(missing)} features: pass "
            + " and ".join(f"--{m}-features" for m in missing)
        )
    feat_refs = [store.resolve(r) for m in cls.modalities if (r := given[m]) is not None]
    unused = [m for m, r in given.items() if r is not None and m not in cls.modalities]
    if unused:
        log.warning("model %s does not read %s features; ignoring them", cls.name, unused)
    if isinstance(init_from, (str, ArtifactRef)):
        init_from = [init_from]
    init_refs = [store.resolve(r) for r in init_from or []]
    if init_refs and not hasattr(cls, "init_from"):
        raise MmirisError(f"model {cls.name} cannot be initialised from another model (no init_from)")
    return feat_refs, init_refs


def train_model(
    store: ArtifactStore,
    split_ref: ArtifactRef | str,
    model_name: str,
    *,
    model_config: dict | None = None,
    train_config: TrainConfig | None = None,
    image_features: ArtifactRef | str | None = None,
    text_features: ArtifactRef | str | None = None,
    resume: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    init_from: ArtifactRef | str | list | tuple | None = None,
    on_validation: Callable[[int, dict, int], None] | None = None,
) -> ArtifactRef:
    """Train (or fit) ``model_name`` on the split and publish ``model-<name>``; see module doc.

    ``init_from``: published model(s) to start from: NAIS or an IRIS model from a FISM (the
    NAIS paper's pretraining), NeuMF from a GMF and an MLP (``neumf`` with ``mode`` gmf / mlp,
    the NCF paper's). The model class's ``init_from(*others)`` copies the parameters; they
    become parents. ``on_validation(epoch, metrics, step)``: called after each validation (see
    ``mmiris.train.trainer.train``).
    """
    cfg = train_config or TrainConfig()
    dist = D.setup(cfg.device)
    split_ref = store.resolve(split_ref)
    try:
        cls = get_model_class(model_name)
    except KeyError as exc:
        raise MmirisError(str(exc).strip("\"'")) from None
    feat_refs, init_refs = model_inputs(store, cls, image_features, text_features, init_from)
    mcfg = build_config(cls, model_config)
    # "auto" resolved here, so the version key names the dtype that really trained the model
    cfg = resolve_config(cfg, cls, dist.device)
    parents = [split_ref, *feat_refs, *init_refs]
    params = {"model": model_name, "model_config": mcfg.to_dict(), "train_config": cfg.key_params()}
    name = model_artifact_name(model_name)
    code = model_code_version(cls)
    ref = store.ref_for(name, "model", parents, params, code)
    if store.exists(ref):
        log.info("found existing %s (same split, features and configs); not retraining", ref)
        return ref

    split = load_split(store, split_ref)
    if cls.trainable and store.manifest(split_ref).stats.get("validation") == "cold":
        from mmiris.recommend.new_items import scores_new_items

        if not scores_new_items(cls):
            log.warning(
                "%s validates on cold items (made with --cold-valid), which %s cannot score: its validation is "
                "near random, so early stopping picks an arbitrary epoch; set --epochs and --patience instead",
                split_ref,
                model_name,
            )
    feats = load_features(store, feat_refs, split.n_items)
    torch.manual_seed(cfg.seed)  # same initial parameters on every rank and in every run
    model = build_model(model_name, mcfg, split.n_users, split.n_items, split.history(), feats)
    if init_refs:
        try:
            model.init_from(*[load_model(store, r) for r in init_refs])  # type: ignore[operator]  # checked above
        except ValueError as exc:
            raise MmirisError(f"--init-from {' '.join(map(str, init_refs))}: {exc}") from None
        log.info("initialised %s from %s", model_name, ", ".join(map(str, init_refs)))
    ckpt = checkpoint_location(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(store, ref)
    if D.restarted():
        log.info("torchrun restarted this worker group: resuming from %s", ckpt)
        resume = True
    if not resume and dist.is_main and checkpoint_exists(ckpt):
        log.warning("%s holds a checkpoint of an earlier run; starting over (pass --resume to continue it)", ckpt)
    res = train(
        model,
        split,
        cfg,
        dist,
        checkpoint_dir=ckpt if model.trainable else None,
        resume=resume,
        on_validation=on_validation,
    )

    if dist.is_main:
        model.load_state_dict(res.state_dict)
        out = Output(
            tables={"training_log": pa.Table.from_pylist(res.log, schema=_LOG_SCHEMA)},
            files={"model.pt": model_bytes(model, res.state_dict)},
            stats={
                "best_epoch": res.best_epoch,
                "best_step": res.best_step,
                "epochs_run": res.epochs_run,
                "stopped_early": res.stopped_early,
                **{f"valid_{k}": v for k, v in res.best_metrics.items()},
            },
            info={
                "epoch_seconds": res.epoch_seconds,
                "world_size": dist.world_size,
                "device": str(dist.device),
                "threads": torch.get_num_threads(),
                "resumed_from": res.resumed_from,
                "runtime_config": cfg.to_dict(),
                "precision": cfg.precision,
                "attention_backend": _attention_backend(model, dist.device),
            },
        )
        published = store.publish(name, "model", out, parents=parents, params=params, code_version=code)
        if published != ref:  # the same ref_for on every rank; a mismatch is a bug
            raise MmirisError(f"published {published} but every rank expected {ref}")
        remove_checkpoint(ckpt)
    D.barrier(dist, "waiting for rank 0 to publish")
    return ref


def train_on_this_rank(store: ArtifactStore, split_ref: ArtifactRef | str, model_name: str, **kw) -> ArtifactRef:
    """``train_model`` as one rank of the process group torchrun describes (or alone): joins
    the group, keeps the other ranks' logs to warnings, leaves the group, and prints the
    published ref on rank 0 (what ``mmiris train`` and the torchrun launcher print)."""
    cfg = kw.get("train_config") or TrainConfig()
    dist = D.setup(cfg.device)
    if not dist.is_main:  # one voice: rank 0 logs progress, the others only warnings
        logging.getLogger("mmiris").setLevel(logging.WARNING)
    try:
        ref = train_model(store, split_ref, model_name, **kw)
    finally:
        D.teardown()
    if dist.is_main:
        print(ref, flush=True)
    return ref


def _attention_backend(model, device) -> str | None:
    """Which attention implementation trained an attentive model: "fused-op" (the native
    kernel, registered as torch op mmiris::attentive_sum) or "eager"; None for others."""
    if not getattr(model, "has_attention", False):
        return None
    from mmiris.models import attentive

    return attentive.backend_name(getattr(model, "backend", "auto"), device)


_LOG_SCHEMA = pa.schema(
    [
        ("epoch", pa.int32()),
        ("step", pa.int64()),
        ("loss", pa.float64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("seconds", pa.float64()),
    ]
)
