"""Native kernels, compiled with the system C compiler at first use and cached.

Plain C through ctypes (no torch headers): it compiles in about a second. Built with
-fopenmp it links ``libgomp.so.1``, which resolves to the copy torch already loaded, so the
kernel's threads are torch's OpenMP threads. When no compiler is
available (or ``MMIRIS_FUSED=0``) callers fall back to the eager PyTorch path, which gives
the same numbers.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
FLAGS = ["-O3", "-march=native", "-ffast-math", "-std=gnu11", "-shared", "-fPIC"]
_loaded: dict[str, ctypes.CDLL | None] = {}


def _cpu_id() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def cache_dir() -> Path:
    root = os.environ.get("MMIRIS_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mmiris", "kernels"
    )
    return Path(root)


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library for ``kernels/<name>.c``, or None when it cannot be built."""
    if name in _loaded:
        return _loaded[name]
    lib = None
    if os.environ.get("MMIRIS_FUSED", "1") != "0":
        try:
            lib = _build(name)
        except Exception as exc:  # noqa: BLE001 - no compiler, read-only cache, …: the eager path still works
            log.warning("mmiris: native kernel %s unavailable (%s); using the eager PyTorch path", name, exc)
    _loaded[name] = lib
    return lib


def _flags() -> list[str]:
    return FLAGS + os.environ.get("MMIRIS_KERNEL_CFLAGS", "").split()


def _build(name: str) -> ctypes.CDLL:
    src = (_HERE / f"{name}.c").read_bytes()
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeError("no C compiler (gcc/cc) on PATH")
    key = hashlib.sha256(src + " ".join(_flags()).encode() + _cpu_id().encode() + platform.machine().encode())
    out = cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            c_file, so_file = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
            c_file.write_bytes(src)
            cmd = [cc, *_flags(), str(c_file), "-o", str(so_file), "-lm"]
            proc = subprocess.run([*cmd, "-fopenmp"], capture_output=True, text=True)
            if proc.returncode != 0:  # no OpenMP: the library runs its work items one by one
                proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{cc} failed on {name}.c: {proc.stderr.strip()[:500]}")
            os.replace(so_file, out)  # atomic: concurrent builders never see half a library
    return ctypes.CDLL(str(out))
