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
