"""Model registry: every model of the paper's tables, by name, on one contract (base.py).

Building a model (from a config, or from a published artifact) is ``mmiris.models.build``."""

from __future__ import annotations

import importlib
import pkgutil

from mmiris.models.base import Batch, ModelConfig, Recommender

MODELS: dict[str, type[Recommender]] = {}

# Every module of this package may define models (decorated with @register): a new model is
# one new file, found here with no other edit. These hold shared parts, not models.
_SHARED = {"base", "build", "layers", "losses", "attentive", "item_similarity", "kernels"}


def register(cls: type[Recommender]) -> type[Recommender]:
    MODELS[cls.name] = cls
    return cls


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SHARED and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get_model_class(name: str) -> type[Recommender]:
    _import_all()
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name]


def model_names() -> list[str]:
    _import_all()
    return sorted(MODELS)


__all__ = ["Batch", "MODELS", "ModelConfig", "Recommender", "get_model_class", "model_names", "register"]
