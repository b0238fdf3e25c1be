"""Building models: from a name and config overrides, and from a published model artifact.

The one place a model is constructed. Training, tuning, evaluation, recommendation and the
benchmarks call ``build_model`` (a fresh model) or ``load_model`` (a trained one):

    model = build_model("nais_prod", {"emb": 16}, split.n_users, split.n_items, split.history())
    model = load_model(store, "model-nais_prod@latest")

A published model artifact carries ``files/model.pt`` ({"format": 1, "model", "config",
"state_dict", "n_users", "n_items"}, written by ``model_bytes``) and its typed configs in the
manifest params. ``load_model`` rebuilds the model from them with the split's training
histories and the feature artifacts it was trained with (its parents). The file is checked
against the sha256 in its manifest (``ArtifactStore.read_file``) and read with
``torch.load(weights_only=True)``, whose unpickler accepts only tensors, containers, strings
and numbers: loading a model never runs pickled code.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable
from typing import Any

import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.data.modality import ItemModality, load_modality
from mmiris.data.split import UserHistory, load_split
from mmiris.errors import ConfigError, MmirisError
from mmiris.models import get_model_class
from mmiris.models.base import ModelConfig, Recommender
from mmiris.typed_config import config_from_dict

MODEL_FILE = "model.pt"
MODEL_FILE_FORMAT = 1


def build_config(cls: type[Recommender], overrides: dict | None) -> ModelConfig:
    """``cls``'s typed config with ``overrides``; unknown fields, and values whose type
    disagrees with the field's default (``--set beta=notjson``), are an error naming them."""
    overrides = dict(overrides or {})
    defaults = cls.config_cls()
    optional = {f.name for f in dataclasses.fields(cls.config_cls) if "None" in str(f.type)}  # `int | None`
    for key, value in overrides.items():
        default = getattr(defaults, key, None)
        if (
            isinstance(default, (int, float))
            and not isinstance(default, bool)
            and (isinstance(value, (str, bool, list, dict)) or (value is None and key not in optional))
        ):
            raise MmirisError(
                f"model {cls.name}: --set {key}={value!r}: expected a number (like the default {default!r})"
            )
        if isinstance(default, bool) and not isinstance(value, bool):
            raise MmirisError(f"model {cls.name}: --set {key}={value!r}: expected true or false")
    try:
        return config_from_dict(cls.config_cls, overrides, what=f"model {cls.name}: model config")
    except TypeError as exc:  # a value the config's own checks refuse
        raise ConfigError(f"model {cls.name}: bad model config {overrides}: {exc}") from None


def build_model(
    name: str,
    config: ModelConfig | dict | None,
    n_users: int,
    n_items: int,
    history: UserHistory | None = None,
    features: dict[str, ItemModality] | None = None,
) -> Recommender:
    """A fresh registry model ``name``: ``config`` is its config object, or overrides of its
    defaults (a dict, or None for the defaults)."""
    try:
        cls = get_model_class(name)
    except KeyError as exc:
        raise MmirisError(str(exc).strip("\"'")) from None
    if not isinstance(config, ModelConfig):
        config = build_config(cls, config)
    return cls(config, n_users, n_items, history, features or {})


def load_features(store: ArtifactStore, refs: Iterable[ArtifactRef], n_items: int) -> dict[str, ItemModality]:
    """The feature artifacts ``refs`` as modalities by name ("image", "text")."""
    out = {}
    for ref in refs:
        mod = load_modality(store, ref, n_items)
        out[mod.name] = mod
    return out


def model_bytes(model: Recommender, state_dict: dict[str, torch.Tensor]) -> bytes:
    """The bytes of ``files/model.pt`` for ``model`` with parameters ``state_dict``."""
    buf = io.BytesIO()
    blob = {
        "format": MODEL_FILE_FORMAT,
        "model": model.name,
        "config": model.config.to_dict(),
        "n_users": model.n_users,
        "n_items": model.n_items,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    torch.save(blob, buf)
    return buf.getvalue()


def read_model_file(store: ArtifactStore, ref: ArtifactRef) -> dict[str, Any]:
    """``files/model.pt`` of a model artifact, checksum-verified and unpickled without code."""
    data = store.read_file(ref, MODEL_FILE)
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - name the file, not torch's internals
        raise MmirisError(
            f"model {ref}: files/{MODEL_FILE} is not a loadable model file ({_first_line(exc)}); "
            "expected tensors, numbers and strings only"
        ) from None
    if (
        not isinstance(blob, dict)
        or not {"model", "config", "state_dict"} <= set(blob)
        or not isinstance(blob["state_dict"], dict)
    ):
        raise MmirisError(
            f"model {ref}: files/{MODEL_FILE} lacks model/config/state_dict; "
            f"expected a model file written by mmiris (format {MODEL_FILE_FORMAT})"
        )
    return blob


def load_model(store: ArtifactStore, model_ref: ArtifactRef | str, device: torch.device | str = "cpu") -> Recommender:
    """Rebuild a published model (kind ``model``) ready for ``scores``/``score_all``/``attention``.

    Reads the model file and the manifest: model name and config from the file, the split and
    the image/text feature artifacts from its parents. Returned in eval mode on ``device``.
    """
    m = store.manifest(model_ref)
    if m.kind != "model":
        raise MmirisError(f"artifact {m.ref} is a {m.kind!r} artifact, expected a model")
    kinds = {p: store.manifest(ArtifactRef.parse(p)).kind for p in m.parents}
    split_refs = [p for p, k in kinds.items() if k == "split"]
    if len(split_refs) != 1:
        raise MmirisError(f"model {m.ref}: expected one split parent, found {split_refs}")
    split = load_split(store, ArtifactRef.parse(split_refs[0]))
    feature_refs = [ArtifactRef.parse(p) for p, k in kinds.items() if k in ("image_features", "text_features")]
    feats = load_features(store, feature_refs, split.n_items)
    blob = read_model_file(store, m.ref)
    model = build_model(blob["model"], blob["config"], split.n_users, split.n_items, split.history(), feats)
    if not model.trainable and not blob["state_dict"]:
        model.fit(split)  # closed-form model without saved tensors: refit (deterministic)
    else:
        model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()


def _first_line(exc: Exception) -> str:
    """The first line of an unpickling error (torch's own message runs to a page)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
