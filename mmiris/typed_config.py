"""The one way to build a typed config dataclass from a plain dict (CLI, artifact params)."""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

from mmiris.errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], d: dict, what: str | None = None) -> T:
    """``cls(**d)``; unknown keys raise ConfigError naming them and the known fields. A class's
    ``RENAMED = {"old": "new"}`` maps fields renamed since older artifacts were written."""
    renamed = getattr(cls, "RENAMED", {})
    d = {renamed.get(k, k): v for k, v in d.items()}
    known = sorted(f.name for f in fields(cls))  # type: ignore[arg-type]  # cls: a dataclass
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"{what or cls.__name__}: unknown field(s) {unknown}; known: {known}")
    return cls(**d)
