"""The README's data-engineer queries, run exactly as written against a store built here
(so the README and the store layout cannot drift apart)."""

import contextlib
import io
import re
from pathlib import Path

import duckdb
import pytest

from mmiris.artifacts import ArtifactStore
from mmiris.pipelines.ingest import ingest_movielens
from mmiris.pipelines.split import split_leave_one_out
from tests.test_ingest_movielens import write_ml1m

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("<!-- queries:begin -->") : text.index("<!-- queries:end -->")]
    return re.findall(r"```(sql|python)\n(.*?)```", section, flags=re.S)


@pytest.fixture()
def store_dir(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path / "mmiris-store")
    res = ingest_movielens(store, write_ml1m(tmp_path / "ml-1m"))
    split = split_leave_one_out(store, res.interactions, n_negatives=1, seed=0)
    # a crashed local publish can leave a manifest in _staging: the queries must skip it
    leftover = tmp_path / "mmiris-store" / "_staging" / "items-crashed"
    leftover.mkdir(parents=True)
    (leftover / "manifest.json").write_bytes(
        (tmp_path / "mmiris-store" / "items" / res.items.version / "manifest.json")
        .read_bytes()
        .replace(res.items.version.encode(), b"crashed0crashed0")
    )
    monkeypatch.chdir(tmp_path)
    return store, res, split


def test_readme_has_the_queries():
    kinds = [k for k, _ in readme_blocks()]
    assert kinds.count("sql") >= 3 and kinds.count("python") >= 1
    for _, code in readme_blocks():
        assert "mmiris." not in code and "import mmiris" not in code


def test_readme_queries_run_against_a_real_store(store_dir):
    store, res, split = store_dir
    sql = [code for kind, code in readme_blocks() if kind == "sql"]
    con = duckdb.connect()

    versions = con.execute(sql[0]).fetchall()
    assert {(r[0], r[1]) for r in versions} == {
        (res.interactions.name, res.interactions.version),
        (res.items.name, res.items.version),
        (split.name, split.version),
    }

    top = con.execute(sql[1]).fetchall()
    # Toy Story (item 0) was rated by all 3 users
    assert top[0][:2] == (0, "Toy Story (1995)") and top[0][3] == 3
    assert sum(r[3] for r in top) == 9

    test_rows = con.execute(sql[2]).fetchall()
    assert [r[0] for r in test_rows] == [0, 1, 2] and all(r[2] == 1 for r in test_rows)

    stats = con.execute(sql[3]).fetchall()
    assert stats == [(res.interactions.version, 3, 9, 0)]

    for code in [c for kind, c in readme_blocks() if kind == "python"]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
        assert "Toy Story (1995)" in out.getvalue() and res.interactions.version in out.getvalue()
