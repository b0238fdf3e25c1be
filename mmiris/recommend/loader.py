"""Load what a published model needs: the model itself and the split it was trained on.

Library code (the report, the recommend stage, benchmarks) reads models through here, so the
library never imports the stage layer above it.
"""

from __future__ import annotations

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.errors import MmirisError
from mmiris.models.base import Recommender


def load_trained_model(store: ArtifactStore, model_ref: ArtifactRef | str) -> Recommender:
    """The model loader (mmiris/models/build.py), imported when needed."""
    try:
        from mmiris.models.build import load_model
    except ImportError as exc:  # the training package is missing from this install
        raise MmirisError(f"cannot load model {model_ref}: mmiris.models.build is unavailable ({exc})") from None
    return load_model(store, model_ref)


def model_split(store: ArtifactStore, model_ref: ArtifactRef | str) -> ArtifactRef:
    """The split a model was trained on (its ``split`` parent)."""
    m = store.manifest(model_ref)
    splits = [ArtifactRef.parse(p) for p in m.parents if store.manifest(ArtifactRef.parse(p)).kind == "split"]
    if len(splits) != 1:
        raise MmirisError(f"model {m.ref} has {len(splits)} split parents: name the split (--split)")
    return splits[0]
