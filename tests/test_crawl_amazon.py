"""Amazon product image downloads: content checks, reasons, faults, resumability."""

import hashlib

import pytest

from mmiris.artifacts import ArtifactStore
from mmiris.crawl.images import CorruptImage, inspect_image
from mmiris.http import HttpConfig
from mmiris.pipelines.crawl import crawl_amazon_images
from mmiris.testing.crawl import image_bytes, publish_items, write_posters
from mmiris.testing.omdb_server import Catalogue, Faults, OmdbServer

FAST = HttpConfig(timeout_s=1.0, backoff_s=0.01, backoff_jitter_s=0.01, max_backoff_s=0.05)


def test_inspect_image_decodes_by_content():
    assert inspect_image(image_bytes("PNG", (3, 4))).format == "PNG"
    info = inspect_image(image_bytes("JPEG", (5, 7)))
    assert (info.format, info.width, info.height) == ("JPEG", 5, 7)
    jpeg = image_bytes("JPEG", (64, 64))
    for bad in (b"", b"GIF89a-not-really", jpeg[: len(jpeg) // 2]):
        with pytest.raises(CorruptImage):
            inspect_image(bad)


def test_amazon_images_with_faults(tmp_path):
    files = write_posters(tmp_path / "posters")
    names = ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg", "missing.jpg", None, "6.jpg"]
    faults = Faults(http_5xx=0.2, http_429=0.1, truncated=0.2, timeout=0.05, hang_s=1.2, seed=5)
    with OmdbServer(Catalogue([], tmp_path / "posters"), faults=faults) as srv:
        rows = [
            {
                "item_id": i,
                "source_id": f"B00{i}",
                "title": None,
                "year": None,
                "image_url": (srv.url + "posters/" + n) if n else None,
            }
            for i, n in enumerate(names)
        ]
        store = ArtifactStore(tmp_path / "store")
        items = publish_items(store, rows, name="amazon-items")
        ref = crawl_amazon_images(store, items, cache_dir=tmp_path / "cache", workers=0, rate_per_s=None, http=FAST)
        stats = srv.log.stats()
        assert ref.name == "amazon-item_images"
        assert stats["successful_requests_repeated"] == 0
        assert any(k.startswith("fault:") for k in stats["by_outcome"]), stats
        got = {r["item_id"]: r for r in store.read_table(ref).to_pylist()}
        assert [got[i]["format"] for i in range(4)] == ["JPEG", "PNG", "TIFF", None]
        assert got[0]["image"] == files["1.jpg"]
        assert got[1]["sha256"] == hashlib.sha256(files["2.jpg"]).hexdigest()
        assert (got[1]["width"], got[1]["height"]) == (10, 15)
        assert [got[i]["reason"] for i in range(3, 7)] == ["image_corrupt", "image_corrupt", "http_404", "no_image_url"]
        assert [got[i]["present"] for i in range(8)] == [True, True, True, False, False, False, False, True]
        assert got[5]["source_url"].endswith("/posters/missing.jpg")
        m = store.manifest(ref)
        assert m.stats["present"] == 4 and m.stats["formats"] == {"JPEG": 2, "PNG": 1, "TIFF": 1}
        assert m.stats["missing_by_reason"] == {"http_404": 1, "image_corrupt": 2, "no_image_url": 1}

        sent = stats["requests"]
        assert crawl_amazon_images(store, items, cache_dir=tmp_path / "cache", workers=0, http=FAST) == ref
        other = ArtifactStore(tmp_path / "other")  # new store, same cache: all answers cached
        ref2 = crawl_amazon_images(
            other, publish_items(other, rows, name="amazon-items"), cache_dir=tmp_path / "cache", workers=0, http=FAST
        )
        assert srv.log.stats()["requests"] == sent
        assert other.read_table(ref2).to_pylist() == store.read_table(ref).to_pylist()


def test_cli_amazon(tmp_path, capsys):
    from mmiris.cli import main

    write_posters(tmp_path / "posters")
    with OmdbServer(Catalogue([], tmp_path / "posters")) as srv:
        store = ArtifactStore(tmp_path / "store")
        items = publish_items(
            store,
            [
                {"item_id": 0, "image_url": srv.url + "posters/2.jpg"},
                {"item_id": 1, "image_url": srv.url + "posters/4.jpg"},
            ],
            name="amazon-items",
        )
        assert (
            main(
                [
                    "--store",
                    str(tmp_path / "store"),
                    "crawl",
                    "amazon",
                    "--items",
                    str(items),
                    "--workers",
                    "0",
                    "--cache-dir",
                    str(tmp_path / "cache"),
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "item_images: amazon-item_images@" in out
    assert '"formats": {"PNG": 1}' in out and '"image_corrupt": 1' in out
