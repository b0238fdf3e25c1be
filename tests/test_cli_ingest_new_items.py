"""``mmiris ingest new-items``: records and/or posters of items that arrived after training ->
``<name>_item_text`` / ``<name>_item_images``, published together with the items' own ids; bad
input is one line (exit 2) and publishes nothing. The end-to-end run with ``mmiris recommend
--new-items`` is in tests/test_recommend_new_items.py (it needs a trained model)."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from mmiris.artifacts import ArtifactStore
from mmiris.cli import main
from mmiris.errors import InputError
from mmiris.ingest.folders import images_from_folder
from mmiris.pipelines.new_items import ingest_new_items

RECORDS = [
    {"movie_id": 101, "Title": "Night & Day", "Plot": "a love story at night", "Genre": "Romance"},
    {"movie_id": "102", "Title": "War", "Plot": "war and more war"},  # ids as text are ids too
    {"movie_id": 104, "Title": "Quiet", "Plot": "N/A"},  # no plot: kept, present false
]


def _jsonl(path, records=RECORDS, text=None):
    path.write_text(text if text is not None else "".join(json.dumps(r) + "\n" for r in records))
    return path


def _posters(folder, names=("101.png", "102.png", "103.jpg")):
    folder.mkdir()
    for k, n in enumerate(names):
        Image.new("RGB", (12, 16), (40 * k, 90, 200)).save(folder / n, "PNG")  # a .jpg may hold a PNG
    return folder


def _ingest(store, *args):
    return main(["--store", str(store), "ingest", "new-items", *map(str, args)])


def test_publishes_text_and_images_with_the_items_own_ids_and_prints_the_refs(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    _jsonl(tmp_path / "week48.jsonl")
    _posters(tmp_path / "posters-week48")
    monkeypatch.chdir(tmp_path)  # relative paths, as typed
    argv = ["--jsonl", "week48.jsonl", "--id-field", "movie_id", "--text-field", "Plot"]
    rc = _ingest(store, *argv, "--images-dir", "posters-week48/", "--name", "week48")
    out = capsys.readouterr().out
    assert rc == 0, out
    s = ArtifactStore(store)
    text, images = s.latest("week48_item_text"), s.latest("week48_item_images")
    assert f"item_text     {text}  (3 new items)" in out and f"item_images   {images}  (3 new items)" in out
    assert f"--new-items {text} {images}" in out  # what to pass to recommend
    t = s.read_table(text, "item_text").to_pydict()
    assert t["item_id"] == [101, 102, 104] and t["title"] == ["Night & Day", "War", "Quiet"]
    assert t["present"] == [True, True, False] and t["genre"][0] == "Romance"
    im = s.read_table(images, "item_images").to_pydict()
    assert im["item_id"] == [101, 102, 103] and im["format"] == ["PNG"] * 3
    assert im["source_url"][0] == (tmp_path / "posters-week48" / "101.png").as_uri()
    # one group: each manifest lists both; the source is the absolute path
    for ref in (text, images):
        m = s.manifest(ref)
        assert sorted(m.info["group"]) == sorted([str(text), str(images)])
    assert s.manifest(images).info["source"] == str(tmp_path / "posters-week48")
    # the same files again: the same versions, nothing new
    assert _ingest(store, *argv, "--images-dir", tmp_path / "posters-week48", "--name", "week48") == 0
    assert len(s.versions("week48_item_text")) == 1 and len(s.versions("week48_item_images")) == 1
    # the Python stage gives the same refs; one input alone publishes one artifact
    res = ingest_new_items(s, tmp_path / "week48.jsonl", tmp_path / "posters-week48", name="week48")
    assert res.refs() == [text, images]
    assert _ingest(store, "--images-dir", "posters-week48") == 0
    assert images_from_folder(s, "posters-week48/", name="rel") == s.latest("rel")  # the loader, relative too
    assert "new_item_images@" in capsys.readouterr().out and "new_item_text" not in s.names()


def test_title_field_names_the_field_holding_the_title(tmp_path, capsys):
    """``--title-field``: the titles the new-this-week table and report show come from the
    field named; a record without it has no title; another field is another version."""
    records = [
        {"id": 201, "name": "Dune: Part Three", "synopsis": "sand, again"},
        {"id": 202, "name": "Paddington 4", "synopsis": "a bear abroad"},
        {"id": 203, "synopsis": "no title yet"},
    ]
    store = tmp_path / "store"
    argv = ["--jsonl", _jsonl(tmp_path / "w.jsonl", records), "--id-field", "id", "--text-field", "synopsis"]
    assert _ingest(store, *argv, "--title-field", "name") == 0, capsys.readouterr().err
    s = ArtifactStore(store)
    ref = s.latest("new_item_text")
    t = s.read_table(ref, "item_text").to_pydict()
    assert t["item_id"] == [201, 202, 203] and t["title"] == ["Dune: Part Three", "Paddington 4", None]
    assert t["text"][0] == "sand, again" and s.manifest(ref).params["title_field"] == "name"
    assert _ingest(store, *argv, "--title-field", "synopsis") == 0
    other = s.latest("new_item_text")
    assert other != ref and s.read_table(other, "item_text").column("title").to_pylist()[0] == "sand, again"


def _write_bad(tmp_path, case):
    """The arguments of one bad input; every one has a good other input beside it where it can."""
    good_jsonl, good_dir = ["--jsonl", _jsonl(tmp_path / "good.jsonl")], ["--images-dir", _posters(tmp_path / "ok")]
    if case == "missing_file":
        return ["--jsonl", tmp_path / "nope.jsonl", *good_dir]
    if case == "missing_folder":
        return [*good_jsonl, "--images-dir", tmp_path / "nope"]
    if case == "malformed_line":
        return [
            "--jsonl",
            _jsonl(tmp_path / "w.jsonl", text='{"movie_id": 1, "Plot": "x"}\n\n{"movie_id": 2, "Plot"\n'),
            *good_dir,
        ]
    if case == "not_an_object":
        return ["--jsonl", _jsonl(tmp_path / "w.jsonl", text='{"movie_id": 1}\n[2, "x"]\n'), *good_dir]
    if case == "id_missing":
        return ["--jsonl", _jsonl(tmp_path / "w.jsonl", [{"movie_id": 1}, {"Title": "no id"}]), *good_dir]
    if case == "id_not_integer":
        return ["--jsonl", _jsonl(tmp_path / "w.jsonl", [{"movie_id": "tt0114709"}]), *good_dir]
    if case == "empty_file":
        return ["--jsonl", _jsonl(tmp_path / "w.jsonl", text="\n\n"), *good_dir]
    if case == "empty_folder":
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("not an image")
        return [*good_jsonl, "--images-dir", tmp_path / "empty"]
    if case == "duplicate_records":
        return ["--jsonl", _jsonl(tmp_path / "w.jsonl", [*RECORDS, {"movie_id": 102, "Plot": "again"}]), *good_dir]
    if case == "duplicate_images":
        return [*good_jsonl, "--images-dir", _posters(tmp_path / "dup", ("101.png", "102.png", "0102.jpg"))]
    if case == "image_name_not_an_id":
        return [*good_jsonl, "--images-dir", _posters(tmp_path / "named", ("101.png", "poster-a.png"))]
    if case == "title_field_unknown":  # every record has Title, none has title
        return [*good_jsonl, "--title-field", "title", *good_dir]
    if case == "text_field_unknown":  # every record has Plot, none has plot
        return [*good_jsonl, "--text-field", "plot", *good_dir]
    if case == "title_not_text":
        return ["--jsonl", _jsonl(tmp_path / "w.jsonl", [RECORDS[0], {"movie_id": 1917, "Title": 1917}]), *good_dir]
    if case == "no_input":
        return ["--name", "week48"]
    if case == "bad_name":
        return [*good_jsonl, "--name", "week 48"]
    raise AssertionError(case)


BAD = {
    "missing_file": r"text file .*nope\.jsonl: not found",
    "missing_folder": r"image folder .*nope: not a directory",
    "malformed_line": r"w\.jsonl:3: not a JSON object",
    "not_an_object": r"w\.jsonl:2: not a JSON object \(found '\[2, \"x\"\]'\)",
    "id_missing": r"w\.jsonl:2: field 'movie_id' missing",
    "id_not_integer": r"w\.jsonl:1: field 'movie_id' is 'tt0114709', expected an integer item id",
    "empty_file": r"w\.jsonl: no records; expected one JSON object per line",
    "empty_folder": r"image folder .*empty: no images; expected <item id>\.<ext>",
    "duplicate_records": r"w\.jsonl: movie_id 102 is on 2 records; expected one record per new item",
    "duplicate_images": r"image folder .*dup: item 102 is on 2 images \(0102\.jpg, 102\.png\); expected one image",
    "image_name_not_an_id": r"image file .*poster-a\.png: name 'poster-a' is not an integer item id",
    "title_field_unknown": r"good\.jsonl:1: field 'title' missing, and from every other record too \(expected the "
    r"item's title; this record has 'movie_id', 'Title', 'Plot', 'Genre'\)",
    "text_field_unknown": r"good\.jsonl:1: field 'plot' missing, and from every other record too \(expected the "
    r"item's text; this record has 'movie_id', 'Title', 'Plot', 'Genre'\)",
    "title_not_text": r"w\.jsonl:2: field 'Title' is 1917, expected the item's title as text",
    "no_input": r"expected --jsonl FILE and/or --images-dir FOLDER",
    "bad_name": r"new items name 'week 48'",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_publishes_nothing(tmp_path, capsys, case):
    store = tmp_path / "store"
    rc = _ingest(store, *_write_bad(tmp_path, case))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if " INFO " not in line]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mmiris ingest: error: ") and re.search(BAD[case], lines[0]), lines[0]
    assert not store.exists() or ArtifactStore(store).names() == []  # neither artifact, even the good one


def test_the_stage_refuses_no_input(tmp_path):
    with pytest.raises(InputError, match="expected a JSON-lines file of records and/or a folder of images"):
        ingest_new_items(ArtifactStore(tmp_path / "store"))
