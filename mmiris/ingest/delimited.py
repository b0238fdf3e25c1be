"""Delimited text files (ratings, movies, links, NCF) into typed columns, with clear errors.

The fast path hands the bytes to pyarrow's CSV reader. When that fails, a slow line-by-line
pass finds the first bad line and names file, line, field and expectation — or, with
``on_bad_lines="skip"``, drops the bad lines and counts them. Multi-character separators
(MovieLens ``::``) are rewritten to a tab first, since pyarrow takes one-byte delimiters.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mmiris.errors import InputError

_ARROW = {"int": pa.int64(), "float": pa.float32(), "str": pa.string()}
_EXPECT = {"int": "an integer", "float": "a number", "str": "text"}
BAD_LINE_POLICIES = ("error", "skip")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = "int"  # "int", "float" or "str"
    optional: bool = False  # an empty value becomes null instead of an error


@dataclass
class Parsed:
    table: pa.Table
    skipped_lines: int = 0


def check_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise InputError(
            f"unknown encoding {encoding!r}: expected a Python codec name such as 'utf-8' or 'iso-8859-1'"
        ) from None


def decode(data: bytes, source: str, encoding: str) -> str:
    """Bytes to text; an undecodable byte is reported with its line and a hint."""
    name = check_encoding(encoding)
    if name == "utf-8":
        name = "utf-8-sig"  # tolerate a byte-order mark
    try:
        return data.decode(name)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{source}:{line}: byte {data[exc.start : exc.start + 1]!r} cannot be decoded as "
            f"{encoding} ({exc.reason}); expected {encoding} text — pass the file's encoding "
            f"(e.g. --encoding iso-8859-1)"
        ) from None


_ASCII_COMPATIBLE = ("utf-8", "ascii", "latin-1", "iso8859", "cp125")


def _as_utf8(data: bytes, source: str, encoding: str) -> bytes:
    """UTF-8 bytes for pyarrow, without a decode/encode round trip where none is needed."""
    name = check_encoding(encoding)
    if name == "utf-8":
        return data[3:] if data.startswith(codecs.BOM_UTF8) else data
    if name.startswith(_ASCII_COMPATIBLE) and data.isascii():
        return data
    return decode(data, source, encoding).encode("utf-8")


def read_delimited(
    data: bytes,
    *,
    source: str,
    sep: str,
    fields: list[Field],
    encoding: str = "utf-8",
    header: bool = False,
    quoted: bool = False,
    on_bad_lines: str = "error",
) -> Parsed:
    """Parse ``data`` into a table with one column per field (int64/float32/string).

    ``header``: skip the first line. ``quoted``: CSV quoting (movies.csv titles).
    """
    if on_bad_lines not in BAD_LINE_POLICIES:
        raise InputError(f"on_bad_lines={on_bad_lines!r}: expected one of {BAD_LINE_POLICIES}")
    raw = _as_utf8(data, source, encoding)
    sep_fast = sep
    if len(sep) > 1:
        if b"\t" in raw:
            return _slow(decode(data, source, encoding), source, sep, fields, header, quoted, on_bad_lines)
        raw, sep_fast = raw.replace(sep.encode(), b"\t"), "\t"
    try:
        table = pacsv.read_csv(
            io.BytesIO(raw),
            read_options=pacsv.ReadOptions(
                column_names=[f.name for f in fields], skip_rows=1 if header else 0, block_size=1 << 24
            ),
            parse_options=pacsv.ParseOptions(delimiter=sep_fast, quote_char='"' if quoted else False),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: _ARROW[f.kind] for f in fields},
                null_values=[""],  # only an empty field is missing; "nan"/"NA" are checked as values
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _slow(decode(data, source, encoding), source, sep, fields, header, quoted, on_bad_lines)
    for f in fields:
        col = table.column(f.name)
        if (not f.optional and col.null_count) or (f.kind == "float" and pc.sum(pc.invert(pc.is_finite(col))).as_py()):
            # a missing value, or inf/nan where a rating belongs: find and name the line
            return _slow(decode(data, source, encoding), source, sep, fields, header, quoted, on_bad_lines)
    if table.num_rows == 0:
        raise InputError(f"{source}: no data rows; expected lines of {sep.join(f.name for f in fields)}")
    return Parsed(table)


def _rows(text: str, sep: str, quoted: bool):
    """(line number, fields) for each non-blank line."""
    if quoted:
        reader = csv.reader(io.StringIO(text), delimiter=sep)
        for row in reader:
            if row and any(v.strip() for v in row):
                yield reader.line_num, row
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield lineno, line.split(sep)


class _Unexpected(ValueError):
    """A value of the right syntax outside what the field allows; args[0] is the expectation."""


def _convert(value: str, f: Field):
    v = value.strip()
    if v == "" and f.optional:
        return None
    if f.kind == "int":
        n = int(v)
        if not INT64_MIN <= n <= INT64_MAX:
            raise _Unexpected("an integer within the 64-bit range")
        return n
    if f.kind == "float":
        x = float(v)
        if not math.isfinite(x):  # inf/nan parse as floats but are no rating
            raise _Unexpected("a finite number")
        return x
    return value


def _slow(text, source, sep, fields, header, quoted, on_bad_lines) -> Parsed:
    cols: list[list] = [[] for _ in fields]
    skipped, first = 0, True
    names = sep.join(f.name for f in fields)
    for lineno, row in _rows(text, sep, quoted):
        if header and first:
            first = False
            continue
        first = False
        problem = None
        if len(row) != len(fields):
            problem = (
                f"expected {len(fields)} fields ({names}) separated by {sep!r}, found "
                f"{len(row)} — is the separator right? Line starts {sep.join(row)[:60]!r}"
            )
        else:
            values = []
            for k, (f, v) in enumerate(zip(fields, row), 1):
                try:
                    values.append(_convert(v, f))
                except ValueError as exc:
                    expect = exc.args[0] if isinstance(exc, _Unexpected) else _EXPECT[f.kind]
                    problem = f"field {f.name!r} (column {k}): expected {expect}, got {v[:60]!r}"
                    break
        if problem:
            if on_bad_lines == "error":
                raise InputError(f"{source}:{lineno}: {problem}")
            skipped += 1
            continue
        for c, v in zip(cols, values):
            c.append(v)
    if not cols[0]:
        raise InputError(f"{source}: no valid data rows; expected lines of {names}")
    table = pa.table({f.name: pa.array(c, type=_ARROW[f.kind]) for f, c in zip(fields, cols)})
    return Parsed(table, skipped)
