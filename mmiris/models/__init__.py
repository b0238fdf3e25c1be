"""Model registry: every model of the paper's tables, by name, on one contract (base.py)."""

from __future__ import annotations

import importlib
import pkgutil

from mmiris.models.base import Batch, ModelConfig, Recommender

MODELS: dict[str, type[Recommender]] = {}

# Every module of this package may define models (decorated with @register): a new model is
# one new file, found here with no other edit. These hold shared parts, not models.
_SHARED = {"base", "layers", "losses", "attentive", "item_similarity", "kernels"}


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


def build_model(name: str, config: ModelConfig | dict | None, n_users: int, n_items: int,
                history=None, features=None) -> Recommender:
    """Construct a registered model; ``config`` may be its config object, a dict or None (defaults)."""
    cls = get_model_class(name)
    if config is None:
        config = cls.config_cls()
    elif isinstance(config, dict):
        config = cls.config_cls.from_dict(config)
    return cls(config, n_users, n_items, history, features)


__all__ = ["Batch", "MODELS", "ModelConfig", "Recommender", "build_model", "get_model_class",
           "model_names", "register"]
