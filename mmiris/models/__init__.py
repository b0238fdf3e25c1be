"""Model registry: every model of the paper's tables, by name, on one contract (base.py)."""

from __future__ import annotations

import importlib

from mmiris.models.base import Batch, ModelConfig, Recommender

MODELS: dict[str, type[Recommender]] = {}

# Modules that define models; each decorates its classes with @register.
_MODULES: list[str] = []


def register(cls: type[Recommender]) -> type[Recommender]:
    MODELS[cls.name] = cls
    return cls


def get_model_class(name: str) -> type[Recommender]:
    for mod in _MODULES:
        importlib.import_module(f"mmiris.models.{mod}")
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name]


__all__ = ["Batch", "MODELS", "ModelConfig", "Recommender", "get_model_class", "register"]
