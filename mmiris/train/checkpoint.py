"""Checkpoints: atomic training snapshots (building and loading published models is
``mmiris.models.build``).

A training checkpoint (``<dir>/last.pt``) holds everything a killed run needs to continue
exactly where it stopped: model and optimiser state, torch RNG states, the sampler position
(epoch and next batch), the early-stopping state and the log so far. It is written to a
temporary file and renamed into place, so a kill mid-write leaves the previous one intact.

No pickled code is ever run: a checkpoint is read with ``torch.load(weights_only=True)``, whose
unpickler accepts only tensors, dicts, lists, tuples, strings, numbers, booleans and None —
everything these files hold (optimiser state and RNG states are tensors and numbers), so no
extra classes are allow-listed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mmiris.errors import MmirisError

CHECKPOINT = "last.pt"


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
