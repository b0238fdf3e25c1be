"""``mmiris features`` end to end: raw folder / JSONL loaders, the CLI, its errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mmiris.cli import main


@pytest.fixture(scope="module")
def scheduler():
    from mmiris.cluster import local_cluster

    with local_cluster(workers=1, processes=False) as cluster:
        yield cluster.scheduler_address


def test_features_image_from_a_folder_decodes_by_content(tmp_path, scheduler, capsys):
    folder = tmp_path / "posters"
    folder.mkdir()
    Image.new("RGB", (40, 60), (9, 9, 9)).save(folder / "1.jpg", "JPEG")
    Image.new("RGB", (40, 60), (9, 90, 9)).save(folder / "2.jpg", "PNG")  # PNG named .jpg
    (folder / "3.jpg").write_bytes(b"broken")
    store = tmp_path / "store"
    rc = main(
        [
            "--store",
            str(store),
            "features",
            "image",
            "--images-dir",
            str(folder),
            "--encoder",
            "tiny-random-cnn",
            "--scheduler",
            scheduler,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("image_features@")
    assert "items=3 present=2" in out and '"corrupt_image": 1' in out

    from mmiris.artifacts import ArtifactStore

    s = ArtifactStore(store)
    images = s.read_table("item_images").to_pylist()
    assert [r["format"] for r in images] == ["JPEG", "PNG", None]
    # second run over the same artifact: found, not recomputed
    rc = main(
        [
            "--store",
            str(store),
            "features",
            "image",
            "--images",
            "item_images",
            "--encoder",
            "tiny-random-cnn",
            "--scheduler",
            scheduler,
        ]
    )
    assert rc == 0 and capsys.readouterr().out.split()[0] == out.split()[0]


def test_features_text_from_jsonl(tmp_path, scheduler, capsys):
    path = tmp_path / "omdb.jsonl"
    lines = [
        json.dumps({"movie_id": 1, "Title": "Toy Story", "Plot": "Toys come alive."}).encode(),
        json.dumps({"movie_id": 2, "Title": "X", "Plot": "N/A"}).encode(),
        '{"movie_id": 3, "Title": "Caf\xe9", "Plot": "Un caf\xe9."}'.encode("cp1252"),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rc = main(
        [
            "--store",
            str(tmp_path / "s"),
            "features",
            "text",
            "--jsonl",
            str(path),
            "--encoder",
            "tiny-random-bert",
            "--scheduler",
            scheduler,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("text_features@")
    assert "items=3 present=2" in out and '"no_plot": 1' in out


def test_skipped_unmatched_ids_are_counted_in_the_manifests(tmp_path, scheduler, capsys):
    """--skip-unmatched drops records and files whose source id names no item; how many (and
    which) is stored in the loaded artifact's stats and in the features built from it."""
    from mmiris.artifacts import ArtifactStore
    from mmiris.testing.crawl import publish_items

    store = ArtifactStore(tmp_path / "store")
    publish_items(store, [{"item_id": i, "source_id": str(i + 1), "title": f"M{i}", "year": 1990} for i in range(3)])
    path = tmp_path / "omdb.jsonl"
    recs = [(1, "One."), (999, "Gone."), (3, "Three."), (999, "Gone again."), (1234, "Also gone.")]
    path.write_text("".join(json.dumps({"movie_id": m, "Plot": p}) + "\n" for m, p in recs))
    args = ["--store", str(tmp_path / "store"), "features", "text", "--jsonl", str(path)]
    args += ["--encoder", "tiny-random-bert", "--scheduler", scheduler]
    rc = main(args)
    assert rc == 2 and "3 of 5 record(s)" in capsys.readouterr().err
    assert "item_text" not in store.names() and "text_features" not in store.names()
    rc = main([*args, "--skip-unmatched"])
    out = capsys.readouterr().out
    assert rc == 0 and "skipped 3 of 5 record(s)" in out
    assert "items=2 present=2" in out and "unmatched=3 (e.g. '999', '1234')" in out
    text = store.manifest("item_text")
    assert (text.stats["unmatched_ids"], text.stats["unmatched_examples"]) == (3, ["999", "1234"])
    assert store.read_table(text.ref, columns=["item_id"]).column("item_id").to_pylist() == [0, 2]
    feats = store.manifest(out.splitlines()[-1].split()[0])
    assert (feats.stats["unmatched_ids"], feats.stats["unmatched_examples"]) == (3, ["999", "1234"])

    folder = tmp_path / "posters"
    folder.mkdir()
    for stem in ("1", "2", "999"):
        Image.new("RGB", (40, 60), (9, 9, 9)).save(folder / f"{stem}.jpg", "JPEG")
    args = ["--store", str(tmp_path / "store"), "features", "image", "--images-dir", str(folder), "--skip-unmatched"]
    assert main([*args, "--encoder", "tiny-random-cnn", "--scheduler", scheduler]) == 0
    out = capsys.readouterr().out
    assert "items=2 present=2" in out and "unmatched=1 (e.g. '999')" in out
    first = store.manifest("item_images")
    assert (first.stats["unmatched_ids"], first.stats["unmatched_examples"]) == (1, ["999"])
    # Another file that matches nothing: the same rows, but a new input and a new count.
    Image.new("RGB", (40, 60), (9, 9, 9)).save(folder / "abc.jpg", "JPEG")
    assert main([*args, "--encoder", "tiny-random-cnn", "--scheduler", scheduler]) == 0
    out = capsys.readouterr().out
    assert "unmatched=2 (e.g. '999', 'abc')" in out
    second = store.manifest("item_images")
    assert second.ref != first.ref and second.stats["unmatched_ids"] == 2
    assert store.manifest(out.splitlines()[-1].split()[0]).stats["unmatched_ids"] == 2


def test_features_errors_are_one_line(tmp_path, capsys):
    rc = main(
        ["--store", str(tmp_path), "features", "image", "--images", "nothing@latest", "--encoder", "tiny-random-cnn"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "no published version of artifact 'nothing'" in err and "Traceback" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"movie_id": 1, "Plot": "ok"}\n{not json\n')
    rc = main(["--store", str(tmp_path), "features", "text", "--jsonl", str(bad)])
    assert rc == 2 and f"{bad}:2: not a JSON object" in capsys.readouterr().err
    rc = main(["--store", str(tmp_path), "features", "image", "--images", "x", "--encoder", "nope"])
    assert rc == 2 and "not a registered name" in capsys.readouterr().err


def test_features_encoders_lists_the_registry(capsys):
    assert main(["features", "encoders"]) == 0
    out = capsys.readouterr().out
    for name in ("efficientnet-lite0", "resnet50", "minilm", "bert-base-uncased", "doc2vec"):
        assert name in out
