"""The embedded demo catalogue: contracts, determinism, missing modalities, and that its
content (the same latent factors posters and plots are drawn from) drives interactions."""

import io

import numpy as np
import pytest
from PIL import Image

from mmiris.artifacts import ArtifactStore
from mmiris.demo.synthetic import GENRES, DemoConfig, generate
from mmiris.pipelines.demo_data import generate_demo_dataset

SMALL = dict(n_users=60, n_items=40, seed=3)


def test_publishes_the_four_artifacts_real_data_produces(store):
    refs = generate_demo_dataset(store, **SMALL)
    kinds = {store.manifest(r).kind for r in (refs.interactions, refs.items, refs.item_images, refs.item_text)}
    assert kinds == {"interactions", "items", "item_images", "item_text"}

    inter = store.read_table(refs.interactions, "interactions")  # read_table validates the contract
    users = store.read_table(refs.interactions, "users")
    m = store.manifest(refs.interactions)
    assert m.stats["n_users"] == 60 and m.stats["n_items"] == 40
    assert m.stats["n_interactions"] == inter.num_rows
    u, i = inter.column("user_id").to_numpy(), inter.column("item_id").to_numpy()
    assert u.min() == 0 and u.max() == 59 and i.min() >= 0 and i.max() < 40
    assert users.num_rows == 60
    # implicit feedback: no duplicate (user, item); enough per user for leave-one-out
    assert len(set(zip(u.tolist(), i.tolist()))) == inter.num_rows
    assert np.bincount(u, minlength=60).min() >= 3

    items = store.read_table(refs.items)
    assert items.num_rows == 40 and items.column("title").null_count == 0
    assert all(g[0] in {x.name for x in GENRES} for g in items.column("genres").to_pylist())


def test_images_decode_and_some_items_miss_a_modality(store):
    refs = generate_demo_dataset(store, **SMALL, missing_image_rate=0.1, missing_text_rate=0.1)
    imgs = store.read_table(refs.item_images).to_pylist()
    texts = store.read_table(refs.item_text).to_pylist()
    assert len(imgs) == len(texts) == 40
    missing_img = [r for r in imgs if not r["present"]]
    missing_txt = [r for r in texts if not r["present"]]
    assert len(missing_img) == 4 and len(missing_txt) == 4
    assert all(r["image"] is None and r["reason"] for r in missing_img)
    assert all(r["text"] is None and r["reason"] for r in missing_txt)
    formats = set()
    for r in imgs:
        if r["present"]:
            img = Image.open(io.BytesIO(r["image"]))
            assert (img.width, img.height) == (r["width"], r["height"]) == (120, 180)
            assert img.format == r["format"]
            formats.add(img.format)
            # not a flat colour: a poster with a motif
            assert np.asarray(img.convert("L")).std() > 5
    assert formats == {"PNG", "JPEG"}
    assert all(len(r["text"].split()) >= 10 for r in texts if r["present"])


def test_same_seed_same_versions_and_bytes(tmp_path):
    a = generate_demo_dataset(ArtifactStore(tmp_path / "a"), **SMALL)
    b_store = ArtifactStore(tmp_path / "b")
    b = generate_demo_dataset(b_store, **SMALL)
    assert a == b  # same content hash version ids
    sa = ArtifactStore(tmp_path / "a")
    for ref, table in ((a.interactions, "interactions"), (a.item_images, None), (a.item_text, None), (a.items, None)):
        assert sa.read_table(ref, table).equals(b_store.read_table(ref, table))
    # a different seed gives different data
    c = generate(DemoConfig(**{**SMALL, "seed": 4}))
    d = generate(DemoConfig(**SMALL))
    assert not np.array_equal(c.items, d.items)


def test_second_call_finds_the_existing_versions(store):
    first = generate_demo_dataset(store, **SMALL)
    created = store.manifest(first.items).created_at
    again = generate_demo_dataset(store, **SMALL)
    assert again == first and store.manifest(again.items).created_at == created


def test_content_drives_interactions():
    c = generate(DemoConfig(n_users=200, n_items=150, seed=0))
    primary = c.primary_genre
    fav = c.user_taste.argmax(1)
    # share of a user's items whose primary genre is the user's favourite, vs chance
    hit = (primary[c.items] == fav[c.users]).mean()
    chance = np.mean([(primary == fav[u]).mean() for u in c.users])
    assert hit > 2.0 * chance, (hit, chance)
    # tone matters too: interacted items are closer to the user's tone than random items
    gap = np.abs(c.item_tone[c.items] - c.user_tone[c.users]).mean()
    rng = np.random.default_rng(0)
    rand_gap = np.abs(c.item_tone[rng.integers(0, 150, len(c.items))] - c.user_tone[c.users]).mean()
    assert gap < 0.7 * rand_gap, (gap, rand_gap)


def test_posters_and_plots_show_the_latent_genre():
    c = generate(DemoConfig(n_users=10, n_items=120, seed=1))
    # plots use the primary genre's vocabulary
    for i in range(120):
        if c.plots[i] is None or c.item_genres[i].max() < 1.0:
            continue
        g = GENRES[int(c.primary_genre[i])]
        assert any(who in c.plots[i] for who in g.characters)
    # mean poster colour separates genres: nearest genre centroid is right far above chance
    feats, labels = [], []
    for i, data in enumerate(c.posters):
        if data is not None:
            arr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)[:140]
            feats.append(np.concatenate([arr.mean((0, 1)), arr.std((0, 1))]))
            labels.append(c.primary_genre[i])
    feats, labels = np.array(feats), np.array(labels)
    cent = np.stack([feats[labels == k].mean(0) for k in range(len(GENRES))])
    pred = np.argmin(((feats[:, None] - cent[None]) ** 2).sum(-1), 1)
    assert (pred == labels).mean() > 0.5


def test_rejects_a_catalogue_too_small(store):
    with pytest.raises(ValueError):
        generate_demo_dataset(store, n_users=5, n_items=3)
