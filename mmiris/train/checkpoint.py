"""Checkpoints: atomic training snapshots, and ``load_model`` for published model artifacts.

A training checkpoint (``<dir>/last.pt``) holds everything a killed run needs to continue
exactly where it stopped: model and optimiser state, torch RNG states, the sampler position
(epoch and next batch), the early-stopping state and the log so far. It is written to a
temporary file and renamed into place, so a kill mid-write leaves the previous one intact.

A published model artifact carries ``files/model.pt`` ({"format": 1, "model", "config",
"state_dict", "n_users", "n_items"}) and its typed configs in the manifest params; ``load_model``
rebuilds the model from them with the split's training histories and the feature artifacts it
was trained with (its parents).

No pickled code is ever run: both files are read with ``torch.load(weights_only=True)``, whose
unpickler accepts only tensors, dicts, lists, tuples, strings, numbers, booleans and None —
everything these files hold (optimiser state and RNG states are tensors and numbers), so no
extra classes are allow-listed. A model file is also checked against the sha256 in its
manifest before it is unpickled (``ArtifactStore.read_file``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.data.modality import load_modality
from mmiris.data.split import load_split
from mmiris.errors import MmirisError
from mmiris.models import Recommender, get_model_class

CHECKPOINT = "last.pt"
MODEL_FILE = "model.pt"


def save_checkpoint(directory: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``directory/last.pt`` atomically (temp file, fsync, rename)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    final, tmp = d / CHECKPOINT, d / f".{CHECKPOINT}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def load_checkpoint(directory: str | os.PathLike) -> dict | None:
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report which file is unreadable
        raise MmirisError(f"checkpoint {path} is unreadable ({_short(exc)}); delete it to start over") from None
    if not isinstance(state, dict) or not {"model", "model_state", "optimizer", "rng", "state"} <= set(state):
        raise MmirisError(f"checkpoint {path} is not a training checkpoint of this version; delete it to start over")
    return state


def _short(exc: Exception) -> str:
    """The first line of an unpickling error (torch's own message runs to a page)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def read_model_file(store: ArtifactStore, ref: ArtifactRef) -> dict:
    """``files/model.pt`` of a model artifact, checksum-verified and unpickled without code."""
    data = store.read_file(ref, MODEL_FILE)
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - name the file, not torch's internals
        raise MmirisError(f"model {ref}: files/{MODEL_FILE} is not a loadable model file "
                          f"({_short(exc)}); expected tensors, numbers and strings only") from None
    if not isinstance(blob, dict) or not {"model", "config", "state_dict"} <= set(blob) \
            or not isinstance(blob["state_dict"], dict):
        raise MmirisError(f"model {ref}: files/{MODEL_FILE} lacks model/config/state_dict; expected a "
                          f"model file written by mmiris (format 1)")
    return blob


def model_bytes(model: Recommender, state_dict: dict) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": 1, "model": model.name, "config": model.config.to_dict(),
                "n_users": model.n_users, "n_items": model.n_items,
                "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}, buf)
    return buf.getvalue()


def build_config(cls: type[Recommender], model_config: dict | None):
    """``cls``'s typed config with ``model_config`` overrides; unknown fields, and values whose
    type disagrees with the field's default (``--set beta=notjson``), are an error."""
    defaults = cls.config_cls()
    for key, value in (model_config or {}).items():
        default = getattr(defaults, key, None)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and \
                (isinstance(value, (str, bool, list, dict)) or value is None):
            raise MmirisError(f"model {cls.name}: --set {key}={value!r}: expected a number "
                              f"(like the default {default!r})")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise MmirisError(f"model {cls.name}: --set {key}={value!r}: expected true or false")
    try:
        return cls.config_cls(**(model_config or {}))
    except TypeError as exc:
        known = sorted(cls.config_cls.__dataclass_fields__)
        raise MmirisError(f"model {cls.name}: bad model config {model_config}: {exc}; "
                          f"its fields are {known}") from None


def build_model(name: str, config: dict | None, split, features: dict | None = None) -> Recommender:
    """Instantiate registry model ``name`` with ``config`` overrides on the split's sizes."""
    cls = get_model_class(name)
    return cls(build_config(cls, config), split.n_users, split.n_items, split.history(), features or {})


def load_features(store: ArtifactStore, refs, n_items: int) -> dict:
    out = {}
    for ref in refs:
        mod = load_modality(store, ref, n_items)
        out[mod.name] = mod
    return out


def load_model(store: ArtifactStore, model_ref: ArtifactRef | str,
               device: torch.device | str = "cpu") -> Recommender:
    """Rebuild a published model (kind ``model``) ready for ``scores``/``score_all``/``attention``.

    Reads the checkpoint file and the manifest: model name and config from params, the split
    and the image/text feature artifacts from its parents. Returned in eval mode on ``device``.
    """
    m = store.manifest(model_ref)
    if m.kind != "model":
        raise MmirisError(f"artifact {m.ref} is a {m.kind!r} artifact, expected a model")
    kinds = {p: store.manifest(ArtifactRef.parse(p)).kind for p in m.parents}
    split_refs = [p for p, k in kinds.items() if k == "split"]
    if len(split_refs) != 1:
        raise MmirisError(f"model {m.ref}: expected one split parent, found {split_refs}")
    split = load_split(store, ArtifactRef.parse(split_refs[0]))
    feats = load_features(store, [ArtifactRef.parse(p) for p, k in kinds.items()
                                  if k in ("image_features", "text_features")], split.n_items)
    blob = read_model_file(store, m.ref)
    model = build_model(blob["model"], blob["config"], split, feats)
    if not model.trainable and not blob["state_dict"]:
        model.fit(split)  # closed-form model without saved tensors: refit (deterministic)
    else:
        model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
