"""The code part of an artifact's identity: a hash of the source that determines its output.

A stage names the modules whose code decides what it writes (``mmiris.eval`` for evaluate;
the model's own modules, the trainer and the attention kernel's C source for train) and
``source_version`` hashes their files. Editing one of them gives the stage's next publish a
new version id; editing any other module does not. Like Prefect's task-source cache key, but
over the modules that matter rather than one function. Files are read once per process.

A name is a module (its one file), a package (every ``.py``, ``.c`` and ``.h`` file under
it) or ``<package>.__init__`` (that package's ``__init__.py`` alone). Files are hashed under their module-relative names, so a checkout and a wheel install
of the same code agree.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

from mmiris.errors import MmirisError

SOURCE_SUFFIXES = (".py", ".c", ".h")


def source_version(*modules: str) -> str:
    """``src-<12 hex>``: sha256 over the source files of ``modules`` (order and repeats ignored)."""
    return _source_version(tuple(sorted(set(modules))))


@cache
def _source_version(modules: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in modules:
        for rel, path in _source_files(name):
            h.update(rel.encode() + b"\0")
            h.update(hashlib.sha256(read_source(path)).digest())
    return f"src-{h.hexdigest()[:12]}"


def read_source(path: Path) -> bytes:
    """The bytes hashed for one file (tests replace this to simulate an edit)."""
    return path.read_bytes()


def clear_cache() -> None:
    """Forget the hashes computed so far (after source files changed in this process)."""
    _source_version.cache_clear()


def _source_files(name: str) -> list[tuple[str, Path]]:
    if name.endswith(".__init__"):  # a package's own file, not the modules under it
        return [(name, _source_files(name.removesuffix(".__init__"))[0][1].parent / "__init__.py")]
    mod = sys.modules.get(name)
    origin = getattr(mod, "__file__", None)
    is_pkg = hasattr(mod, "__path__")
    if origin is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or not spec.has_location:
            raise MmirisError(f"code version: no source file for module {name!r}")
        origin, is_pkg = spec.origin, spec.submodule_search_locations is not None
    path = Path(origin)
    if not is_pkg:
        return [(name, path)]
    root = path.parent
    files = [
        p
        for p in root.rglob("*")
        if p.suffix in SOURCE_SUFFIXES and p.is_file() and "__pycache__" not in p.relative_to(root).parts
    ]
    return sorted((f"{name}/{p.relative_to(root).as_posix()}", p) for p in files)


def referenced_modules(obj: type | ModuleType, within: str) -> set[str]:
    """The modules under the package ``within`` that ``obj``'s code is made of: the modules
    of its classes (MRO), then, transitively, every module under ``within`` that those
    modules' globals refer to (a module object, or a class or function defined there).

    A referenced package contributes all of its files (``mmiris.models.kernels``: the C
    source too); a function imported from a package's ``__init__`` contributes that file."""
    if isinstance(obj, ModuleType):
        todo = [obj.__name__]
    else:
        todo = [c.__module__ for c in obj.__mro__ if _under(c.__module__, within)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or not _under(name.removesuffix(".__init__"), within):
            continue
        seen.add(name)
        mod = sys.modules.get(name)
        if mod is None or hasattr(mod, "__path__"):
            continue  # a package named whole, or an __init__ file: no further references
        for value in vars(mod).values():
            ref: str | None
            if isinstance(value, ModuleType):
                ref = value.__name__  # a package module object counts whole
            else:
                ref = getattr(value, "__module__", None)
                if isinstance(ref, str) and hasattr(sys.modules.get(ref), "__path__"):
                    ref += ".__init__"  # e.g. a registry function: that file alone
            if isinstance(ref, str) and ref not in seen and _under(ref.removesuffix(".__init__"), within):
                todo.append(ref)
    return seen


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")
