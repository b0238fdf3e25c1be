"""The bad-input corpus (benchmarks/bad_inputs.py) as tests: every case must end in a clear
one-line error (exit 2, naming the file, field or option) or a counted treatment, with no
traceback, no write outside the store and nothing published on failure. One small base
store is built once and copied per case."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bad_inputs as corpus

CASES = corpus.cases()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return corpus.build_base(tmp_path_factory.mktemp("bad-inputs") / "base")


@pytest.fixture(autouse=True)
def _quiet_logs():
    import logging

    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def test_corpus_is_large_enough():
    assert len(CASES) >= 100
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, base, tmp_path):
    r = corpus.run_case(case, base, tmp_path)
    assert r.verdict in ("clear_error", "counted", "as_documented"), f"{r.verdict}: {r.problem or r.line}"
    assert r.outside_writes == []
    assert not r.published_on_failure


def test_debug_shows_the_traceback_of_a_user_error(base, tmp_path, capsys):
    from mmiris.cli import main

    store = str(base / "store")
    assert main(["--store", store, "artifacts", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert main(["--store", store, "--debug", "artifacts", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "error: no published version" in err


def test_internal_bug_keeps_its_traceback(base, capsys, monkeypatch):
    import mmiris.cli.artifacts as mod
    from mmiris.cli import main

    monkeypatch.setattr(mod, "_print_tree", lambda *a: 1 / 0)
    assert main(["--store", str(base / "store"), "artifacts", "lineage", "split"]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "Traceback" in err and "internal error" in err


def test_output_piped_into_head_is_quiet(base):
    """The reader of a pipe goes away before mmiris writes (as `| head` does): no
    BrokenPipeError traceback, exit 141 (128 + SIGPIPE, what a shell reports)."""
    code = "import sys; from mmiris.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.Popen(
        [sys.executable, "-c", code, "--store", str(base / "store"), "artifacts", "show", "split"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    p.stdout.close()  # closed long before the first write (the child is still importing)
    err = p.stderr.read().decode()
    rc = p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert rc == 141


def test_exit_codes_are_documented_in_help(capsys):
    from mmiris.cli import build_parser

    text = build_parser().format_help()
    for code in ("0", "1", "2", "130", "141"):
        assert f"\n  {code} " in text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "--debug" in readme and "141" in readme


def test_feature_records_join_through_the_items_source_ids(base, tmp_path):
    """Item 9 of issue 15: MovieLens movie ids are source ids; the dense item id is movie_id - 1
    here, and the join must say so rather than shift every vector by one."""
    import argparse
    import shutil

    from mmiris.artifacts import ArtifactStore
    from mmiris.cli.features import _id_map, _jsonl_ids
    from mmiris.pipelines.extract import texts_from_jsonl

    shutil.copytree(base / "store", tmp_path / "store")
    store = ArtifactStore(tmp_path / "store")
    path = tmp_path / "omdb.jsonl"
    path.write_text('{"movie_id": 1, "Plot": "first"}\n{"movie_id": 16, "Plot": "last"}\n')
    args = argparse.Namespace(ids="source", items=None, skip_unmatched=False)
    id_map = _id_map(store, args, _jsonl_ids(str(path), "movie_id"), str(path), "record(s) have movie_id values that")
    ref = texts_from_jsonl(store, path, id_map=id_map)
    t = store.read_table(ref, "item_text", columns=["item_id", "text"]).to_pydict()
    items = store.read_table("items", "items", columns=["item_id", "source_id"]).to_pydict()
    dense = dict(zip(items["source_id"], items["item_id"]))
    assert dict(zip(t["text"], t["item_id"])) == {"first": dense["1"], "last": dense["16"]}
    assert dense["1"] == 0 and dense["16"] == 15
    args.ids = "dense"
    assert _id_map(store, args, ["1"], str(path), "records") is None
