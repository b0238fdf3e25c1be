"""Artifact contracts from ``mmiris/schemas/*.json`` (package data; the repository's
``schemas/`` folder): parse, validate and conform Arrow tables.

A contract names an artifact kind and, per table, its columns: name, Arrow type string,
nullability and meaning. Writers conform tables to it before publishing; readers validate
what they read. Type strings are Arrow's own spelling (``int64``, ``string``,
``list<int64>``, ``fixed_size_list<float32>`` with the size left to the data,
``struct<item_id: int64, relevance: float32>``).

Two optional keys tell the store how to write a table for query engines, without changing
what readers get: a table's ``sort_by`` (its rows are written in that order, and Parquet
records the ordering) and a column's ``storage`` (``timestamp[s]``: an int64 of epoch
seconds is written as a UTC timestamp, so DuckDB or Spark see a real time, and read back
as int64). Neither is part of the contract version, so artifact ids do not depend on them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pyarrow as pa

from mmiris.errors import SchemaError

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable
else:  # pragma: no cover - Python 3.10
    from importlib.abc import Traversable

# The contracts ship inside the package (a wheel carries them); in a checkout mmiris/schemas
# links to the top-level schemas/ folder.
SCHEMA_DIR: Traversable = resources.files("mmiris") / "schemas"

_PRIMITIVES = {
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
    "date32": pa.date32(),
}


@dataclass(frozen=True)
class ArrowType:
    """A parsed type string. ``fixed_size`` of None on a fixed_size_list means any size."""

    kind: str  # primitive name, "list", "fixed_size_list" or "struct"
    children: tuple = ()
    fixed_size: int | None = None
    names: tuple = ()

    def matches(self, t: pa.DataType) -> bool:
        if self.kind == "list":
            return pa.types.is_list(t) and self.children[0].matches(t.value_type)
        if self.kind == "fixed_size_list":
            return (
                pa.types.is_fixed_size_list(t)
                and self.children[0].matches(t.value_type)
                and (self.fixed_size is None or t.list_size == self.fixed_size)
            )
        if self.kind == "struct":
            if not pa.types.is_struct(t) or t.num_fields != len(self.names):
                return False
            return all(
                t.field(i).name == n and c.matches(t.field(i).type)
                for i, (n, c) in enumerate(zip(self.names, self.children))
            )
        return t == _PRIMITIVES[self.kind]

    def to_arrow(self, fixed_size: int | None = None) -> pa.DataType:
        if self.kind == "list":
            return pa.list_(self.children[0].to_arrow())
        if self.kind == "fixed_size_list":
            size = self.fixed_size if self.fixed_size is not None else fixed_size
            if size is None:
                raise SchemaError("fixed_size_list needs a size from the data")
            return pa.list_(self.children[0].to_arrow(), size)
        if self.kind == "struct":
            return pa.struct([pa.field(n, c.to_arrow()) for n, c in zip(self.names, self.children)])
        return _PRIMITIVES[self.kind]


def parse_type(text: str) -> ArrowType:
    text = text.strip()
    if text in _PRIMITIVES:
        return ArrowType(text)
    for prefix in ("list<", "fixed_size_list<"):
        if text.startswith(prefix):
            close = text.rindex(">")
            inner = parse_type(text[len(prefix) : close])
            rest = text[close + 1 :].strip()
            if prefix == "list<":
                return ArrowType("list", (inner,))
            size = int(rest.strip("[]")) if rest else None
            return ArrowType("fixed_size_list", (inner,), fixed_size=size)
    if text.startswith("struct<") and text.endswith(">"):
        names, children = [], []
        for part in _split_top(text[len("struct<") : -1]):
            name, _, typ = part.partition(":")
            names.append(name.strip())
            children.append(parse_type(typ))
        return ArrowType("struct", tuple(children), names=tuple(names))
    raise SchemaError(f"unknown Arrow type string {text!r} in a schema file")


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    description: str
    storage: str | None = None  # how Parquet stores it, if not as ``type`` (``timestamp[s]``)

    @property
    def arrow(self) -> ArrowType:
        return parse_type(self.type)


@dataclass(frozen=True)
class TableContract:
    name: str
    columns: tuple[Column, ...]
    sort_by: tuple[str, ...] = ()  # the order rows are written in (and Parquet records)

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class Contract:
    kind: str
    version: int
    description: str
    tables: dict[str, TableContract]

    def table(self, name: str) -> TableContract:
        if name not in self.tables:
            raise SchemaError(
                f"artifact kind {self.kind!r} has no table {name!r}; expected one of {sorted(self.tables)}"
            )
        return self.tables[name]


@cache
def load_contract(kind: str, schema_dir: Traversable = SCHEMA_DIR) -> Contract:
    path = schema_dir / f"{kind}.json"
    if not path.is_file():
        raise SchemaError(f"no contract for artifact kind {kind!r}: expected {path}")
    raw = json.loads(path.read_text())
    tables = {}
    for tname, t in raw["tables"].items():
        cols = tuple(
            Column(c["name"], c["type"], bool(c.get("nullable", False)), c.get("description", ""), c.get("storage"))
            for c in t["columns"]
        )
        for c in cols:
            parse_type(c.type)  # fail early on a bad schema file
            if c.storage not in (None, "timestamp[s]"):
                raise SchemaError(f"{path}: column {c.name!r}: unknown storage {c.storage!r}; expected timestamp[s]")
        sort_by = tuple(t.get("sort_by", ()))
        if unknown := [c for c in sort_by if c not in {col.name for col in cols}]:
            raise SchemaError(f"{path}: table {tname!r}: sort_by names unknown column(s) {unknown}")
        tables[tname] = TableContract(tname, cols, sort_by)
    return Contract(raw["name"], int(raw["version"]), raw.get("description", ""), tables)


def list_contracts(schema_dir: Traversable = SCHEMA_DIR) -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in schema_dir.iterdir() if p.name.endswith(".json"))


def validate(
    table: pa.Table, contract: Contract, table_name: str, where: str, columns: list[str] | None = None
) -> None:
    """Raise SchemaError naming ``where`` (artifact and file), the column and the expectation.
    ``columns``: the table was read with only these columns (in this order)."""
    tc = contract.table(table_name)
    expected = tc.column_names()
    if columns is not None:
        if unknown := [c for c in columns if c not in expected]:
            raise SchemaError(
                f"{where}: table {table_name!r} of kind {contract.kind!r} has no column(s) {unknown}; "
                f"expected some of {expected}"
            )
        expected = list(columns)
    actual = table.column_names
    missing = [c for c in expected if c not in actual]
    extra = [c for c in actual if c not in expected]
    if missing or extra:
        raise SchemaError(
            f"{where}: table {table_name!r} of kind {contract.kind!r} v{contract.version}: "
            + (f"missing column(s) {missing}; " if missing else "")
            + (f"unexpected column(s) {extra}; " if extra else "")
            + f"expected columns {expected}"
        )
    for col in tc.columns:
        if col.name not in expected:
            continue
        arr = table.column(col.name)
        if not col.arrow.matches(arr.type):
            raise SchemaError(f"{where}: column {col.name!r} has type {arr.type}, expected {col.type}")
        if not col.nullable and arr.null_count:
            raise SchemaError(
                f"{where}: column {col.name!r} has {arr.null_count} null value(s), expected none (not nullable)"
            )


def conform(table: pa.Table, contract: Contract, table_name: str, where: str) -> pa.Table:
    """Order and cast columns to the contract, then validate. Used by every writer."""
    tc = contract.table(table_name)
    missing = [c for c in tc.column_names() if c not in table.column_names]
    extra = [c for c in table.column_names if c not in tc.column_names()]
    if missing or extra:
        validate(table, contract, table_name, where)  # raises with the full message
    arrays, fields = [], []
    for col in tc.columns:
        arr = table.column(col.name)
        if not col.arrow.matches(arr.type):
            size = arr.type.list_size if pa.types.is_fixed_size_list(arr.type) else None
            target = col.arrow.to_arrow(fixed_size=size)
            try:
                arr = arr.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"{where}: column {col.name!r} of type {arr.type} cannot become {col.type}: {exc}"
                ) from None
        arrays.append(arr)
        fields.append(pa.field(col.name, arr.type, nullable=col.nullable))
    out = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    validate(out, contract, table_name, where)
    return out
