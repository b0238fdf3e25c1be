"""The versioned Parquet artifact store.

Layout under the store root (a local path or any pyarrow filesystem URI, e.g. ``s3://``)::

    <root>/<name>/<version>/manifest.json      written last: its presence is the commit
    <root>/<name>/<version>/<table>.parquet    a table that fits one part file
    <root>/<name>/<version>/<table>/part-NNNNN.parquet   a larger one, or one written by workers
    <root>/<name>/<version>/files/<file>       opaque files (model checkpoints, PNGs)
    <root>/<name>/LATEST                       version id of the newest publish
    <root>/_staging/...                        in-flight local publishes (never read)

A version id is the content hash of (name, kind, schema version, parent versions,
parameters, code version), computed by :meth:`ArtifactStore.ref_for` alone: the same inputs,
parameters and code give the same id, so a stage can look its output up before computing
it. The code version is the package version plus a hash of the source files that decide the
stage's output (:mod:`mmiris.artifacts.code_version`). Locally a version is built in ``_staging`` and
renamed into place in one step; on object stores the manifest is the last object written,
and readers only see versions that have one.

Names and version ids follow one grammar, checked here and nowhere else (:func:`check_name`):
1 to 128 characters from letters, digits, ``-``, ``_`` and ``.``, not starting with ``_`` or
``.`` (no ``/``, ``@``, whitespace or control characters). Every path the store builds is
normalised and checked to stay under the root; a local publish also resolves symlinks.

Parquet is written for query engines (:func:`write_parquet`): rows in the contract's
``sort_by`` order (recorded as the file's sorting columns), row groups of about
``ROW_GROUP_BYTES``, part files of about ``PART_BYTES``, zstd, statistics and page indexes, and
epoch seconds stored as timestamps where the contract says so. Readers decode only the
columns they ask for, and :meth:`ArtifactStore.read_table` with ``ids`` skips the parts whose
id range (recorded in the manifest) holds none of them. Several processes can write the parts
of one version (:meth:`ArtifactStore.stage`, :meth:`ArtifactStore.write_part`): only the
:meth:`ArtifactStore.commit` that writes the manifest makes it visible.

Every table and file is checked against the sha256 its manifest records before it is used
(:class:`ChecksumError` names the file otherwise). ``ArtifactStore(verify=False)``, the
environment variable ``MMIRIS_VERIFY=0`` or the CLI's ``--no-verify`` skip the check.

Stages that publish several artifacts together (ingest: interactions + items [+ split]) use
:meth:`ArtifactStore.publish_group`: every member's manifest lists the group, and a version
whose group is not all present is invisible to listings and ``latest`` (a kill between two
renames leaves nothing a reader would pick up; rerunning the stage completes the group).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mmiris import __version__
from mmiris.artifacts.schema import TableContract, conform, load_contract, validate
from mmiris.errors import ArtifactNotFound, MmirisError

log = logging.getLogger("mmiris.store")

DEFAULT_STORE = "./mmiris-store"
MANIFEST = "manifest.json"
NAME_MAX = 128
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{NAME_MAX - 1}}}")
_RESERVED_VERSIONS = {"LATEST", "latest"}
_STALE_GROUP_S = 600  # gc removes incomplete groups older than this (a live publish is faster)
ROW_GROUP_BYTES = 64 << 20  # in-memory (Arrow) bytes per row group: query engines read 64-128 MB units
PART_BYTES = 128 << 20  # a table larger than this is written as several part files


class ArtifactNameError(MmirisError, ValueError):
    """A name or version id outside the grammar, or a path that would leave the store."""


class ChecksumError(MmirisError):
    """A table or file whose bytes differ from the sha256 recorded in its manifest."""


def check_name(name: str, what: str = "artifact name") -> str:
    """``name`` if it follows the grammar (module docstring), else ArtifactNameError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name) if len(str(name)) <= 80 else repr(str(name)[:80]) + "…"
        raise ArtifactNameError(
            f"{what} {shown}: expected 1-{NAME_MAX} letters, digits, '-', '_' or '.', not starting "
            f"with '_' or '.' (no '/', '@', spaces or control characters)"
        )
    return name


def check_version(version: str) -> str:
    check_name(version, "version id")
    if version in _RESERVED_VERSIONS:
        raise ArtifactNameError(f"version id {version!r} is reserved")
    return version


def verify_enabled() -> bool:
    """The default of ``ArtifactStore(verify=None)``: on unless ``MMIRIS_VERIFY`` is 0/false/no."""
    return os.environ.get("MMIRIS_VERIFY", "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class ArtifactRef:
    """A published artifact version: ``name@version``."""

    name: str
    version: str

    def __post_init__(self):
        check_name(self.name)
        check_version(self.version)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> ArtifactRef:
        name, sep, version = str(text).partition("@")
        if not sep or not name or not version:
            raise ArtifactNameError(f"artifact reference {text!r}: expected NAME@VERSION")
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
    tables: dict[str, dict]  # table -> {"file", "rows", "columns", "bytes", "sha256"}
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


def version_id(name: str, kind: str, schema_version: int, parents: Iterable, params: Mapping, code_version: str) -> str:
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


def full_code_version(code_version: str = "") -> str:
    """What a manifest records and the version id hashes: the package version, then the
    stage's own code version (``mmiris-0.1.0/src-1a2b3c4d5e6f``)."""
    return f"mmiris-{__version__}" + (f"/{code_version}" if code_version else "")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Pending:
    """One member of :meth:`ArtifactStore.publish_group`."""

    name: str
    kind: str
    output: Output
    parents: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    code_version: str = ""


@dataclass(frozen=True)
class Staged:
    """A version being written by several processes (:meth:`ArtifactStore.stage`); picklable."""

    ref: ArtifactRef
    kind: str
    work: str  # the folder its parts are written to
    parents: list[str]
    params: dict
    code_version: str


class ArtifactStore:
    """Publish and read immutable artifact versions. See the module docstring for the layout."""

    def __init__(
        self,
        uri: str | os.PathLike | None = None,
        filesystem: pafs.FileSystem | None = None,
        verify: bool | None = None,
    ):
        uri = str(uri or os.environ.get("MMIRIS_STORE") or DEFAULT_STORE)
        self.uri = uri
        self.verify = verify_enabled() if verify is None else bool(verify)
        if filesystem is not None:
            self.fs, self.root = filesystem, uri.rstrip("/")
        elif "://" in uri and not uri.startswith("file://"):
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(uri)
            except (pa.ArrowException, ValueError) as exc:
                raise MmirisError(f"store {uri!r}: not a usable filesystem URI ({exc})") from None
            self.root = self.root.rstrip("/")
        else:
            path = Path(uri.removeprefix("file://")).expanduser().resolve()
            if path.exists() and not path.is_dir():
                raise MmirisError(f"store {uri}: {path} is a file, expected a folder (or a path to create)")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise MmirisError(f"store {uri}: cannot create folder {path} ({exc.strerror or exc})") from None
            self.fs, self.root = pafs.LocalFileSystem(), path.as_posix()
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.uri!r})"

    # ---------------------------------------------------------------- paths
    def _path(self, *parts: str) -> str:
        """A path under the root; one that would leave it (``..``, absolute parts) is an error."""
        path = posixpath.normpath(posixpath.join(self.root, *parts))
        if path != posixpath.normpath(self.root) and not path.startswith(self.root.rstrip("/") + "/"):
            raise ArtifactNameError(f"path {'/'.join(parts)!r} leaves the store {self.uri}")
        return path

    def _check_inside(self, path: str) -> None:
        """Local publishes: ``path`` with symlinks resolved must still be under the root."""
        if self.is_local:
            real, root = os.path.realpath(path), os.path.realpath(self.root)
            if real != root and not real.startswith(root.rstrip("/") + "/"):
                raise ArtifactNameError(f"{path} resolves to {real}, outside the store {root}; refusing to write there")

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
            m = Manifest(**raw)
        except FileNotFoundError:
            raise ArtifactNotFound(f"artifact {ref} not found in store {self.uri}") from None
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise MmirisError(
                f"manifest {path} is corrupt ({type(exc).__name__}: {str(exc)[:120]}); "
                f"expected the JSON a publish writes — delete the version folder "
                f"and publish it again"
            ) from None
        if (m.name, m.version) != (ref.name, ref.version):
            raise MmirisError(
                f"manifest {path} describes {m.name}@{m.version}, not {ref}: the store was edited by hand"
            )
        return m

    def names(self) -> list[str]:
        sel = pafs.FileSelector(self.root, allow_not_found=True)
        return sorted(
            i.base_name
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.Directory and _NAME.fullmatch(i.base_name)
        )

    def versions(self, name: str, *, incomplete: bool = False) -> list[Manifest]:
        """Published versions of ``name``, oldest first (``incomplete``: with versions whose
        group is not all present, see :meth:`publish_group`)."""
        sel = pafs.FileSelector(self._path(check_name(name)), allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(sel):
            if (
                info.type == pafs.FileType.Directory
                and _NAME.fullmatch(info.base_name)
                and info.base_name not in _RESERVED_VERSIONS
            ):
                ref = ArtifactRef(name, info.base_name)
                if self.exists(ref):
                    m = self.manifest(ref)
                    if incomplete or self._group_complete(m):
                        out.append(m)
        return sorted(out, key=lambda m: m.created_at)

    def _group_complete(self, m: Manifest) -> bool:
        return all(self.exists(ArtifactRef.parse(r)) for r in m.info.get("group", ()) if r != str(m.ref))

    def latest(self, name: str) -> ArtifactRef:
        check_name(name)
        try:
            with self.fs.open_input_stream(self._path(name, "LATEST")) as f:
                ref = ArtifactRef(name, f.read().decode().strip())
            if self.exists(ref):
                return ref
        except (FileNotFoundError, ArtifactNameError, UnicodeDecodeError):
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
        check_name(name, f"artifact {str(text)[:80]!r}: name")
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
    def read_table(
        self,
        ref: ArtifactRef | str,
        table: str | None = None,
        columns: list[str] | None = None,
        *,
        ids: Iterable[int] | None = None,
    ) -> pa.Table:
        """Read one table of an artifact and validate it against its contract.

        ``columns``: decode only these (the other column chunks are skipped; with
        ``verify=False`` they are not even fetched). ``ids``: only the rows whose first
        ``sort_by`` column (else ``item_id``) is one of them; parts whose recorded id range
        holds none are not read, nor row groups whose statistics exclude them."""
        m = self.manifest(ref)
        table = table or _only_table(m)
        if table not in m.tables:
            raise MmirisError(f"artifact {m.ref} has no table {table!r}; it has {sorted(m.tables)}")
        contract = load_contract(m.kind)
        tc = contract.table(table)
        wanted = None if ids is None else pa.array(sorted(set(ids)), pa.int64())
        key = tc.sort_by[0] if tc.sort_by else ("item_id" if "item_id" in tc.column_names() else "")
        if wanted is not None and not key:
            raise MmirisError(f"artifact {m.ref}: table {table!r} has no item_id column to select ids by")
        wanted_np = None if wanted is None else wanted.to_numpy()
        pieces = []
        for path, part in self._parts(m, table):
            if wanted_np is not None and "min" in part:
                if not ((wanted_np >= part["min"]) & (wanted_np <= part["max"])).any():
                    continue
            read_cols = columns if wanted is None or columns is None or key in columns else [*columns, key]
            row_filter = None if wanted is None else [(key, "in", wanted)]  # skips row groups by statistics
            t = self._read_part(m, path, part, read_cols, tc, row_filter)
            if wanted is not None:
                t = t.filter(pc.is_in(t.column(key), value_set=wanted))
                if columns is not None and key not in columns:
                    t = t.select(columns)
            pieces.append(t)
        if not pieces:  # every part pruned: an empty table with the part schema
            path, part = self._parts(m, table)[0]
            pieces.append(self._read_part(m, path, part, columns, tc).slice(0, 0))
        t = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
        if len(pieces) > 1 and tc.sort_by and not meta_sorted(m.tables[table]) and key in t.column_names:
            t = t.sort_by([(c, "ascending") for c in tc.sort_by if c in t.column_names])
        validate(t, contract, table, where=f"artifact {m.ref} ({self.version_dir(m.ref)})", columns=columns)
        return t

    def _parts(self, m: Manifest, table: str) -> list[tuple[str, dict]]:
        """(path, meta) of every file of a table: one ``<table>.parquet``, or its part files."""
        meta = m.tables[table]
        if "parts" in meta:
            return [(self._path(m.name, m.version, meta["file"], p["file"]), p) for p in meta["parts"]]
        return [(self._path(m.name, m.version, meta["file"]), meta)]

    def iter_tables(
        self, ref: ArtifactRef | str, table: str | None = None, columns: list[str] | None = None
    ) -> Iterator[pa.Table]:
        """A table part by part (one part file in memory at a time), validated like read_table."""
        m = self.manifest(ref)
        table = table or _only_table(m)
        if table not in m.tables:
            raise MmirisError(f"artifact {m.ref} has no table {table!r}; it has {sorted(m.tables)}")
        contract = load_contract(m.kind)
        for path, part in self._parts(m, table):
            t = self._read_part(m, path, part, columns, contract.table(table))
            validate(t, contract, table, where=f"artifact {m.ref} ({path})", columns=columns)
            yield t

    def _read_part(
        self,
        m: Manifest,
        path: str,
        meta: dict,
        columns: list[str] | None,
        tc: TableContract,
        filters: list | None = None,
    ) -> pa.Table:
        try:
            if self.verify and "sha256" in meta:
                data = self._read_verified(m, path, meta)
                t = pq.read_table(pa.BufferReader(data), columns=columns, filters=filters)
            else:
                t = pq.read_table(path, filesystem=self.fs, columns=columns, filters=filters)
        except FileNotFoundError:
            raise MmirisError(f"artifact {m.ref}: table file {path} is missing") from None
        except pa.ArrowException as exc:
            raise MmirisError(f"artifact {m.ref}: {path} is not a readable Parquet file ({str(exc)[:160]})") from None
        return from_storage(t, tc)

    def read_file(self, ref: ArtifactRef | str, name: str) -> bytes:
        m = self.manifest(ref)
        if name not in m.files:
            raise MmirisError(f"artifact {m.ref} has no file {name!r}; it has {sorted(m.files)}")
        meta = m.files[name]
        path = self._path(m.name, m.version, meta["path"])
        try:
            if self.verify:
                return self._read_verified(m, path, meta)
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            raise MmirisError(f"artifact {m.ref}: file {path} is missing") from None

    def _read_verified(self, m: Manifest, path: str, meta: dict) -> bytes:
        """The bytes of ``path`` after checking them against the manifest's size and sha256."""
        with self.fs.open_input_stream(path) as f:
            data = f.read()
        want = meta.get("sha256")
        if "bytes" in meta and len(data) != meta["bytes"]:
            raise ChecksumError(
                f"artifact {m.ref}: {path} has {len(data)} bytes, the manifest records "
                f"{meta['bytes']} (truncated or changed after publishing); publish it "
                f"again, or pass --no-verify (MMIRIS_VERIFY=0) to read it anyway"
            )
        if want and hashlib.sha256(data).hexdigest() != want:
            raise ChecksumError(
                f"artifact {m.ref}: {path} fails its checksum (sha256 "
                f"{hashlib.sha256(data).hexdigest()[:16]}…, the manifest records "
                f"{want[:16]}…): changed or corrupted after publishing; publish it "
                f"again, or pass --no-verify (MMIRIS_VERIFY=0) to read it anyway"
            )
        return data

    # ---------------------------------------------------------------- write
    def ref_for(
        self, name: str, kind: str, parents: Iterable, params: Mapping | None, code_version: str = ""
    ) -> ArtifactRef:
        """The identity of an artifact: the ref a publish of these inputs gets, whether or not
        it exists yet. The one place a version id is computed (see :func:`version_id`).

        ``code_version``: the stage's code, normally
        ``mmiris.artifacts.code_version.source_version(<modules that decide the output>)``."""
        contract = load_contract(kind)
        return ArtifactRef(
            check_name(name),
            version_id(
                name,
                kind,
                contract.version,
                [str(p) for p in parents],
                dict(params or {}),
                full_code_version(code_version),
            ),
        )

    def get_or_create(
        self,
        name: str,
        kind: str,
        parents: Iterable[ArtifactRef],
        params: Mapping,
        build: Callable[[], Output],
        code_version: str = "",
    ) -> ArtifactRef:
        """Return the existing version for these inputs, or build and publish it."""
        parents = list(parents)
        ref = self.ref_for(name, kind, parents, params, code_version)  # checks the name first
        if self.exists(ref):
            log.info("found existing %s (same inputs and parameters); not recomputing", ref)
            return ref
        out = build()
        return self.publish(name, kind, out, parents=parents, params=params, code_version=code_version)

    def publish(
        self,
        name: str,
        kind: str,
        output: Output,
        parents: Iterable[ArtifactRef] = (),
        params: Mapping | None = None,
        code_version: str = "",
    ) -> ArtifactRef:
        """Validate and publish atomically. An existing version with the same id is kept."""
        return self.publish_group([Pending(name, kind, output, list(parents), dict(params or {}), code_version)])[0]

    def publish_group(self, members: list[Pending]) -> list[ArtifactRef]:
        """Publish several artifacts all-or-nothing from a reader's point of view.

        Every member is validated and written aside first; then the versions are moved into
        place and LATEST pointers updated last. With more than one member, each manifest's
        ``info.group`` lists all of them and a version whose group is incomplete stays
        invisible (:meth:`versions`, :meth:`latest`). A failure removes what it had moved in.
        Members that already exist are kept as they are; when some member was published, every
        member's LATEST is written (a rerun that completes a group a killed publish left half
        in place makes the whole group the latest, not only the members it wrote).
        """
        plans = []
        for mb in members:
            contract = load_contract(mb.kind)
            ref = self.ref_for(mb.name, mb.kind, mb.parents, mb.params, mb.code_version)
            plans.append((mb, contract, ref))
        group = [str(ref) for _, _, ref in plans] if len(plans) > 1 else []
        todo = [(mb, c, ref) for mb, c, ref in plans if not self.exists(ref)]
        for _, _, ref in plans:
            if self.exists(ref):
                log.info("artifact %s already published; keeping it", ref)
        conformed = []
        for mb, contract, _ in todo:  # validate everything before writing anything
            missing = set(contract.tables) - set(mb.output.tables)
            unknown = set(mb.output.tables) - set(contract.tables)
            if missing or unknown:
                raise MmirisError(
                    f"publishing {mb.name} ({mb.kind}): tables {sorted(mb.output.tables)} do not "
                    f"match the contract's {sorted(contract.tables)}"
                )
            conformed.append(
                {
                    t: conform(tab, contract, t, where=f"publishing {mb.name} ({mb.kind})")
                    for t, tab in mb.output.tables.items()
                }
            )
        staged: list[tuple[ArtifactRef, str, str, dict]] = []  # (ref, work, final, table_meta)
        started: list[str] = []  # work folders, removed on failure
        moved: list[str] = []
        try:
            for (mb, contract, ref), tables in zip(todo, conformed):
                final = self.version_dir(ref)
                work = (
                    self._path("_staging", f"{ref.name}-{ref.version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                    if self.is_local
                    else final
                )
                self._check_inside(posixpath.dirname(work))
                self._check_inside(self._path(ref.name))
                started.append(work)
                table_meta = self._write_version(work, mb, contract, ref, tables, group)
                staged.append((ref, work, final, table_meta))
            if self.is_local:
                for ref, work, final, _ in staged:
                    self.fs.create_dir(self._path(ref.name), recursive=True)
                    self._check_inside(final)
                    try:
                        os.rename(work, final)
                        moved.append(final)
                    except OSError:
                        if not self.exists(ref):
                            raise
                        shutil.rmtree(work, ignore_errors=True)  # a concurrent publish won
        except BaseException:
            for work in started:
                if self.is_local:
                    shutil.rmtree(work, ignore_errors=True)
                else:
                    self._remove_remote(work)
            for final in moved:  # ours alone: the rename succeeded, so nobody had published it
                shutil.rmtree(final, ignore_errors=True)
            raise
        for ref, _, _, table_meta in staged:
            log.info("published %s (%s)", ref, ", ".join(f"{t}: {m['rows']} rows" for t, m in table_meta.items()))
        if staged:  # the whole group becomes the latest, members that already existed too
            for _, _, ref in plans:
                self._write_latest(ref)
        return [ref for _, _, ref in plans]

    def _write_version(
        self, work: str, mb: Pending, contract, ref: ArtifactRef, tables: dict[str, pa.Table], group: list[str]
    ) -> dict:
        """Tables, files and (last) the manifest of one version into ``work``."""
        self.fs.create_dir(work, recursive=True)
        table_meta = {
            tname: self._write_table(work, tname, tab, contract.table(tname)) for tname, tab in tables.items()
        }
        self._write_manifest(work, mb, contract, ref, table_meta, group)
        return table_meta

    def _write_table(self, work: str, tname: str, tab: pa.Table, tc: TableContract) -> dict:
        """One table as ``<table>.parquet``, or as part files when it is larger than PART_BYTES."""
        tab = sort_for_contract(tab, tc)
        n_parts = max(1, -(-tab.nbytes // PART_BYTES)) if tab.num_rows else 1
        if n_parts == 1:
            meta = self._write_parquet(posixpath.join(work, f"{tname}.parquet"), tab, tc, presorted=True)
            meta.pop("min", None), meta.pop("max", None), meta.pop("schema", None)
            return {"file": f"{tname}.parquet", **meta, "columns": tab.column_names}
        step = -(-tab.num_rows // n_parts)
        parts = [
            self._write_part_file(work, tname, k, tab.slice(k * step, step), tc, presorted=True) for k in range(n_parts)
        ]
        return _parts_meta(tname, parts, tc)

    def _write_parquet(self, path: str, tab: pa.Table, tc: TableContract, presorted: bool = False) -> dict:
        data, meta = write_parquet(tab, tc, presorted=presorted)
        with self.fs.open_output_stream(path) as f:
            f.write(data)
        return meta

    def _write_part_file(
        self, work: str, tname: str, index: int, tab: pa.Table, tc: TableContract, presorted: bool = False
    ) -> dict:
        self.fs.create_dir(posixpath.join(work, tname), recursive=True)
        name = f"part-{index:05d}.parquet"
        return {"file": name, **self._write_parquet(posixpath.join(work, tname, name), tab, tc, presorted)}

    def _write_manifest(
        self, work: str, mb: Pending, contract, ref: ArtifactRef, table_meta: dict, group: list[str]
    ) -> None:
        """Files and (last) the manifest of one version into ``work``."""
        file_meta = {}
        if mb.output.files:
            self.fs.create_dir(posixpath.join(work, "files"), recursive=True)
        for fname, data in mb.output.files.items():
            rel = f"files/{check_name(fname, f'file name of {mb.name}')}"
            with self.fs.open_output_stream(posixpath.join(work, rel)) as f:
                f.write(data)
            file_meta[fname] = {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        info = dict(mb.output.info)
        if group:
            info["group"] = group
        manifest = Manifest(
            name=ref.name,
            version=ref.version,
            kind=mb.kind,
            schema_version=contract.version,
            parents=[str(p) for p in mb.parents],
            params=dict(mb.params),
            code_version=full_code_version(mb.code_version),
            tables=table_meta,
            files=file_meta,
            stats=mb.output.stats,
            info=info,
            created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        )
        # The manifest is written last: its presence marks the version complete.
        with self.fs.open_output_stream(posixpath.join(work, MANIFEST)) as f:
            f.write(manifest.to_json().encode())

    # ---------------------------------------------------------------- publish from several processes
    def stage(
        self, name: str, kind: str, parents: Iterable[ArtifactRef] = (), params: Mapping | None = None, code_version=""
    ) -> Staged:
        """Open a version whose tables several processes write as parts (:meth:`write_part`);
        :meth:`commit` publishes it, :meth:`abort` drops it. Nothing is visible before commit:
        locally the parts go to ``_staging`` (renamed into place by commit), on object stores
        to the version folder, which has no manifest until commit."""
        parents = list(parents)
        ref = self.ref_for(name, kind, parents, params, code_version)
        final = self.version_dir(ref)
        work = (
            self._path("_staging", f"{ref.name}-{ref.version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            if self.is_local
            else final
        )
        self._check_inside(posixpath.dirname(work))
        self.fs.create_dir(work, recursive=True)
        return Staged(ref, kind, work, [str(p) for p in parents], dict(params or {}), code_version)

    def write_part(self, staged: Staged, table: str, index: int, tab: pa.Table) -> dict:
        """Write part ``index`` of ``table`` of a staged version (any process that has this store:
        a Dask worker). Returns the part's meta for :meth:`commit`. The part is conformed to
        the contract and sorted by its ``sort_by``."""
        contract = load_contract(staged.kind)
        conformed = conform(tab, contract, table, where=f"part {index} of {staged.ref} table {table!r}")
        return self._write_part_file(staged.work, table, index, conformed, contract.table(table))

    def commit(self, staged: Staged, parts: Mapping[str, list[dict]], output: Output | None = None) -> ArtifactRef:
        """Publish a staged version: the manifest lists every part (``parts``: table -> metas
        from :meth:`write_part`); tables in ``output`` are written whole, as by publish."""
        output = output or Output(tables={})
        contract = load_contract(staged.kind)
        mb = Pending(staged.ref.name, staged.kind, output, list(staged.parents), staged.params, staged.code_version)
        if set(contract.tables) != set(parts) | set(output.tables):
            raise MmirisError(
                f"committing {staged.ref} ({staged.kind}): tables {sorted(set(parts) | set(output.tables))} "
                f"do not match the contract's {sorted(contract.tables)}"
            )
        if self.exists(staged.ref):
            log.info("artifact %s already published; keeping it", staged.ref)
            self.abort(staged)
            return staged.ref
        try:
            table_meta = {t: _parts_meta(t, metas, contract.table(t), str(staged.ref)) for t, metas in parts.items()}
            for t, tab in output.tables.items():
                tab = conform(tab, contract, t, where=f"publishing {staged.ref.name} ({staged.kind})")
                table_meta[t] = self._write_table(staged.work, t, tab, contract.table(t))
            self._write_manifest(staged.work, mb, contract, staged.ref, table_meta, [])
            if self.is_local:
                final = self.version_dir(staged.ref)
                self.fs.create_dir(self._path(staged.ref.name), recursive=True)
                self._check_inside(final)
                try:
                    os.rename(staged.work, final)
                except OSError:
                    if not self.exists(staged.ref):
                        raise
                    shutil.rmtree(staged.work, ignore_errors=True)  # a concurrent publish won
        except BaseException:
            self.abort(staged)
            raise
        self._write_latest(staged.ref)
        log.info("published %s (%s)", staged.ref, ", ".join(f"{t}: {m['rows']} rows" for t, m in table_meta.items()))
        return staged.ref

    def abort(self, staged: Staged) -> None:
        """Drop what a staged version wrote (never a committed version)."""
        if self.is_local:
            shutil.rmtree(staged.work, ignore_errors=True)
        elif not self.exists(staged.ref):
            self._remove_remote(staged.work)

    def _remove_remote(self, path: str) -> None:
        try:
            self.fs.delete_dir(path)
        except (OSError, pa.ArrowException):
            log.warning(
                "could not remove %s after a failed publish; readers ignore it (no manifest or an incomplete group)",
                path,
            )

    def _write_latest(self, ref: ArtifactRef) -> None:
        path = self._path(ref.name, "LATEST")
        if self.is_local:
            tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                Path(tmp).write_text(ref.version + "\n")
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        else:
            with self.fs.open_output_stream(path) as f:
                f.write((ref.version + "\n").encode())

    # ---------------------------------------------------------------- lineage & upkeep
    def lineage(self, ref: ArtifactRef | str) -> dict:
        """The parent tree of an artifact: {"ref", "kind", "parents": [...]}."""
        m = self.manifest(ref)
        return {
            "ref": str(m.ref),
            "kind": m.kind,
            "created_at": m.created_at,
            "parents": [self.lineage(ArtifactRef.parse(p)) for p in m.parents],
        }

    def gc_staging(self) -> int:
        """Remove leftovers of crashed publishes: staging folders and LATEST temp files of
        processes no longer running, and versions of a group that never completed (older than
        10 minutes). Returns how many were removed."""
        n = 0
        if self.is_local:
            staging = Path(self._path("_staging"))
            for p in staging.glob("*") if staging.exists() else []:
                if not _owner_alive(p.name.rsplit("-", 2)[-2] if p.name.count("-") >= 2 else ""):
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
            for p in Path(self.root).glob("*/LATEST.*.tmp"):
                if not _owner_alive(p.name.split(".")[1] if p.name.count(".") >= 3 else ""):
                    p.unlink(missing_ok=True)
                    n += 1
        now = time.time()
        for name in self.names():
            for m in self.versions(name, incomplete=True):
                if self._group_complete(m):
                    continue
                age = now - datetime.fromisoformat(m.created_at).timestamp()
                if age > _STALE_GROUP_S:
                    log.info("removing %s: its group %s never completed", m.ref, m.info.get("group"))
                    if self.is_local:
                        shutil.rmtree(self.version_dir(m.ref), ignore_errors=True)
                    else:
                        self._remove_remote(self.version_dir(m.ref))
                    n += 1
        return n


def _owner_alive(pid_text: str) -> bool:
    """Whether the process that wrote a leftover (pid in its name) still runs on this host."""
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid_text) != 0


def _only_table(m: Manifest) -> str:
    if len(m.tables) != 1:
        raise MmirisError(f"artifact {m.ref} has tables {sorted(m.tables)}: name one")
    return next(iter(m.tables))


# ---------------------------------------------------------------- Parquet for query engines
def sort_for_contract(tab: pa.Table, tc: TableContract) -> pa.Table:
    """Rows in the contract's ``sort_by`` order (stable: equal keys keep their order)."""
    if not tc.sort_by or tab.num_rows < 2 or any(c not in tab.column_names for c in tc.sort_by):
        return tab
    order = pc.sort_indices(tab, sort_keys=[(c, "ascending") for c in tc.sort_by])
    if pc.all(pc.equal(order, pa.array(range(tab.num_rows), order.type))).as_py():
        return tab
    return tab.take(order)


def row_group_rows(tab: pa.Table, target_bytes: int | None = None) -> int:
    """Rows per row group so that one group holds about ``target_bytes`` (default
    ``ROW_GROUP_BYTES``) of Arrow data."""
    if not tab.num_rows:
        return 1
    return max(1, int((target_bytes or ROW_GROUP_BYTES) // max(1.0, tab.nbytes / tab.num_rows)))


def to_storage(tab: pa.Table, tc: TableContract) -> pa.Table:
    """Columns whose contract names a ``storage`` type, cast to it (epoch seconds -> timestamp)."""
    for col in tc.columns:
        if col.storage == "timestamp[s]" and col.name in tab.column_names:
            i = tab.column_names.index(col.name)
            arr = tab.column(i).cast(pa.timestamp("s", tz="UTC"))
            tab = tab.set_column(i, pa.field(col.name, arr.type, nullable=col.nullable), arr)
    return tab


def from_storage(tab: pa.Table, tc: TableContract) -> pa.Table:
    """The inverse of :func:`to_storage` (Parquet keeps seconds as milliseconds)."""
    for col in tc.columns:
        if col.storage == "timestamp[s]" and col.name in tab.column_names:
            i = tab.column_names.index(col.name)
            arr = tab.column(i)
            if pa.types.is_timestamp(arr.type):
                arr = arr.cast(pa.timestamp("s", tz="UTC")).cast(pa.int64())
                tab = tab.set_column(i, pa.field(col.name, pa.int64(), nullable=col.nullable), arr)
    return tab


def write_parquet(tab: pa.Table, tc: TableContract, presorted: bool = False) -> tuple[pa.Buffer, dict]:
    """The bytes of one Parquet file of a (conformed) table, and its meta for the manifest:
    rows, bytes, sha256, row groups, an Arrow schema digest, and the first ``sort_by``
    column's min and max (readers skip parts by them)."""
    if not presorted:
        tab = sort_for_contract(tab, tc)
    stored = to_storage(tab, tc)
    sorting = None
    if tc.sort_by:
        sorting = pq.SortingColumn.from_ordering(stored.schema, [(c, "ascending") for c in tc.sort_by])
    sink = pa.BufferOutputStream()
    rows = row_group_rows(stored)
    pq.write_table(
        stored, sink, compression="zstd", row_group_size=rows, write_page_index=True, sorting_columns=sorting
    )
    data = sink.getvalue()
    meta: dict = {
        "rows": tab.num_rows,
        "bytes": data.size,
        "sha256": hashlib.sha256(data).hexdigest(),
        "row_groups": -(-tab.num_rows // rows) if tab.num_rows else 0,
        "schema": hashlib.sha256(str(tab.schema).encode()).hexdigest()[:16],
    }
    if tc.sort_by and tab.num_rows:
        key = tab.column(tc.sort_by[0])
        meta["min"], meta["max"] = key[0].as_py(), key[-1].as_py()
    return data, meta


def meta_sorted(meta: dict) -> bool:
    """Whether a table's rows are in its sort_by order across files (one file always is)."""
    return "parts" not in meta or bool(meta.get("sort_by"))


def _parts_meta(tname: str, parts: list[dict], tc: TableContract, where: str = "") -> dict:
    """A table's manifest entry from its part metas: parts in id order, one Arrow schema."""
    if not parts:
        raise MmirisError(f"{where}: table {tname!r} has no parts")
    if len({p["schema"] for p in parts}) > 1:
        raise MmirisError(f"{where}: the parts of table {tname!r} have different Arrow schemas")
    parts = sorted(parts, key=lambda p: (p.get("min") is None, p.get("min", 0), p["file"]))
    bounds = [(p["min"], p["max"]) for p in parts if "min" in p]
    ordered = len(bounds) == len(parts) and all(a[1] < b[0] for a, b in zip(bounds, bounds[1:]))
    return {
        "file": tname,
        "parts": parts,
        "rows": sum(p["rows"] for p in parts),
        "bytes": sum(p["bytes"] for p in parts),
        "columns": [c.name for c in tc.columns],
        "sort_by": list(tc.sort_by) if ordered else [],
    }


def table_to_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
