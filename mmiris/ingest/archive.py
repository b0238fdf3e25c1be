"""A dataset folder or zip archive seen as a set of named files (``u.data``, ``ratings.dat``).

Exactly what it is given, and one folder's files only, never a mix:

- a folder: its own files; if none of them is a ``marker`` (the file that makes it a
  dataset, e.g. ``ratings.dat``), the files of its one subfolder that has a marker (the
  official archives unpack to ``ml-1m/ratings.dat``). Deeper folders are never searched.
- a zip archive: the members at its top level, or else those of its one top-level folder.
- a single file: only a marker file stands for its folder (``ml-1m/ratings.dat``); any
  other file, or a ``.zip`` that is not a zip archive, is an error naming it.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from mmiris.errors import InputError


class SourceFiles:
    """Files of a dataset by base name, from a folder, a zip archive or one file's folder."""

    def __init__(self, path: str | Path, markers: tuple[str, ...] | list[str] = ()):
        self.path = Path(path)
        self.markers = tuple(markers)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or folder")
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if self.path.is_file() and zipfile.is_zipfile(self.path):
            self._open_zip()
        elif self.path.is_file():
            if self.path.suffix.lower() == ".zip":
                raise InputError(
                    f"{self.path}: not a zip archive (the file does not start with a zip "
                    f"header); expected the dataset's .zip, its folder, or {self._expect()}"
                )
            if self.markers and self.path.name not in self.markers:
                raise InputError(
                    f"{self.path}: not a dataset file or archive; expected a folder, a .zip "
                    f"archive, or {self._expect()}"
                )
            self._members = _files_in(self.path.parent)
        elif self.path.is_dir():
            self._members = self._folder_members(self.path)
        else:
            raise InputError(f"{self.path}: not a regular file or folder")

    def _expect(self) -> str:
        return f"one of {list(self.markers)}" if self.markers else "a file of the dataset"

    def _has_marker(self, members: dict[str, str]) -> bool:
        return any(m in members for m in self.markers) if self.markers else bool(members)

    def _folder_members(self, folder: Path) -> dict[str, str]:
        own = _files_in(folder)
        if self._has_marker(own):
            return own
        candidates = []
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = _files_in(sub)
            if self._has_marker(files):
                candidates.append((sub, files))
        if len(candidates) == 1:
            return candidates[0][1]
        if len(candidates) > 1:
            raise InputError(
                f"{folder}: {len(candidates)} subfolders hold a dataset "
                f"({', '.join(c[0].name for c in candidates)}); name one of them"
            )
        return own  # the format's reader says what is missing

    def _open_zip(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self.path)
            names = [
                n
                for n in self._zip.namelist()
                if not n.endswith("/") and "__MACOSX" not in n and not n.rsplit("/", 1)[-1].startswith(".")
            ]
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InputError(f"{self.path}: not a readable zip archive ({exc})") from None
        by_dir: dict[str, dict[str, str]] = {}
        for n in names:
            folder, _, base = n.rpartition("/")
            by_dir.setdefault(folder, {})[base] = n
        top = by_dir.get("", {})
        if self._has_marker(top):
            self._members = top
            return
        tops = {d: m for d, m in by_dir.items() if d and "/" not in d and self._has_marker(m)}
        if len(tops) == 1:
            self._members = next(iter(tops.values()))
        elif len(tops) > 1:
            raise InputError(
                f"{self.path}: the archive holds {len(tops)} datasets ({', '.join(sorted(tops))}); expected one"
            )
        else:
            self._members = top

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def names(self) -> list[str]:
        return sorted(self._members)

    def where(self, name: str) -> str:
        """A human-readable location for messages: ``archive.zip:ml-1m/ratings.dat``."""
        member = self._members[name]
        return f"{self.path}:{member}" if self._zip else member

    def read(self, name: str) -> bytes:
        if name not in self._members:
            raise InputError(f"{self.path}: no file {name!r} found (it has {self.names()[:20]})")
        if self._zip:
            try:
                return self._zip.read(self._members[name])
            except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, NotImplementedError) as exc:
                raise InputError(f"{self.where(name)}: cannot read from the archive ({exc})") from None
        return Path(self._members[name]).read_bytes()


def _files_in(folder: Path) -> dict[str, str]:
    """Base name -> path of the regular files directly in ``folder`` (not hidden)."""
    return {p.name: str(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
