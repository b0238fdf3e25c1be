"""Benchmark: the bad-input corpus — hostile and careless inputs against the CLI and the store.

    python -m benchmarks.bad_inputs [--only SUBSTRING] [--verbose]

Each case runs ``mmiris ...`` in this process (``mmiris.cli.main``) inside a fresh temporary
folder holding a small generated MovieLens-1M-format dataset and a store built from it
(ingest → split → itempop model → recommendations), and is judged on what a user sees:

- ``clear_error``: exit 2 with one ``mmiris <command>: error: ...`` line matching what the
  case expects (the file, field or option and the expectation);
- ``counted``: exit 0 where the docs say bad input is skipped or treated and counted, and the
  count is in the manifest (or the output);
- ``as_documented``: an awkward input that is valid and does what the docs say (the folder
  above ``ml-1m/``, ``--user`` as a source id, a LATEST that points nowhere);
- ``traceback``: a Python traceback or exit 1; ``silent_wrong``: exit 0 (or a wrong code)
  where an error or a count was due, or the wrong message;
- ``outside_store_writes``: any file created or changed outside the store and the case's
  own output paths; ``published_on_failure``: a failed case that changed the store's
  manifests, LATEST pointers or left staging folders.

No real data is needed (``--data`` is not read). The last line is one JSON object:
``{"cases", "clear_error", "counted", "as_documented", "traceback", "silent_wrong",
"outside_store_writes", "published_on_failure", "seconds"}``; exit 1 unless the four failure counts are 0.
tests/test_bad_inputs.py runs the same cases.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

N_USERS, N_ITEMS = 24, 16


# --------------------------------------------------------------------------- data
def ratings_lines(n_users: int = N_USERS, n_items: int = N_ITEMS) -> list[str]:
    """A deterministic MovieLens-1M ``ratings.dat``: user u rates 7 items, ids from 1."""
    lines = []
    for u in range(1, n_users + 1):
        for k in range(7):
            i = (u * 3 + k * 5) % n_items + 1
            lines.append(f"{u}::{i}::{(u + k) % 5 + 1}::{978300000 + u * 100 + k}")
    return lines


def movies_lines(n_items: int = N_ITEMS) -> list[str]:
    return [f"{i}::Movie {i} ({1980 + i})::Drama|Comedy" for i in range(1, n_items + 1)]


def write_ml(
    folder: Path,
    ratings: list[str] | None = None,
    movies: list[str] | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("\n".join(ratings_lines() if ratings is None else ratings) + "\n")
    if movies is not False:
        (folder / "movies.dat").write_text("\n".join(movies_lines() if movies is None else movies) + "\n")
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    return folder


def with_line(i: int, line: str) -> list[str]:
    out = ratings_lines()
    out[i] = line
    return out


# --------------------------------------------------------------------------- cases
@dataclass
class Env:
    root: Path  # the case's folder (cwd while it runs)
    store: Path
    data: Path  # the good dataset
    outside: Path  # a folder that must never be written

    def manifest(self, name: str, version: str | None = None) -> Path:
        version = version or (self.store / name / "LATEST").read_text().strip()
        return self.store / name / version / "manifest.json"

    def version_dir(self, name: str) -> Path:
        return self.manifest(name).parent


@dataclass
class Case:
    name: str
    argv: list[str] | Callable[[Env], list[str]]
    expect: str = "error"  # "error" (exit 2 + match) | "counted" (exit 0 + check) | "ok"
    match: str = ""  # regex the error line (or, for counted/ok, stdout) must match
    setup: Callable[[Env], None] | None = None
    check: Callable[[Env, str], str | None] | None = None  # counted/ok: a problem, or None
    outputs: tuple[str, ...] = ()  # paths (relative to the case folder) it may write
    patch: Callable[[], contextlib.AbstractContextManager] | None = None
    code: int = 2
    environ: dict[str, str] = field(default_factory=dict)  # set while the case runs


def _stat(name: str, key: str, want=None):
    """A check: the newest ``name`` artifact's manifest stats[key] is truthy (or == want)."""

    def check(env: Env, out: str) -> str | None:
        stats = json.loads(env.manifest(name).read_text())["stats"]
        got = stats.get(key)
        ok = got == want if want is not None else bool(got)
        return None if ok else f"stats[{key!r}] = {got!r}, expected {want if want is not None else 'a count'}"

    return check


def _ml(env: Env, sub: str, **kw) -> Path:
    return write_ml(env.root / sub, **kw)


def ingest(sub: str, *extra: str, **kw) -> tuple:
    """argv and setup for ``ingest movielens <sub>`` over a dataset written with ``kw``."""
    return (
        lambda env: ["ingest", "movielens", str(env.root / sub), "--name-prefix", "t-", *extra],
        lambda env: _ml(env, sub, **kw),
    )


def _flip(path_of: Callable[[Env], Path], n: int = 3, truncate: int | None = None):
    def setup(env: Env) -> None:
        p = path_of(env)
        data = bytearray(p.read_bytes())
        if truncate is not None:
            data = data[:truncate]
        else:
            for k in range(n):
                data[(len(data) // 2 + 97 * k) % len(data)] ^= 1 << k
        p.write_bytes(bytes(data))

    return setup


def _evil_model(env: Env) -> None:
    """A crafted model.pt whose pickle runs code, with the manifest's checksum forged to match."""
    import pickle

    marker = env.outside / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = pickle.dumps({"model": "itempop", "config": {}, "state_dict": {}, "x": Evil()})
    mdir = env.version_dir("model-itempop")
    (mdir / "files" / "model.pt").write_bytes(data)
    man = json.loads((mdir / "manifest.json").read_text())
    man["files"]["model.pt"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (mdir / "manifest.json").write_text(json.dumps(man))


def _no_pwned(env: Env, out: str) -> str | None:
    return "the model file's code ran" if (env.outside / "pwned").exists() else None


@contextlib.contextmanager
def _disk_full_on(nth: int, err: int = errno.ENOSPC):
    """The ``nth`` version written to the store fails with ``err`` (a full disk by default)."""
    from mmiris.artifacts import store as mod

    real, calls = mod.ArtifactStore._write_version, []

    def write(self, *a, **k):
        calls.append(1)
        if len(calls) == nth:
            raise OSError(err, os.strerror(err), a[0])
        return real(self, *a, **k)

    mod.ArtifactStore._write_version = write
    try:
        yield
    finally:
        mod.ArtifactStore._write_version = real


@contextlib.contextmanager
def _killed_between_renames():
    """A KeyboardInterrupt (as from a kill) after the first rename of a group publish."""
    from mmiris.artifacts import store as mod

    real, calls = mod.os.rename, []

    def rename(src, dst):
        calls.append(dst)
        real(src, dst)
        if len(calls) == 1:
            raise KeyboardInterrupt

    mod.os.rename = rename
    try:
        yield
    finally:
        mod.os.rename = real


def _jsonl(env: Env, rows: list[dict], name: str = "omdb.jsonl") -> None:
    (env.root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _images(env: Env, ids: list[str], folder: str = "posters") -> None:
    from PIL import Image

    d = env.root / folder
    d.mkdir(exist_ok=True)
    for i in ids:
        Image.new("RGB", (8, 8), (int(i) * 10 % 255, 0, 0)).save(d / f"{i}.png")


def cases() -> list[Case]:
    C: list[Case] = []
    add = C.append

    # ---- names: nothing may be written outside the store; grammar errors name the option
    for prefix in [
        "../../victim/x",
        "/tmp/abs-victim/",
        "a b",
        "_",
        ".",
        "x@",
        "a\nb",
        "tab\t",
        "x" * 130,
        "sub/dir-",
        "..",
        "é-",
    ]:
        argv, setup = ingest("ml", "--name-prefix", prefix)
        add(
            Case(f"ingest --name-prefix {prefix!r}", argv, match=r"--name-prefix .*expected 1-128 letters", setup=setup)
        )
    for name in [
        "../../victim/split",
        "_staging",
        "",
        "a/b",
        "a@b",
        "x\ny",
        ".hidden",
        "x" * 200,
        "tab\t",
        "/abs",
        "-",
        "LATEST/..",
        "sp ace",
    ]:
        add(
            Case(
                f"split --name {name!r}",
                ["split", "--name", name],
                match=r"name .*expected 1-128 letters|name '' *:|name ''",
            )
        )
    for ref in ["../x", "interactions@../../x", "a/b@latest", "interactions@a/b", "@latest"]:
        add(Case(f"split {ref!r}", ["split", ref], match=r"expected|not found"))
        add(Case(f"artifacts show {ref!r}", ["artifacts", "show", ref], match=r"expected|not found"))
    add(Case("artifacts ls '../x'", ["artifacts", "ls", "../x"], match=r"expected 1-128 letters"))
    add(Case("recommend --model '../x'", ["recommend", "--model", "../x"], match=r"expected 1-128 letters"))
    add(Case("evaluate --model '../x'", ["evaluate", "--model", "../x"], match=r"expected 1-128 letters"))
    add(
        Case(
            "features text --name '../x'",
            lambda e: ["features", "text", "--jsonl", str(e.root / "omdb.jsonl"), "--name", "../x"],
            match=r"--name:? .*expected 1-128 letters",
            setup=lambda e: _jsonl(e, [{"movie_id": 1, "Plot": "p"}]),
        )
    )
    add(
        Case(
            "features image --name 'a/b'",
            lambda e: ["features", "image", "--images-dir", "posters", "--name", "a/b"],
            match=r"--name:? .*expected 1-128 letters",
            setup=lambda e: _images(e, ["1"]),
        )
    )

    def symlink_out(env: Env) -> None:
        os.symlink(env.outside, env.store / "split2")

    add(
        Case(
            "split --name of a symlink pointing outside",
            ["split", "--name", "split2", "--seed", "5", "--negatives", "5"],
            match=r"outside the store",
            setup=symlink_out,
        )
    )

    # ---- ingest reads exactly what it is given
    def stray(env: Env) -> None:
        write_ml(env.root / "tree" / "a")
        (env.root / "tree" / "b").mkdir()
        (env.root / "tree" / "b" / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n")
        (env.root / "tree" / "notes.txt").write_text("hello\n")

    add(
        Case(
            "ingest a stray text file",
            lambda e: ["ingest", "movielens", str(e.root / "tree" / "notes.txt")],
            match=r"notes.txt: not a dataset file or archive",
            setup=stray,
        )
    )
    add(
        Case(
            "ingest a garbage .zip",
            lambda e: ["ingest", "movielens", str(e.root / "junk.zip")],
            match=r"junk.zip: not a zip archive",
            setup=lambda e: (e.root / "junk.zip").write_bytes(b"garbage" * 50),
        )
    )

    def zip_without(env: Env) -> None:
        with zipfile.ZipFile(env.root / "empty.zip", "w") as z:
            z.writestr("readme.txt", "nothing here")

    add(
        Case(
            "ingest a zip without a dataset",
            lambda e: ["ingest", "movielens", str(e.root / "empty.zip")],
            match=r"empty.zip: not a MovieLens dataset",
            setup=zip_without,
        )
    )

    def zip_truncated(env: Env) -> None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("ml-1m/ratings.dat", "\n".join(ratings_lines()))
        (env.root / "cut.zip").write_bytes(buf.getvalue()[:200])

    add(
        Case(
            "ingest a truncated zip",
            lambda e: ["ingest", "movielens", str(e.root / "cut.zip")],
            match=r"cut.zip: not a (zip|readable zip)",
            setup=zip_truncated,
        )
    )
    add(
        Case(
            "ingest an empty folder",
            lambda e: ["ingest", "movielens", str(e.root / "emptydir")],
            match=r"emptydir: not a MovieLens dataset",
            setup=lambda e: (e.root / "emptydir").mkdir(),
        )
    )
    add(
        Case(
            "ingest a missing path",
            lambda e: ["ingest", "movielens", str(e.root / "nope")],
            match=r"nope: no such file or folder",
        )
    )
    add(
        Case(
            "ingest a dataset two levels down",
            lambda e: ["ingest", "movielens", str(e.root / "deep")],
            match=r"deep: not a MovieLens dataset",
            setup=lambda e: write_ml(e.root / "deep" / "x" / "ml-1m"),
        )
    )

    def two(env: Env) -> None:
        write_ml(env.root / "two" / "a")
        write_ml(env.root / "two" / "b")

    add(
        Case(
            "ingest a folder of two datasets",
            lambda e: ["ingest", "movielens", str(e.root / "two")],
            match=r"two: 2 subfolders hold a dataset",
            setup=two,
        )
    )
    argv, setup = ingest("one")
    add(
        Case(
            "ingest the folder above ml-1m/ (documented layout)",
            lambda e: ["ingest", "movielens", str(e.root / "up"), "--name-prefix", "up-"],
            expect="ok",
            setup=lambda e: write_ml(e.root / "up" / "ml-1m"),
            match=r"interactions +up-interactions@",
        )
    )
    add(
        Case(
            "ingest ratings.dat itself",
            lambda e: ["ingest", "movielens", str(e.root / "f" / "ratings.dat"), "--name-prefix", "f-"],
            expect="ok",
            setup=lambda e: write_ml(e.root / "f"),
            match=r"items +f-items@",
        )
    )

    # ---- values: inf/nan ratings, ids and timestamps beyond int64, malformed lines
    for label, line in [
        ("inf rating", "1::2::inf::978300760"),
        ("nan rating", "1::2::nan::978300760"),
        ("-inf rating", "1::2::-inf::978300760"),
        ("NaN rating", "1::2::NaN::978300760"),
        ("Infinity rating", "1::2::Infinity::978300760"),
    ]:
        argv, setup = ingest("v", ratings=with_line(3, line))
        add(
            Case(
                f"ingest {label}",
                argv,
                match=r"ratings.dat:4: field 'rating' \(column 3\): expected a finite "
                r"number",
                setup=setup,
            )
        )
    argv, setup = ingest("v", "--on-bad-lines", "skip", ratings=with_line(3, "1::2::inf::978300760"))
    add(
        Case(
            "ingest inf rating --on-bad-lines skip",
            argv,
            expect="counted",
            setup=setup,
            check=_stat("t-interactions", "malformed_lines_skipped", 1),
        )
    )
    for label, line, fld in [
        ("user id beyond int64", "99999999999999999999::2::3::978300760", "user"),
        ("item id beyond int64", "1::-99999999999999999999::3::978300760", "item"),
        ("timestamp beyond int64", "1::2::3::99999999999999999999", "timestamp"),
    ]:
        argv, setup = ingest("v", ratings=with_line(0, line))
        add(Case(f"ingest {label}", argv, match=rf"ratings.dat:1: field '{fld}'.*64-bit range", setup=setup))
    for label, line, pat in [
        ("non-numeric rating", "1::2::five::978300760", r"'rating'.*expected a number"),
        ("missing field", "1::2::3", r"expected 4 fields"),
        ("wrong separator", "1,2,3,978300760", r"expected 4 fields.*separator"),
        ("text user id", "bob::2::3::978300760", r"'user'.*expected an integer"),
        ("float item id", "1::2.5::3::978300760", r"'item'.*expected an integer"),
    ]:
        argv, setup = ingest("v", ratings=with_line(5, line))
        add(Case(f"ingest {label}", argv, match=r"ratings.dat:6: .*" + pat, setup=setup))
    argv, setup = ingest("v", "--on-bad-lines", "skip", ratings=with_line(5, "1::2::3"))
    add(
        Case(
            "ingest malformed line --on-bad-lines skip",
            argv,
            expect="counted",
            setup=setup,
            check=_stat("t-interactions", "malformed_lines_skipped", 1),
        )
    )
    argv, setup = ingest("v", ratings=ratings_lines() + ["1::1::5::978300999", "1::1::4::978301000"])
    add(
        Case(
            "ingest duplicate pairs",
            argv,
            expect="counted",
            setup=setup,
            check=_stat("t-interactions", "duplicates_dropped"),
        )
    )
    argv, setup = ingest("v", ratings=[])
    add(Case("ingest an empty ratings.dat", argv, match=r"ratings.dat: no (valid )?data rows", setup=setup))
    argv, setup = ingest("v", ratings=["", "   ", ""])
    add(Case("ingest blank ratings.dat", argv, match=r"ratings.dat: no (valid )?data rows", setup=setup))
    argv, setup = ingest(
        "v",
        "--encoding",
        "utf-8",
        ratings=ratings_lines(),
        movies=movies_lines()[:-1] + ["16::Caf\udce9 (1996)::Drama"],
    )
    add(
        Case(
            "ingest --encoding utf-8 on latin-1 bytes",
            argv,
            match=r"movies.dat:16: byte .* cannot be decoded",
            setup=lambda e: (
                _ml(e, "v"),
                (e.root / "v" / "movies.dat").write_bytes(
                    "\n".join(movies_lines()[:-1]).encode() + b"\n16::Caf\xe9 (1996)::Drama\n"
                ),
            ),
        )
    )
    argv, setup = ingest("v", "--encoding", "klingon")
    add(Case("ingest --encoding klingon", argv, match=r"unknown encoding 'klingon'", setup=setup))
    argv, setup = ingest("v", movies=movies_lines()[:5] + ["6::broken"] + movies_lines()[6:])
    add(
        Case(
            "ingest malformed movies.dat: nothing published",
            argv,
            match=r"movies.dat:6: expected 3 fields",
            setup=setup,
        )
    )
    argv, setup = ingest("v", "--on-bad-lines", "skip", movies=movies_lines()[:5] + ["6::broken"] + movies_lines()[6:])
    add(
        Case(
            "ingest malformed movies.dat --on-bad-lines skip",
            argv,
            expect="counted",
            setup=setup,
            check=_stat("t-items", "metadata_lines_skipped", 1),
        )
    )
    argv, setup = ingest("v", ratings=["-1::2::3::978300760"] + ratings_lines())
    add(
        Case(
            "ingest a negative user id is kept as a source id",
            argv,
            expect="ok",
            setup=setup,
            match=r"interactions +t-interactions@",
        )
    )

    # ---- all-or-nothing multi-artifact ingest
    argv, setup = ingest("v")
    add(
        Case(
            "ingest with a full disk at the second artifact",
            argv,
            match=r"No space left on device",
            setup=setup,
            patch=lambda: _disk_full_on(2),
        )
    )
    add(
        Case(
            "ingest with a full disk at the first artifact",
            argv,
            match=r"No space left on device",
            setup=setup,
            patch=lambda: _disk_full_on(1),
        )
    )
    add(
        Case(
            "split into a read-only store",
            ["split", "--seed", "9", "--negatives", "5"],
            match=r"Read-only file system",
            patch=lambda: _disk_full_on(1, errno.EROFS),
        )
    )
    add(
        Case(
            "ingest killed between two renames",
            argv,
            setup=setup,
            patch=_killed_between_renames,
            code=130,
            match=r"interrupted",
        )
    )

    # ---- other ingest formats
    def ncf_files(env: Env, drop: str | None = None) -> None:
        d = env.root / "ncf"
        d.mkdir(exist_ok=True)
        (d / "x.train.rating").write_text("0\t1\t5\t1\n0\t2\t4\t2\n1\t0\t3\t3\n1\t2\t3\t4\n")
        (d / "x.test.rating").write_text("0\t3\t5\t9\n1\t3\t4\t9\n")
        (d / "x.test.negative").write_text("(0,3)\t0\n(1,3)\t1\n")
        if drop:
            (d / drop).unlink()

    add(
        Case(
            "ingest ncf without the negatives file",
            lambda e: ["ingest", "ncf", str(e.root / "ncf")],
            match=r"ncf: expected exactly one \*.test.negative file",
            setup=lambda e: ncf_files(e, "x.test.negative"),
        )
    )
    add(
        Case(
            "ingest ncf two files",
            lambda e: ["ingest", "ncf", "a.train.rating", "b.test.rating"],
            match=r"ncf: got 2 source\(s\)",
        )
    )
    add(
        Case(
            "ingest ncf --movies without --item-map",
            lambda e: ["ingest", "ncf", str(e.root / "ncf"), "--movies", str(e.data / "movies.dat")],
            match=r"--movies/--links need --item-map",
            setup=ncf_files,
        )
    )
    add(
        Case(
            "ingest ncf --name-prefix '../n'",
            lambda e: ["ingest", "ncf", str(e.root / "ncf"), "--name-prefix", "../n"],
            match=r"--name-prefix .*expected 1-128",
            setup=ncf_files,
        )
    )

    def amazon(env: Env, lines: list[str]) -> None:
        import gzip

        with gzip.open(env.root / "reviews.json.gz", "wt") as f:
            f.write("\n".join(lines) + "\n")

    def review(u, i, r=5.0):
        return json.dumps({"reviewerID": f"U{u}", "asin": f"A{i}", "overall": r, "unixReviewTime": 1})

    good_reviews = [review(u, i) for u in range(6) for i in range(6) if (u + i) % 3]
    az = ["ingest", "amazon", "reviews.json.gz"]
    add(
        Case(
            "ingest amazon --kcore 0",
            az + ["--kcore", "0"],
            match=r"kcore=0: expected a number >= 1",
            setup=lambda e: amazon(e, good_reviews),
        )
    )
    add(
        Case(
            "ingest amazon --kcore 50",
            az + ["--kcore", "50"],
            match=r"no interactions left after 50-core",
            setup=lambda e: amazon(e, good_reviews),
        )
    )
    add(
        Case(
            "ingest amazon not JSON",
            az,
            match=r"reviews.json.gz:2: .*not a JSON object",
            setup=lambda e: amazon(e, [good_reviews[0], "{{{not json"]),
        )
    )
    add(
        Case(
            "ingest amazon rating inf",
            az + ["--kcore", "1"],
            match=r"reviews.json.gz:1: field 'overall': "
            r"expected a finite number",
            setup=lambda e: amazon(e, ['{"reviewerID": "U", "asin": "A", "overall": Infinity}']),
        )
    )
    add(
        Case(
            "ingest amazon missing reviewerID",
            az,
            match=r"reviews.json.gz:1: field 'reviewerID'",
            setup=lambda e: amazon(e, ['{"asin": "A", "overall": 5}']),
        )
    )
    add(
        Case(
            "ingest amazon not gzip",
            az,
            match=r"reviews.json.gz",
            setup=lambda e: (e.root / "reviews.json.gz").write_bytes(b"\x1f\x8bgarbage"),
        )
    )

    # ---- the store itself
    def file_store(env: Env) -> None:
        (env.root / "afile").write_text("x")

    add(
        Case(
            "--store is a file",
            ["--store", "afile", "artifacts", "ls"],
            match=r"is a file, expected a folder",
            setup=file_store,
        )
    )
    add(
        Case(
            "--store under a file",
            ["--store", "afile/store", "artifacts", "ls"],
            match=r"cannot create folder",
            setup=file_store,
        )
    )
    add(
        Case(
            "--store not creatable", ["--store", "/proc/mmiris-store", "artifacts", "ls"], match=r"cannot create folder"
        )
    )
    add(
        Case(
            "--store an unknown URI scheme",
            ["--store", "nosuch://bucket/x", "artifacts", "ls"],
            match=r"not a usable filesystem URI",
        )
    )
    add(
        Case(
            "manifest is not JSON",
            ["artifacts", "show", "split"],
            match=r"manifest .* is corrupt",
            setup=lambda e: e.manifest("split").write_text("{oops"),
        )
    )
    add(
        Case(
            "manifest truncated",
            ["split", "--seed", "3"],
            match=r"manifest .* is corrupt",
            setup=_flip(lambda e: e.manifest("interactions"), truncate=40),
        )
    )
    add(
        Case(
            "manifest of another version",
            ["artifacts", "show", "split"],
            match=r"describes .* not split@",
            setup=lambda e: e.manifest("split").write_text(
                e.manifest("split").read_text().replace('"version": "', '"version": "0')
            ),
        )
    )
    add(
        Case(
            "flipped bits in split test.parquet",
            ["evaluate", "--model", "model-itempop", "--protocol", "sampled"],
            match=r"test.parquet fails its checksum",
            setup=_flip(lambda e: e.version_dir("split") / "test.parquet"),
        )
    )
    add(
        Case(
            "truncated interactions.parquet",
            ["split", "--seed", "4"],
            match=r"interactions.parquet has 50 bytes",
            setup=_flip(lambda e: e.version_dir("interactions") / "interactions.parquet", truncate=50),
        )
    )
    add(
        Case(
            "truncated parquet --no-verify",
            ["--no-verify", "split", "--seed", "4"],
            match=r"interactions.parquet is not a readable Parquet file",
            setup=_flip(lambda e: e.version_dir("interactions") / "interactions.parquet", truncate=50),
        )
    )
    add(
        Case(
            "missing table file",
            ["split", "--seed", "4"],
            match=r"interactions.parquet",
            setup=lambda e: (e.version_dir("interactions") / "interactions.parquet").unlink(),
        )
    )
    add(
        Case(
            "truncated model.pt",
            ["recommend", "--model", "model-itempop", "--top-n", "3"],
            match=r"model.pt has \d+ bytes, the manifest records",
            setup=_flip(lambda e: e.version_dir("model-itempop") / "files" / "model.pt", truncate=100),
        )
    )
    add(
        Case(
            "flipped bits in model.pt",
            ["recommend", "--model", "model-itempop", "--top-n", "4"],
            match=r"model.pt fails its checksum",
            setup=_flip(lambda e: e.version_dir("model-itempop") / "files" / "model.pt"),
        )
    )
    add(
        Case(
            "model.pt with pickled code (forged checksum)",
            ["recommend", "--model", "model-itempop", "--top-n", "5"],
            match=r"files/model.pt is not a loadable model file",
            setup=_evil_model,
            check=_no_pwned,
        )
    )
    add(
        Case(
            "LATEST points nowhere",
            ["artifacts", "show", "split"],
            expect="ok",
            match=r'"kind": "split"',
            setup=lambda e: (e.store / "split" / "LATEST").write_text("0123456789abcdef\n"),
        )
    )
    add(
        Case(
            "LATEST holds a path",
            ["artifacts", "show", "split"],
            expect="ok",
            match=r'"kind": "split"',
            setup=lambda e: (e.store / "split" / "LATEST").write_text("../../etc\n"),
        )
    )

    def leftovers(env: Env) -> None:
        st = env.store / "_staging" / "items-0123456789abcdef-999999999-deadbeef"
        st.mkdir(parents=True)
        (st / "manifest.json").write_text("{}")
        (env.store / "items" / "LATEST.999999999.deadbeef.tmp").write_text("")

    def gc_check(env: Env, out: str) -> str | None:
        left = list((env.store / "_staging").glob("*")) + list(env.store.glob("*/LATEST.*.tmp"))
        return f"left {left}" if left else None

    add(
        Case(
            "artifacts gc removes crashed leftovers",
            ["artifacts", "gc"],
            expect="counted",
            match=r"removed 2 ",
            setup=leftovers,
            check=gc_check,
        )
    )
    add(
        Case(
            "artifacts ls ignores leftovers",
            ["artifacts", "ls"],
            expect="ok",
            match=r"split@",
            setup=leftovers,
            check=lambda e, out: "listed a leftover" if "_staging" in out else None,
        )
    )
    add(
        Case(
            "artifacts show a missing artifact",
            ["artifacts", "show", "nope"],
            match=r"no published version of artifact 'nope'",
        )
    )
    add(Case("artifacts show an unknown version", ["artifacts", "show", "split@ffff"], match=r"split@ffff not found"))
    add(Case("artifacts lineage of a missing version", ["artifacts", "lineage", "split@0000"], match=r"not found"))

    # ---- split
    add(Case("split --negatives 0", ["split", "--negatives", "0"], match=r"--negatives 0: expected a number >= 1"))
    add(Case("split --negatives -1", ["split", "--negatives", "-1"], match=r"--negatives -1: expected a number >= 1"))
    add(Case("split --negatives more than items", ["split", "--negatives", "1000"], match=r"n_negatives=1000"))
    add(Case("split --keep without --from", ["split", "--keep", "0.5"], match=r"--keep and --cold-items derive"))
    add(
        Case(
            "split --from split --name '../x'",
            ["split", "--from", "split", "--keep", "0.5", "--name", "../x"],
            match=r"--name: artifact name '../x': expected",
        )
    )
    add(Case("split --from split --keep 7", ["split", "--from", "split", "--keep", "7"], match=r"keep"))
    add(Case("split of an items artifact", ["split", "items"], match=r"is a 'items' artifact; expected interactions"))
    add(Case("split of a missing artifact", ["split", "nothing"], match=r"no published version of artifact 'nothing'"))
    add(Case("split --seed -1", ["split", "--seed", "-1"], match=r"--seed -1: expected"))
    add(
        Case(
            "split --seed 2**70 (numpy takes big seeds)",
            ["split", "--seed", str(2**70), "--negatives", "5"],
            expect="ok",
            match=r"split +split@",
        )
    )
    add(
        Case(
            "split --short-users error",
            ["split", "t2-interactions", "--short-users", "error"],
            match=r"user",
            setup=lambda e: _ingest_short(e),
        )
    )

    # ---- train / evaluate / recommend / report / demo / features
    add(
        Case(
            "train --set beta=notjson",
            ["train", "--split", "split", "--model", "nais_prod", "--set", "beta=notjson", "--epochs", "1"],
            match=r"beta",
        )
    )
    add(
        Case(
            "train --set nosuchfield=1",
            ["train", "--split", "split", "--model", "itempop", "--set", "nosuch=1"],
            match=r"nosuch",
        )
    )
    add(Case("train --model nosuch", ["train", "--split", "split", "--model", "nosuch"], match=r"nosuch"))
    add(
        Case(
            "train on an interactions artifact",
            ["train", "--split", "interactions", "--model", "itempop"],
            match=r"split|interactions",
        )
    )
    add(Case("evaluate a split as a model", ["evaluate", "--model", "split"], match=r"expected a model|model"))
    add(
        Case(
            "recommend --items of another catalogue",
            ["recommend", "--model", "model-itempop", "--user", "1", "--items", "other-items"],
            match=r"--items other-items@\w+ has \d+ items, the model's catalogue has \d+",
        )
    )
    add(
        Case(
            "recommend --items a split",
            ["recommend", "--model", "model-itempop", "--user", "1", "--items", "split"],
            match=r"--items split@\w+ is a 'split' artifact, expected items",
        )
    )
    add(
        Case(
            "recommend --user not in the data",
            ["recommend", "--model", "model-itempop", "--user", "999"],
            match=r"--user 999: no user with source id '999'",
        )
    )
    add(
        Case(
            "recommend --user-index out of range",
            ["recommend", "--model", "model-itempop", "--user-index", "24"],
            match=r"--user-index 24: expected a dense user_id in 0..23",
        )
    )
    add(
        Case(
            "recommend --user takes the source id",
            ["recommend", "--model", "model-itempop", "--user", "24", "--top-n", "2"],
            expect="ok",
            match=r"for user 24 \(source id; dense user_id 23\)",
        )
    )
    add(
        Case(
            "recommend --users garbage",
            ["recommend", "--model", "model-itempop", "--users", "1,x"],
            match=r"--users '1,x': expected comma-separated",
        )
    )
    add(
        Case(
            "recommend --users out of range",
            ["recommend", "--model", "model-itempop", "--users", "-5"],
            match=r"user -5 is outside",
        )
    )
    add(
        Case(
            "recommend --top-n 0",
            ["recommend", "--model", "model-itempop", "--top-n", "0"],
            match=r"top_n must be >= 1",
        )
    )
    add(
        Case(
            "recommend --batch-users 0",
            ["recommend", "--model", "model-itempop", "--batch-users", "0", "--top-n", "2"],
            match=r"--batch-users 0: expected",
        )
    )
    add(
        Case(
            "report --out an existing file",
            ["report", "--out", "afile"],
            match=r"--out afile: is a file, expected a folder",
            setup=file_store,
        )
    )
    add(Case("report --users garbage", ["report", "--out", "rep", "--users", "a"], match=r"expected comma-separated"))
    add(Case("demo --users 0", ["demo", "--users", "0"], match=r"--users 0: expected at least 2"))
    add(Case("demo --items 3", ["demo", "--items", "3"], match=r"--items 3: expected at least 10"))
    add(Case("demo --epochs 0", ["demo", "--epochs", "0"], match=r"--epochs 0: expected at least 1"))
    add(Case("demo --models nosuch", ["demo", "--models", "nosuch"], match=r"--models: .*nosuch"))
    add(
        Case(
            "demo --out an existing file",
            ["demo", "--out", "afile", "--users", "20", "--items", "12"],
            match=r"--out afile: is a file",
            setup=file_store,
        )
    )
    add(
        Case(
            "features text: unmatched MovieLens ids",
            ["features", "text", "--jsonl", "omdb.jsonl"],
            match=r"omdb.jsonl: 1 of 3 record\(s\) have movie_id values that match no item of items@\w+ "
            r"\(e\.g\. '999'\)",
            setup=lambda e: _jsonl(
                e, [{"movie_id": 1, "Plot": "a"}, {"movie_id": 2, "Plot": "b"}, {"movie_id": 999, "Plot": "c"}]
            ),
        )
    )
    add(
        Case(
            "features image: unmatched MovieLens ids",
            ["features", "image", "--images-dir", "posters"],
            match=r"posters: 1 of 2 image\(s\) are named by ids that match no item of items@\w+ \(e\.g\. '999'\)",
            setup=lambda e: _images(e, ["1", "999"]),
        )
    )
    add(
        Case(
            "features text: not JSON",
            ["features", "text", "--jsonl", "omdb.jsonl"],
            match=r"omdb.jsonl:1: not a JSON object",
            setup=lambda e: (e.root / "omdb.jsonl").write_text("{{nope\n"),
        )
    )
    add(
        Case(
            "features text: missing id field",
            ["features", "text", "--jsonl", "omdb.jsonl", "--id-field", "mid"],
            match=r"omdb.jsonl:1: field 'mid' missing",
            setup=lambda e: _jsonl(e, [{"movie_id": 1, "Plot": "a"}]),
        )
    )
    add(
        Case(
            "features image --images-dir a file",
            ["features", "image", "--images-dir", "afile"],
            match=r"afile: not a directory",
            setup=file_store,
        )
    )
    add(
        Case(
            "features image relative --images-dir, bad encoder: nothing published",
            ["features", "image", "--images-dir", "posters", "--ids", "dense", "--encoder", "nosuch"],
            match=r"image encoder 'nosuch'|nosuch",
            setup=lambda e: _images(e, ["1", "2"]),
        )
    )
    add(
        Case(
            "features text --encoder nosuch: nothing published",
            ["features", "text", "--jsonl", "omdb.jsonl", "--encoder", "nosuch"],
            match=r"nosuch",
            setup=lambda e: _jsonl(e, [{"movie_id": 1, "Plot": "a"}]),
        )
    )
    add(
        Case(
            "crawl omdb with an unreachable --base-url",
            [
                "crawl",
                "omdb",
                "--items",
                "items",
                "--base-url",
                "http://127.0.0.1:9/",
                "--max-attempts",
                "1",
                "--workers",
                "1",
                "--no-posters",
            ],
            match=r"--base-url http://127.0.0.1:9/: no connection",
            environ={"OMDB_API_KEY": "k"},
        )
    )
    add(Case("demo --workers 0", ["demo", "--workers", "0"], match=r"--workers 0: expected at least 1"))
    add(
        Case(
            "features image --encoder nosuch",
            ["features", "image", "--images", "split", "--encoder", "nosuch"],
            match=r"nosuch|item_images",
        )
    )
    add(Case("crawl omdb without items", ["crawl", "omdb", "--items", "nothing"], match=r"nothing|OMDB_API_KEY"))

    # ---- usage errors (argparse) and pipes
    for argv in (
        ["split", "--negatives", "x"],
        ["recommend"],
        ["nosuchcommand"],
        ["ingest"],
        ["split", "--mode", "sideways"],
    ):
        add(Case(f"usage: {' '.join(argv)}", argv, match=r"usage: |error: "))
    return C


def _ingest_short(env: Env) -> None:
    from mmiris.cli import main

    lines = ratings_lines() + ["900::1::5::978300000"]  # one user with a single interaction
    write_ml(env.root / "short", ratings=lines)
    with contextlib.redirect_stdout(io.StringIO()):
        main(["--store", str(env.store), "ingest", "movielens", str(env.root / "short"), "--name-prefix", "t2-"])


# --------------------------------------------------------------------------- running
def build_base(folder: Path) -> Path:
    """The shared starting point: a dataset, and a store with interactions, items, a split, an
    itempop model and a second catalogue (other-items)."""
    from mmiris.cli import main

    data = write_ml(folder / "data" / "ml-1m")
    other = write_ml(folder / "data" / "other", ratings=ratings_lines(10, 9), movies=movies_lines(9))
    store = folder / "store"
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        for argv in (
            ["ingest", "movielens", str(data)],
            ["ingest", "movielens", str(other), "--name-prefix", "other-"],
            ["split", "--negatives", "5"],
            ["train", "--split", "split", "--model", "itempop"],
        ):
            rc = main(["--store", str(store), *argv])
            if rc != 0:
                raise RuntimeError(f"building the base store failed at {argv} (exit {rc})")
    return folder


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and skip not in p.parents:
            st = p.stat()
            out[str(p.relative_to(root))] = f"{st.st_size}:{st.st_mtime_ns}"
    return out


def _store_state(store: Path) -> dict[str, str]:
    """What a reader of the store sees: every listed version and what ``latest`` gives."""
    from mmiris.artifacts import ArtifactStore
    from mmiris.errors import MmirisError

    out = {}
    if store.is_dir():
        s = ArtifactStore(store, verify=False)
        for name in s.names():
            try:
                versions = s.versions(name)
                for m in versions:
                    out[str(m.ref)] = m.created_at
                if versions:
                    out[f"{name}@latest"] = str(s.latest(name))
            except MmirisError as exc:  # a corrupt manifest the case planted: part of the state
                out[f"{name}!"] = str(exc)[:80]
    return out


@dataclass
class Result:
    case: str
    verdict: str  # clear_error | counted | traceback | silent_wrong
    code: int
    line: str
    outside_writes: list[str] = field(default_factory=list)
    published_on_failure: bool = False
    problem: str = ""


def run_case(case: Case, base: Path, work: Path) -> Result:
    from mmiris.cli import main

    env_dir = work / re.sub(r"[^A-Za-z0-9]+", "_", case.name)[:60]
    shutil.copytree(base, env_dir, symlinks=True)
    env = Env(env_dir, env_dir / "store", env_dir / "data" / "ml-1m", env_dir / "outside")
    env.outside.mkdir(exist_ok=True)
    if case.setup:
        case.setup(env)
    argv = case.argv(env) if callable(case.argv) else list(case.argv)
    if "--store" not in argv[:1]:
        argv = ["--store", str(env.store), *argv]
    before_out = _snapshot(work, env.store)
    absolute_victims = [Path("/tmp/abs-victim"), Path("/abs")]
    existed = {p: p.exists() for p in absolute_victims}
    before_store = _store_state(env.store)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(env.root)
    saved_env = {k: os.environ.get(k) for k in ("MMIRIS_STORE", "MMIRIS_VERIFY", *case.environ)}
    os.environ.update(case.environ)
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            case.patch() if case.patch else contextlib.nullcontext(),
        ):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
            except BaseException:  # noqa: BLE001 - escaped the boundary: a traceback
                import traceback

                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(cwd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    stderr, stdout = err.getvalue(), out.getvalue()
    lines = [ln for ln in stderr.splitlines() if ln.startswith("mmiris") or "error:" in ln]
    line = lines[-1] if lines else (stderr.strip().splitlines() or [""])[-1]
    allowed = set(case.outputs)
    after_out = _snapshot(work, env.store)
    own = str(env_dir.relative_to(work))
    outside = sorted(
        k
        for k, v in after_out.items()
        if before_out.get(k) != v and not any(k == f"{own}/{a}" or k.startswith(f"{own}/{a}/") for a in allowed)
    )
    outside += [str(p) for p in absolute_victims if p.exists() and not existed[p]]
    outside += [f"outside/{p.name}" for p in env.outside.iterdir()] if not outside else []
    res = Result(case.name, "", code, line[:300], sorted(set(outside)))
    if "Traceback (most recent call last)" in stderr or code == 1:
        res.verdict, res.problem = "traceback", stderr.strip().splitlines()[-1][:300] if stderr.strip() else ""
    elif case.expect == "error":
        ok = code == case.code and (re.search(case.match, line) or re.search(case.match, stderr))
        res.verdict = "clear_error" if ok and len(lines) <= 2 else "silent_wrong"
        if not ok:
            res.problem = f"exit {code}, expected {case.code} with /{case.match}/; got {line!r}"
        if _store_state(env.store) != before_store:
            res.published_on_failure = True
    else:
        problem = None
        if code != 0:
            problem = f"exit {code}: {line}"
        elif case.match and not re.search(case.match, stdout):
            problem = f"output does not match /{case.match}/: {stdout[-200:]!r}"
        elif case.check:
            problem = case.check(env, stdout)
        res.verdict = ("counted" if case.expect == "counted" else "as_documented") if not problem else "silent_wrong"
        res.problem = problem or ""
    if case.check and case.expect == "error":
        problem = case.check(env, stdout)
        if problem:
            res.verdict, res.problem = "silent_wrong", problem
    shutil.rmtree(env_dir, ignore_errors=True)
    return res


def run_all(only: str | None = None, verbose: bool = False) -> tuple[dict, list[Result]]:
    logging.disable(logging.WARNING)  # stage logs are noise here; errors are what is judged
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="mmiris-bad-inputs-") as tmp:
        base = build_base(Path(tmp) / "base")
        for case in cases():
            if only and only not in case.name:
                continue
            r = run_case(case, base, Path(tmp))
            results.append(r)
            if verbose or r.verdict in ("traceback", "silent_wrong") or r.outside_writes or r.published_on_failure:
                print(
                    f"{r.verdict:<13} {r.case!r}: exit {r.code}: {r.line}"
                    + (f"  PROBLEM: {r.problem}" if r.problem else "")
                    + (f"  OUTSIDE: {r.outside_writes}" if r.outside_writes else "")
                    + ("  PUBLISHED ON FAILURE" if r.published_on_failure else ""),
                    flush=True,
                )
    logging.disable(logging.NOTSET)
    summary = {
        "cases": len(results),
        **{
            k: sum(r.verdict == k for r in results)
            for k in ("clear_error", "counted", "as_documented", "traceback", "silent_wrong")
        },
        "outside_store_writes": sum(bool(r.outside_writes) for r in results),
        "published_on_failure": sum(r.published_on_failure for r in results),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return summary, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="run the cases whose name contains this text")
    ap.add_argument("--verbose", action="store_true", help="print every case, not just the failures")
    ap.add_argument("--data", default=None, help="ignored: the corpus generates its own data")
    args = ap.parse_args(argv)
    summary, _ = run_all(args.only, args.verbose)
    print(json.dumps(summary))
    bad = (
        summary["traceback"]
        + summary["silent_wrong"]
        + summary["outside_store_writes"]
        + summary["published_on_failure"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
