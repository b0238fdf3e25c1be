"""The versioned Parquet artifact store.

Layout under the store root (a local path or any pyarrow filesystem URI, e.g. ``s3://``)::

    <root>/<name>/<version>/manifest.json      written last: its presence is the commit
    <root>/<name>/<version>/<table>.parquet    one file per table of the artifact
    <root>/<name>/<version>/files/<file>       opaque files (model checkpoints, PNGs)
    <root>/<name>/LATEST                       version id of the newest publish
    <root>/_staging/...                        in-flight local publishes (never read)

A version id is the content hash of (name, kind, schema version, parent versions,
parameters, code version): the same inputs and parameters give the same id, so a stage can
look its output up before computing it. Locally a version is built in ``_staging`` and
renamed into place in one step; on object stores the manifest is the last object written,
and readers only see versions that have one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mmiris import __version__
from mmiris.artifacts.schema import conform, load_contract, validate
from mmiris.errors import ArtifactNotFound, MmirisError

log = logging.getLogger("mmiris.store")

DEFAULT_STORE = "./mmiris-store"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ArtifactRef:
    """A published artifact version: ``name@version``."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> "ArtifactRef":
        name, sep, version = text.partition("@")
        if not sep or not name or not version:
            raise MmirisError(f"artifact reference {text!r}: expected NAME@VERSION")
        return cls(name, version)


@dataclass
class Manifest:
    name: str
    version: str
    kind: str
    schema_version: int
    parents: list[str]
    params: dict
    code_version: str
    tables: dict[str, dict]  # table -> {"file", "rows", "columns"}
    files: dict[str, dict]  # file -> {"path", "bytes", "sha256"}
    stats: dict  # counted treatments, reported figures
    info: dict  # recorded but not part of the version key (source paths, timings)
    created_at: str

    @property
    def ref(self) -> ArtifactRef:
        return ArtifactRef(self.name, self.version)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)


@dataclass
class Output:
    """What a stage produces: tables (by contract table name), files, and counted stats."""

    tables: dict[str, pa.Table]
    files: dict[str, bytes] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def version_id(name: str, kind: str, schema_version: int, parents: Iterable, params: Mapping,
               code_version: str) -> str:
    key = {
        "name": name,
        "kind": kind,
        "schema_version": schema_version,
        "parents": sorted(str(p) for p in parents),
        "params": params,
        "code_version": code_version,
    }
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ArtifactStore:
    """Publish and read immutable artifact versions. See the module docstring for the layout."""

    def __init__(self, uri: str | os.PathLike | None = None,
                 filesystem: pafs.FileSystem | None = None):
        uri = str(uri or os.environ.get("MMIRIS_STORE") or DEFAULT_STORE)
        self.uri = uri
        if filesystem is not None:
            self.fs, self.root = filesystem, uri.rstrip("/")
        elif "://" in uri and not uri.startswith("file://"):
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.root = self.root.rstrip("/")
        else:
            path = Path(uri.removeprefix("file://")).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            self.fs, self.root = pafs.LocalFileSystem(), path.as_posix()
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.uri!r})"

    # ---------------------------------------------------------------- paths
    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def version_dir(self, ref: ArtifactRef) -> str:
        return self._path(ref.name, ref.version)

    def table_path(self, ref: ArtifactRef, table: str) -> str:
        return self._path(ref.name, ref.version, f"{table}.parquet")

    # ---------------------------------------------------------------- lookup
    def exists(self, ref: ArtifactRef) -> bool:
        info = self.fs.get_file_info(self._path(ref.name, ref.version, MANIFEST))
        return info.type == pafs.FileType.File

    def manifest(self, ref: ArtifactRef | str) -> Manifest:
        ref = self.resolve(ref) if isinstance(ref, str) else ref
        path = self._path(ref.name, ref.version, MANIFEST)
        try:
            with self.fs.open_input_stream(path) as f:
                raw = json.loads(f.read())
        except FileNotFoundError:
            raise ArtifactNotFound(f"artifact {ref} not found in store {self.uri}") from None
        return Manifest(**raw)

    def names(self) -> list[str]:
        sel = pafs.FileSelector(self.root, allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith("_"))

    def versions(self, name: str) -> list[Manifest]:
        """Published versions of ``name``, oldest first."""
        sel = pafs.FileSelector(self._path(name), allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(sel):
            if info.type == pafs.FileType.Directory:
                ref = ArtifactRef(name, info.base_name)
                if self.exists(ref):
                    out.append(self.manifest(ref))
        return sorted(out, key=lambda m: m.created_at)

    def latest(self, name: str) -> ArtifactRef:
        try:
            with self.fs.open_input_stream(self._path(name, "LATEST")) as f:
                ref = ArtifactRef(name, f.read().decode().strip())
            if self.exists(ref):
                return ref
        except FileNotFoundError:
            pass
        versions = self.versions(name)
        if not versions:
            raise ArtifactNotFound(f"no published version of artifact {name!r} in store {self.uri}")
        return versions[-1].ref

    def resolve(self, text: str | ArtifactRef) -> ArtifactRef:
        """``name``, ``name@latest`` or ``name@<version or unique prefix>`` to a ref."""
        if isinstance(text, ArtifactRef):
            if not self.exists(text):
                raise ArtifactNotFound(f"artifact {text} not found in store {self.uri}")
            return text
        name, _, version = str(text).partition("@")
        if not version or version == "latest":
            return self.latest(name)
        ref = ArtifactRef(name, version)
        if self.exists(ref):
            return ref
        matches = [m.ref for m in self.versions(name) if m.version.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ArtifactNotFound(f"artifact {text} not found in store {self.uri}")
        raise MmirisError(f"artifact {text} is ambiguous: {', '.join(map(str, matches))}")

    # ---------------------------------------------------------------- read
    def read_table(self, ref: ArtifactRef | str, table: str | None = None,
                   columns: list[str] | None = None) -> pa.Table:
        """Read one table of an artifact and validate it against its contract."""
        m = self.manifest(ref)
        table = table or _only_table(m)
        if table not in m.tables:
            raise MmirisError(f"artifact {m.ref} has no table {table!r}; it has {sorted(m.tables)}")
        path = self._path(m.name, m.version, m.tables[table]["file"])
        t = pq.read_table(path, filesystem=self.fs)
        contract = load_contract(m.kind)
        validate(t, contract, table, where=f"artifact {m.ref} ({path})")
        return t.select(columns) if columns else t

    def read_file(self, ref: ArtifactRef | str, name: str) -> bytes:
        m = self.manifest(ref)
        if name not in m.files:
            raise MmirisError(f"artifact {m.ref} has no file {name!r}; it has {sorted(m.files)}")
        with self.fs.open_input_stream(self._path(m.name, m.version, m.files[name]["path"])) as f:
            return f.read()

    # ---------------------------------------------------------------- write
    def get_or_create(self, name: str, kind: str, parents: Iterable[ArtifactRef], params: Mapping,
                      build: Callable[[], Output], code_version: str = "") -> ArtifactRef:
        """Return the existing version for these inputs, or build and publish it."""
        parents = list(parents)
        contract = load_contract(kind)
        cv = f"mmiris-{__version__}" + (f"/{code_version}" if code_version else "")
        ref = ArtifactRef(name, version_id(name, kind, contract.version, parents, params, cv))
        if self.exists(ref):
            log.info("found existing %s (same inputs and parameters); not recomputing", ref)
            return ref
        out = build()
        return self.publish(name, kind, out, parents=parents, params=params, code_version=code_version)

    def publish(self, name: str, kind: str, output: Output, parents: Iterable[ArtifactRef] = (),
                params: Mapping | None = None, code_version: str = "") -> ArtifactRef:
        """Validate and publish atomically. An existing version with the same id is kept."""
        params = dict(params or {})
        parents = [str(p) for p in parents]
        contract = load_contract(kind)
        cv = f"mmiris-{__version__}" + (f"/{code_version}" if code_version else "")
        ref = ArtifactRef(name, version_id(name, kind, contract.version, parents, params, cv))
        if self.exists(ref):
            log.info("artifact %s already published; keeping it", ref)
            return ref
        missing = set(contract.tables) - set(output.tables)
        unknown = set(output.tables) - set(contract.tables)
        if missing or unknown:
            raise MmirisError(
                f"publishing {name} ({kind}): tables {sorted(output.tables)} do not match the "
                f"contract's {sorted(contract.tables)}"
            )
        tables = {t: conform(tab, contract, t, where=f"publishing {name} ({kind})")
                  for t, tab in output.tables.items()}

        final = self.version_dir(ref)
        work = (self._path("_staging", f"{name}-{ref.version}-{uuid.uuid4().hex[:8]}")
                if self.is_local else final)
        self.fs.create_dir(work, recursive=True)
        try:
            table_meta = {}
            for tname, tab in tables.items():
                pq.write_table(tab, posixpath.join(work, f"{tname}.parquet"), filesystem=self.fs,
                               compression="zstd")
                table_meta[tname] = {"file": f"{tname}.parquet", "rows": tab.num_rows,
                                     "columns": tab.column_names}
            file_meta = {}
            if output.files:
                self.fs.create_dir(posixpath.join(work, "files"), recursive=True)
            for fname, data in output.files.items():
                rel = f"files/{fname}"
                with self.fs.open_output_stream(posixpath.join(work, rel)) as f:
                    f.write(data)
                file_meta[fname] = {"path": rel, "bytes": len(data),
                                    "sha256": hashlib.sha256(data).hexdigest()}
            manifest = Manifest(
                name=name, version=ref.version, kind=kind, schema_version=contract.version,
                parents=parents, params=params, code_version=cv, tables=table_meta,
                files=file_meta, stats=output.stats, info=output.info,
                created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            )
            # The manifest is written last: its presence marks the version complete.
            with self.fs.open_output_stream(posixpath.join(work, MANIFEST)) as f:
                f.write(manifest.to_json().encode())
            if self.is_local:
                self.fs.create_dir(self._path(name), recursive=True)
                try:
                    os.rename(work, final)
                except OSError:
                    if not self.exists(ref):
                        raise
                    shutil.rmtree(work, ignore_errors=True)  # a concurrent publish won
        except BaseException:
            if self.is_local:
                shutil.rmtree(work, ignore_errors=True)
            raise
        self._write_latest(ref)
        log.info("published %s (%s)", ref,
                 ", ".join(f"{t}: {m['rows']} rows" for t, m in table_meta.items()))
        return ref

    def _write_latest(self, ref: ArtifactRef) -> None:
        path = self._path(ref.name, "LATEST")
        if self.is_local:
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            Path(tmp).write_text(ref.version + "\n")
            os.replace(tmp, path)
        else:
            with self.fs.open_output_stream(path) as f:
                f.write((ref.version + "\n").encode())

    # ---------------------------------------------------------------- lineage & upkeep
    def lineage(self, ref: ArtifactRef | str) -> dict:
        """The parent tree of an artifact: {"ref", "kind", "parents": [...]}."""
        m = self.manifest(ref)
        return {"ref": str(m.ref), "kind": m.kind, "created_at": m.created_at,
                "parents": [self.lineage(ArtifactRef.parse(p)) for p in m.parents]}

    def gc_staging(self) -> int:
        """Remove leftovers of crashed local publishes. Returns how many were removed."""
        if not self.is_local:
            return 0
        staging = Path(self._path("_staging"))
        n = 0
        for p in staging.glob("*") if staging.exists() else []:
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        return n


def _only_table(m: Manifest) -> str:
    if len(m.tables) != 1:
        raise MmirisError(f"artifact {m.ref} has tables {sorted(m.tables)}: name one")
    return next(iter(m.tables))


def table_to_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
