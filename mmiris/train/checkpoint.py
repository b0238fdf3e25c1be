"""Checkpoints: atomic training snapshots (building and loading published models is
``mmiris.models.build``).

A training checkpoint (``<dir>/last.pt``; ``<dir>`` a local folder or any fsspec/pyarrow
filesystem URI such as ``s3://…``) holds everything a killed run needs to continue
exactly where it stopped: model and optimiser state, torch RNG states, the sampler position
(epoch and next batch), the early-stopping state and the log so far. It is written to a
temporary file and renamed into place, so a kill mid-write leaves the previous one intact.

No pickled code is ever run: a checkpoint is read with ``torch.load(weights_only=True)``, whose
unpickler accepts only tensors, dicts, lists, tuples, strings, numbers, booleans and None —
everything these files hold (optimiser state and RNG states are tensors and numbers), so no
extra classes are allow-listed.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import torch

from mmiris.errors import MmirisError

CHECKPOINT = "last.pt"


def save_checkpoint(directory: str | os.PathLike, state: dict) -> Path | str:
    """Write ``state`` to ``directory/last.pt`` atomically. A local folder: temp file, fsync,
    rename. A filesystem URI (``s3://bucket/ckpt?endpoint_override=…``, any pyarrow
    filesystem): one object written whole (an S3 upload becomes visible only when complete),
    so ranks on machines with no shared disk resume from it."""
    if _is_uri(directory):
        fs, path = _fs(str(directory))
        buf = io.BytesIO()
        torch.save(state, buf)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{CHECKPOINT}") as f:
            f.write(buf.getvalue())
        return _join(str(directory), CHECKPOINT)
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
    if _is_uri(directory):
        fs, path = _fs(str(directory))
        where = _join(str(directory), CHECKPOINT)
        try:
            with fs.open_input_stream(f"{path}/{CHECKPOINT}") as f:
                source: io.BytesIO | Path = io.BytesIO(f.read())
        except FileNotFoundError:
            return None
    else:
        source = Path(directory) / CHECKPOINT
        where = str(source)
        if not source.exists():
            return None
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report which file is unreadable
        raise MmirisError(f"checkpoint {where} is unreadable ({_short(exc)}); delete it to start over") from None
    if not isinstance(state, dict) or not {"model", "model_state", "optimizer", "rng", "state"} <= set(state):
        raise MmirisError(f"checkpoint {where} is not a training checkpoint of this version; delete it to start over")
    return state


def checkpoint_exists(directory: str | os.PathLike) -> bool:
    if _is_uri(directory):
        import pyarrow.fs as pafs

        fs, path = _fs(str(directory))
        return fs.get_file_info(f"{path}/{CHECKPOINT}").type == pafs.FileType.File
    return (Path(directory) / CHECKPOINT).exists()


def remove_checkpoint(directory: str | os.PathLike) -> None:
    """Delete a run's checkpoint folder (after its model is published); missing is fine."""
    if _is_uri(directory):
        fs, path = _fs(str(directory))
        try:
            fs.delete_dir(path)
        except (FileNotFoundError, OSError):
            pass
        return
    shutil.rmtree(directory, ignore_errors=True)


def _is_uri(directory: str | os.PathLike) -> bool:
    text = str(directory)
    return "://" in text and not text.startswith("file://")


def _fs(uri: str):
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def _join(uri: str, name: str) -> str:
    """``s3://b/ckpt?x=1`` + ``last.pt`` -> ``s3://b/ckpt/last.pt?x=1``."""
    base, sep, query = uri.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def _short(exc: Exception) -> str:
    """The first line of an unpickling error (torch's own message runs to a page)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
