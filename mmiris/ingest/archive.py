"""A dataset folder or zip archive seen as a set of named files (``u.data``, ``ratings.dat``).

Official archives nest their files in a folder (``ml-1m/ratings.dat``); members are found
by base name wherever they sit, so a folder, its parent or the zip all work.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from mmiris.errors import InputError


class SourceFiles:
    """Files of a dataset by base name, from a folder, a zip archive or one file's folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or folder")
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if self.path.is_file() and zipfile.is_zipfile(self.path):
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile as exc:
                raise InputError(f"{self.path}: not a readable zip archive ({exc})") from None
            for name in self._zip.namelist():
                if not name.endswith("/") and "__MACOSX" not in name:
                    self._members.setdefault(name.rsplit("/", 1)[-1], name)
        else:
            root = self.path if self.path.is_dir() else self.path.parent
            for p in sorted(root.rglob("*"), key=lambda p: len(p.parts)):
                if p.is_file():
                    self._members.setdefault(p.name, str(p))

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
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"{self.where(name)}: cannot read from the archive ({exc})") from None
        return Path(self._members[name]).read_bytes()
