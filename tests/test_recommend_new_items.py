"""``mmiris recommend --new-items``: items that arrived after training, scored by a content-aware
model with its catalogue extended in memory, against a loop over the model's equations; the
refusal of models that cannot; bad inputs; the CLI table and the report's "new this week" card.

A tiny MovieLens-like catalogue (source ids are movieIds) with posters and plots, features from
the tiny random encoders, a hybrid_iris with random parameters published as a model artifact."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.schema import load_contract, validate
from mmiris.cli import main
from mmiris.data.modality import ItemModality
from mmiris.data.split import load_split
from mmiris.errors import MmirisError
from mmiris.models.build import build_model, load_features, model_bytes
from mmiris.pipelines.extract import (
    extract_image_features,
    extract_text_features,
    images_from_folder,
    texts_from_jsonl,
)
from mmiris.pipelines.ingest import ingest_movielens
from mmiris.pipelines.recommend import recommend_new_items
from mmiris.pipelines.report import build_report
from mmiris.pipelines.split import split_leave_one_out
from mmiris.recommend.catalogue import find_user
from mmiris.recommend.new_items import extend_catalogue, new_item_models

N_USERS, N_MOVIES, TOP, EXPLAIN = 16, 24, 3, 2
NASTY = "<b>Night & Day</b>"  # titles that must stay escaped in the report
WAR, QUIET = "War & <Peace>", "Quiet 'Plot' <i>"


def _poster(path, rng):
    Image.new("RGB", (48, 64), tuple(int(c) for c in rng.integers(0, 255, 3))).save(path, "PNG")


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _publish_model(store, split_ref, feat_refs, name, cfg, seed=1):
    split = load_split(store, split_ref)
    feats = load_features(store, feat_refs, split.n_items)
    torch.manual_seed(seed)
    model = build_model(name, cfg, split.n_users, split.n_items, split.history(), feats)
    with torch.no_grad():  # large random parameters: U_q, U_p and the attention far from 0
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    log = pa.table(
        {
            "epoch": pa.array([1], pa.int32()),
            "step": pa.array([1], pa.int64()),
            "loss": pa.array([0.5]),
            "metric": pa.nulls(1, pa.string()),
            "value": pa.nulls(1, pa.float64()),
            "seconds": pa.array([0.1]),
        }
    )
    ref = store.publish(
        f"model-{name}",
        "model",
        Output({"training_log": log}, files={"model.pt": model_bytes(model, model.state_dict())}),
        parents=[split_ref, *feat_refs],
        # another seed is another model (an artifact's ref is made of its inputs, not of its bytes)
        params={
            "model": name,
            "model_config": model.config.to_dict(),
            "train_config": {} if seed == 1 else {"seed": seed},
        },
    )
    return ref, model.eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mmiris.cluster import local_cluster

    tmp = tmp_path_factory.mktemp("new_items")
    rng = np.random.default_rng(0)
    ml = tmp / "ml"
    ml.mkdir()
    lines = []
    for u in range(1, N_USERS + 1):  # every movie rated by someone; 8 ratings per user
        movies = {(u * 3 + k) % N_MOVIES + 1 for k in range(3)} | set(rng.choice(N_MOVIES, 5, replace=False) + 1)
        lines += [f"{u}::{m}::{int(rng.integers(1, 6))}::{978300000 + 10 * k}" for k, m in enumerate(sorted(movies))]
    (ml / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="iso-8859-1")
    (ml / "movies.dat").write_text(
        "".join(f"{m}::Movie {m} (1995)::Drama\n" for m in range(1, N_MOVIES + 1)), encoding="iso-8859-1"
    )
    store = ArtifactStore(tmp / "store")
    res = ingest_movielens(store, ml)
    split_ref = split_leave_one_out(store, res.interactions, n_negatives=3)
    items = store.read_table(res.items, "items", columns=["item_id", "source_id"]).to_pydict()
    id_map = dict(zip(items["source_id"], items["item_id"]))
    posters = tmp / "posters"
    posters.mkdir()
    for m in range(1, N_MOVIES + 1):
        _poster(posters / f"{m}.png", rng)
    plots = [{"movie_id": m, "Title": f"Movie {m}", "Plot": f"story number {m} of love and war"} for m in id_map]
    cat_images = images_from_folder(store, posters, id_map=id_map)
    cat_text = texts_from_jsonl(store, _jsonl(tmp / "omdb.jsonl", plots), id_map=id_map)

    new_posters = tmp / "new_posters"
    new_posters.mkdir()
    for m in (101, 102, 103):  # 103 has a poster only, 104 a plot only
        _poster(new_posters / f"{m}.png", rng)
    new_plots = [
        {"movie_id": 101, "Title": NASTY, "Plot": "a love story at night"},
        {"movie_id": 102, "Title": WAR, "Plot": "war and more war"},
        {"movie_id": 104, "Title": QUIET, "Plot": "nothing happens, slowly"},
    ]
    with local_cluster(workers=1, processes=False) as cluster:
        sched = cluster.scheduler_address
        img_ref = extract_image_features(store, cat_images, "tiny-random-cnn", client=sched)
        txt_ref = extract_text_features(store, cat_text, "tiny-random-bert", client=sched)
        new_images = images_from_folder(store, new_posters, name="new_item_images")
        new_text = texts_from_jsonl(store, _jsonl(tmp / "new.jsonl", new_plots), name="new_item_text")
        cfg = {"emb": 8, "image_hidden": 6, "attention_size": 8}
        hybrid_ref, hybrid = _publish_model(store, split_ref, [img_ref, txt_ref], "hybrid_iris", cfg)
        rec_ref = recommend_new_items(
            store, hybrid_ref, [new_text, new_images], top_n=TOP, explain_k=EXPLAIN, client=sched
        )
        yield dict(
            tmp=tmp,
            store=store,
            sched=sched,
            split=split_ref,
            items=res.items,
            img=img_ref,
            txt=txt_ref,
            cat_text=cat_text,
            new_images=new_images,
            new_text=new_text,
            hybrid_ref=hybrid_ref,
            hybrid=hybrid,
            rec=rec_ref,
        )


# -- the reference: one (user, new item) at a time, from the model's parameters ------------------
def _towers(model, img, pv, txt, pt):
    """g = [v; t] of eq. 7–8 for one item from its raw features (a missing modality: zero)."""
    act = torch.relu
    v0, t0 = img * pv, txt * pt
    v1 = act(model.image1.weight @ v0 + model.image1.bias) * pv
    pre = model.image2.weight @ v1 + model.image2.bias
    tpre = model.text1.weight @ t0 + model.text1.bias
    if model.share_t2v is not None:
        share_v = model.share_v2t.weight if model.share_v2t is not None else model.share_t2v.weight
        pre, tpre = pre + model.share_t2v.weight @ t0, tpre + share_v @ v1
    return torch.cat([act(pre) * pv, act(tpre) * pt])


def _features(store, ref):
    t = store.read_table(ref, "features").to_pydict()
    dim = next(len(f) for f in t["feature"] if f is not None)
    return {
        i: (torch.tensor(f if f is not None else [0.0] * dim), float(p))
        for i, f, p in zip(t["item_id"], t["feature"], t["present"])
    }


def _reference(model, history, new_raw):
    """{(user, new id): (σ(r̂), {history item: a_ij})} with q_j = U_q g_j (Q_j = 0, b_j = 0) and
    the similarity term γ ĉ_i·ĉ_j."""
    with torch.no_grad():
        model = model.double()
        k, c = model.config.emb, model.config

        def g_old(i):
            return _towers(
                model,
                model.image_features[i],
                float(model.image_present[i]),
                model.text_features[i],
                float(model.text_present[i]),
            )

        def chat(img, pv, txt, pt):  # ĉ with the means and directions saved with the model
            if not c.content_similarity:
                return torch.zeros(0, dtype=torch.float64)
            parts = []
            for x, present, m in ((img, pv, "image"), (txt, pt, "text")):
                x = x.double() - getattr(model, f"{m}_content_mean")
                parts.append(x / x.norm() * float(present) * 2**-0.5 if float(present) else torch.zeros_like(x))
            return torch.cat(parts) @ model.content_basis

        def chat_old(i):
            return chat(model.image_features[i], model.image_present[i], model.text_features[i], model.text_present[i])

        gamma = model.sim_scale if c.content_similarity else 0.0
        out = {}
        for j, (img, pv, txt, pt) in new_raw.items():
            cj = chat(img, pv, txt, pt)
            gj = _towers(model, img.double(), pv, txt.double(), pt)
            qj = model.content_q.weight @ gj  # Q_j = 0 for a new item
            for u in range(model.n_users):
                hist = [int(i) for i in history.items_of(u)]
                es, ps = [], []
                for i in hist:
                    gi = g_old(i)
                    pi = model.P.weight[i] + model.content_p.weight @ gi
                    x = model.irn_bias + model.irn_p.weight @ pi + model.irn_q.weight @ qj
                    for n, m in enumerate(model.modalities):
                        x = x + model.irn_hist[m].weight @ gi[n * k : (n + 1) * k]
                        x = x + model.irn_target[m].weight @ gj[n * k : (n + 1) * k]
                    es.append(torch.dot(model.h.weight[0], torch.relu(x)))
                    ps.append(torch.dot(pi, qj) + gamma * torch.dot(chat_old(i), cj))  # p·q + γ ĉ_i·ĉ_j
                denom = sum(torch.exp(e) for e in es) ** c.beta
                a = [torch.exp(e) / denom for e in es]
                s = sum(ai * pq for ai, pq in zip(a, ps)) * len(hist) ** (-c.alpha)
                out[(u, j)] = (float(torch.sigmoid(s)), {i: float(ai) for i, ai in zip(hist, a)})
        model.float()
    return out


def test_new_items_are_scored_and_explained_as_the_equations_say(world):
    store, rec = world["store"], world["rec"]
    m = store.manifest(rec)
    assert m.kind == "new_item_recommendations" and m.stats["new_items"] == 4
    assert (m.stats["new_with_image"], m.stats["new_with_text"]) == (3, 3)
    table, new = store.read_table(rec, "recommendations"), store.read_table(rec, "new_items")
    contract = load_contract("new_item_recommendations")
    validate(table, contract, "recommendations", where="test")
    validate(new, contract, "new_items", where="test")
    n_items = store.manifest(world["split"]).stats["n_items"]
    new = new.to_pydict()
    assert new["new_item_id"] == [101, 102, 103, 104] and new["item_id"] == list(range(n_items, n_items + 4))
    assert new["title"] == [NASTY, WAR, None, QUIET]
    assert new["image"] == [True, True, True, False] and new["text"] == [True, True, False, True]
    # features extracted with the model's encoders, under their own name (not image_features@latest)
    kinds = {p: store.manifest(ArtifactRef.parse(p)) for p in m.parents}
    feats = {f.kind: f for f in kinds.values() if f.kind.endswith("_features")}
    assert feats["image_features"].params == store.manifest(world["img"]).params
    assert feats["text_features"].params == store.manifest(world["txt"]).params
    assert feats["image_features"].ref.name == "new_items-image_features"
    assert store.latest("image_features") == world["img"]

    img, txt = _features(store, feats["image_features"].ref), _features(store, feats["text_features"].ref)
    zero_i, zero_t = torch.zeros_like(next(iter(img.values()))[0]), torch.zeros_like(next(iter(txt.values()))[0])
    raw = {j: (*img.get(j, (zero_i, 0.0)), *txt.get(j, (zero_t, 0.0))) for j in new["new_item_id"]}
    split = load_split(store, world["split"])
    ref = _reference(world["hybrid"], split.history(), raw)
    own = dict(zip(new["item_id"], new["new_item_id"]))
    rows = table.to_pylist()
    assert sorted({r["user_id"] for r in rows}) == list(range(split.n_users))
    for u in range(split.n_users):
        mine = sorted((r for r in rows if r["user_id"] == u), key=lambda r: r["rank"])
        expected = sorted(raw, key=lambda j: -ref[(u, j)][0])[:TOP]
        assert [own[r["item_id"]] for r in mine] == expected
        np.testing.assert_allclose([r["score"] for r in mine], [ref[(u, j)][0] for j in expected], rtol=1e-4)
        for r in mine:  # explanations for new targets: the history items of largest a_ij
            a = ref[(u, own[r["item_id"]])][1]
            best = sorted(a, key=lambda i: -a[i])[:EXPLAIN]
            assert [e["item_id"] for e in r["explanations"]] == best
            np.testing.assert_allclose([e["relevance"] for e in r["explanations"]], [a[i] for i in best], rtol=1e-4)


def test_a_second_run_finds_everything_and_features_given_directly_are_used(world):
    store = world["store"]
    n_versions = len(store.versions("new_items-image_features"))
    again = recommend_new_items(
        store, world["hybrid_ref"], [world["new_images"], world["new_text"]], top_n=TOP, explain_k=EXPLAIN
    )
    assert again == world["rec"] and len(store.versions("new_items-image_features")) == n_versions
    # the new items' features, already extracted with the model's encoders, in place of their inputs
    feats = [
        p
        for p in store.manifest(world["rec"]).parents
        if store.manifest(ArtifactRef.parse(p)).kind.endswith("_features")
    ]
    direct = recommend_new_items(store, world["hybrid_ref"], feats, top_n=TOP, explain_k=EXPLAIN, users=[0, 1])
    a = store.read_table(direct, "recommendations").to_pylist()
    b = [r for r in store.read_table(world["rec"], "recommendations").to_pylist() if r["user_id"] in (0, 1)]
    assert [(r["user_id"], r["item_id"]) for r in a] == [(r["user_id"], r["item_id"]) for r in b]
    assert store.read_table(direct, "new_items").column("title").to_pylist()[0] == NASTY  # from the parent


def test_models_without_a_content_path_are_refused_by_name(world):
    store, split_ref = world["store"], world["split"]
    assert {"hybrid_iris", "vbpr", "content_knn"} <= set(new_item_models())
    assert not {"nais_prod", "nais_concat", "fism", "mf", "itempop", "ease", "multimodal_iris"} & set(new_item_models())
    nais_ref, _ = _publish_model(store, split_ref, [], "nais_prod", {"emb": 8})
    with pytest.raises(MmirisError, match=r"nais_prod\) cannot score new items.*content_knn, hybrid_iris, vbpr"):
        recommend_new_items(store, nais_ref, [world["new_text"]])
    mm_ref, _ = _publish_model(
        store, split_ref, [world["img"], world["txt"]], "multimodal_iris", {"emb": 8, "image_hidden": 6}
    )
    with pytest.raises(MmirisError, match=r"multimodal_iris\) cannot score new items: its attention reads .*q_j"):
        recommend_new_items(store, mm_ref, [world["new_text"]])
    off_ref, off = _publish_model(
        store,
        split_ref,
        [world["img"], world["txt"]],
        "hybrid_iris",
        {"emb": 8, "image_hidden": 6, "content_embeddings": False, "content_similarity": 0},
    )
    with pytest.raises(MmirisError, match="content_embeddings and content_similarity are off"):
        recommend_new_items(store, off_ref, [world["new_text"]])
    with pytest.raises(MmirisError, match="cannot score new items"):  # the library call refuses too
        extend_catalogue(off, {"text": ItemModality("text", torch.zeros(1, 32), torch.ones(1, dtype=torch.bool))})


def _extended_models(world, new_refs, refs: dict):
    """The published models ``refs`` (role -> ref), each with the split's histories and its
    catalogue extended by the new items; the split; the new items' ids [4]."""
    from mmiris.pipelines.recommend import plan_new_items
    from mmiris.recommend.loader import load_trained_model
    from mmiris.recommend.new_items import load_new_items

    store = world["store"]
    plan = plan_new_items(store, world["hybrid_ref"], new_refs, top_n=TOP, explain_k=EXPLAIN)
    new = load_new_items(store, plan.features, plan.contents, plan.cls.modalities)
    split = load_split(store, world["split"])
    models = {}
    for role, ref in refs.items():
        model = load_trained_model(store, ref)
        model.set_history(split.history())
        models[role] = extend_catalogue(model, new.features).eval()
    return models, split, torch.arange(split.n_items, split.n_items + 4)


def _z(row):
    """A row standardised (population std), by a loop; zeros if its values are all equal."""
    mean = sum(row) / len(row)
    std = (sum((v - mean) ** 2 for v in row) / len(row)) ** 0.5
    return [0.0 if std == 0 else (v - mean) / std for v in row]


def test_knn_share_ranks_by_the_blend_with_content_knn_and_keeps_the_models_scores(world):
    """``knn_share``: each user's new items ranked by (1 − s)·z_hybrid + s·z_kNN, z standardised
    over the user's 4 new items; checked against plain loops over the two extended models.
    Scores and explanations stay the hybrid's (the unblended run's, item for item)."""

    store, hybrid_ref, sched = world["store"], world["hybrid_ref"], world["sched"]
    new_refs = [world["new_text"], world["new_images"]]
    share = 0.6
    rec = recommend_new_items(store, hybrid_ref, new_refs, top_n=TOP, explain_k=EXPLAIN, client=sched, knn_share=share)
    m = store.manifest(rec)
    assert m.params["knn_share"] == share and m.stats["knn_share"] == share and rec != world["rec"]
    knn_ref = next(p for p in m.parents if p.startswith("model-content_knn@"))
    assert {world["split"], world["img"], world["txt"]} <= {
        ArtifactRef.parse(p) for p in store.manifest(knn_ref).parents
    }
    assert "knn_share" not in store.manifest(world["rec"]).params  # share 0: the model alone, as before

    models, split, cands = _extended_models(world, new_refs, {"hybrid": hybrid_ref, "knn": knn_ref})
    n_items, z = split.n_items, _z
    rows, plain = store.read_table(rec, "recommendations").to_pylist(), {}
    for r in store.read_table(world["rec"], "recommendations").to_pylist():
        plain[(r["user_id"], r["item_id"])] = r
    checked = 0
    for u in range(split.n_users):
        with torch.no_grad():
            h = models["hybrid"].scores(torch.tensor([u]), cands[None]).double()[0].tolist()
            k = models["knn"].scores(torch.tensor([u]), cands[None]).double()[0].tolist()
        mixed = [(1 - share) * a + share * b for a, b in zip(z(h), z(k))]
        want = sorted(range(4), key=lambda t: -mixed[t])[:TOP]
        mine = sorted((r for r in rows if r["user_id"] == u), key=lambda r: r["rank"])
        assert [r["item_id"] - n_items for r in mine] == want, u
        np.testing.assert_allclose([r["score"] for r in mine], [1 / (1 + np.exp(-h[t])) for t in want], rtol=1e-4)
        for r in mine:
            if (u, r["item_id"]) in plain:  # the same item in the model-alone top-N: same explanations
                assert r["explanations"] == plain[(u, r["item_id"])]["explanations"]
                checked += 1
    assert checked > 0
    # the blend moved some user's ranking: the test sees the kNN part at all
    assert any(
        [r["item_id"] for r in rows if r["user_id"] == u] != [r["item_id"] for r in plain.values() if r["user_id"] == u]
        for u in range(split.n_users)
    )
    with pytest.raises(MmirisError, match=r"--knn-share 1.5: expected a share of content kNN in \[0, 1\]"):
        recommend_new_items(store, hybrid_ref, new_refs, knn_share=1.5)
    with pytest.raises(MmirisError, match="is content kNN already"):
        recommend_new_items(store, knn_ref, new_refs, knn_share=0.5)
    vbpr_ref, _ = _publish_model(store, world["split"], [world["img"]], "vbpr", {"emb": 8})
    with pytest.raises(MmirisError, match="content kNN reads image and text features.*no text_features parent"):
        recommend_new_items(store, vbpr_ref, [world["new_images"]], knn_share=0.5, client=sched)


def test_ensemble_ranks_by_the_mean_of_the_members_and_keeps_the_models_scores(world):
    """``ensemble``: each user's new items ranked by the mean of the models' scores, each
    standardised over the user's 4 new items, with content kNN's share on top; checked against
    plain loops over the extended models. Scores and explanations stay the model's. Members on
    another split or other features, the model itself and models that cannot score new items
    are refused in one line."""

    store, hybrid_ref, sched = world["store"], world["hybrid_ref"], world["sched"]
    new_refs = [world["new_text"], world["new_images"]]
    cfg = {"emb": 8, "image_hidden": 6, "attention_size": 8}
    feats = [world["img"], world["txt"]]
    other_ref, _ = _publish_model(store, world["split"], feats, "hybrid_iris", cfg, seed=2)
    third_ref, _ = _publish_model(store, world["split"], feats, "hybrid_iris", cfg, seed=3)
    kw = dict(top_n=TOP, explain_k=EXPLAIN, client=sched)
    rec = recommend_new_items(store, hybrid_ref, new_refs, ensemble=[third_ref, other_ref], **kw)
    m = store.manifest(rec)
    assert m.params["ensemble"] == sorted([str(other_ref), str(third_ref)]) and m.stats["ensemble"] == 2
    assert {str(other_ref), str(third_ref)} <= set(m.parents) and rec != world["rec"]
    assert "ensemble" not in store.manifest(world["rec"]).params  # no members: the model alone, as before
    # the order of the members changes nothing: the same artifact
    assert recommend_new_items(store, hybrid_ref, new_refs, ensemble=[other_ref, third_ref], **kw) == rec
    share = 0.4
    with_knn = recommend_new_items(store, hybrid_ref, new_refs, ensemble=[other_ref], knn_share=share, **kw)
    knn_ref = next(p for p in store.manifest(with_knn).parents if p.startswith("model-content_knn@"))

    roles = {"hybrid": hybrid_ref, "other": other_ref, "third": third_ref, "knn": knn_ref}
    models, split, cands = _extended_models(world, new_refs, roles)
    n_items, z = split.n_items, _z
    plain = {(r["user_id"], r["item_id"]): r for r in store.read_table(world["rec"], "recommendations").to_pylist()}
    moved = 0
    for ref, weights in (
        (rec, {"hybrid": 1 / 3, "other": 1 / 3, "third": 1 / 3}),
        (with_knn, {"hybrid": 0.3, "other": 0.3, "knn": share}),
    ):
        rows = store.read_table(ref, "recommendations").to_pylist()
        for u in range(split.n_users):
            with torch.no_grad():
                zs = {r: z(models[r].scores(torch.tensor([u]), cands[None]).double()[0].tolist()) for r in weights}
                h = models["hybrid"].scores(torch.tensor([u]), cands[None]).double()[0].tolist()
            mixed = [sum(w * zs[r][t] for r, w in weights.items()) for t in range(4)]
            want = sorted(range(4), key=lambda t: -mixed[t])[:TOP]
            mine = sorted((r for r in rows if r["user_id"] == u), key=lambda r: r["rank"])
            assert [r["item_id"] - n_items for r in mine] == want, (ref, u)
            np.testing.assert_allclose([r["score"] for r in mine], [1 / (1 + np.exp(-h[t])) for t in want], rtol=1e-4)
            for r in mine:
                if (u, r["item_id"]) in plain:  # the same item in the model-alone top-N: same explanations
                    assert r["explanations"] == plain[(u, r["item_id"])]["explanations"]
            moved += [r["item_id"] for r in mine] != [
                r["item_id"] for r in sorted(plain.values(), key=lambda r: r["rank"]) if r["user_id"] == u
            ]
    assert moved > 0  # the members moved some user's ranking: the test sees them at all

    with pytest.raises(MmirisError, match="is the model itself or given twice"):
        recommend_new_items(store, hybrid_ref, new_refs, ensemble=[hybrid_ref])
    with pytest.raises(MmirisError, match="is the model itself or given twice"):
        recommend_new_items(store, hybrid_ref, new_refs, ensemble=[other_ref, other_ref])
    img_only, _ = _publish_model(store, world["split"], [world["img"]], "vbpr", {"emb": 8})
    with pytest.raises(MmirisError, match=r"it read the features image .*, the model image .*, text .*; every member"):
        recommend_new_items(store, hybrid_ref, new_refs, ensemble=[img_only])
    nais_ref, _ = _publish_model(store, world["split"], [], "nais_prod", {"emb": 8})
    with pytest.raises(MmirisError, match="cannot score new items"):
        recommend_new_items(store, hybrid_ref, new_refs, ensemble=[nais_ref])
    elsewhere = split_leave_one_out(store, store.manifest(world["split"]).parents[0], n_negatives=2)
    off_split, _ = _publish_model(store, elsewhere, feats, "hybrid_iris", cfg, seed=2)
    with pytest.raises(MmirisError, match=r"trained on split.*every member needs the same split"):
        recommend_new_items(store, hybrid_ref, new_refs, ensemble=[off_split])


def _empty_item_text(store):
    tc = load_contract("item_text").table("item_text")
    t = pa.table({c.name: pa.array([], c.arrow.to_arrow()) for c in tc.columns})
    return store.publish("empty_item_text", "item_text", Output({"item_text": t}), params={"empty": True})


def test_bad_new_items_are_clear_errors(world):
    store, model, tmp, sched = world["store"], world["hybrid_ref"], world["tmp"], world["sched"]
    clash = texts_from_jsonl(
        store, _jsonl(tmp / "clash.jsonl", [{"movie_id": 5, "Plot": "again"}, {"movie_id": 200, "Plot": "new"}])
    )
    with pytest.raises(
        MmirisError, match=r"1 of 2 new items are already in the catalogue.*source ids of items.*: 5 \(item_id"
    ):
        recommend_new_items(store, model, [clash])
    with pytest.raises(MmirisError, match="part of the model's own catalogue"):
        recommend_new_items(store, model, [world["cat_text"]])
    other = extract_text_features(store, world["new_text"], "tiny-random-bert", pooling="cls", client=sched, name="cls")
    with pytest.raises(MmirisError, match=r"encoder mismatch: .*differ in options"):
        recommend_new_items(store, model, [other])
    with pytest.raises(MmirisError, match="no items in them"):
        recommend_new_items(store, model, [_empty_item_text(store)])
    no_plot = texts_from_jsonl(store, _jsonl(tmp / "noplot.jsonl", [{"movie_id": 300, "Plot": "N/A"}]), name="noplot")
    with pytest.raises(MmirisError, match=r"1 of 1 new items have no image or text content.*300 \(text: no_plot\)"):
        recommend_new_items(store, model, [no_plot], client=sched)
    with pytest.raises(MmirisError, match="a 'split' artifact, expected item_text or item_images"):
        recommend_new_items(store, model, [world["split"]])
    with pytest.raises(MmirisError, match="two text artifacts"):
        recommend_new_items(store, model, [world["new_text"], clash])
    with pytest.raises(MmirisError, match="expected an item_text and/or an item_images"):
        recommend_new_items(store, model, [])


def _top_titles(store, rec, user):
    new = store.read_table(rec, "new_items").to_pydict()
    title = {i: t or f"new item {n}" for i, n, t in zip(new["item_id"], new["new_item_id"], new["title"])}
    rows = sorted(
        (r for r in store.read_table(rec, "recommendations").to_pylist() if r["user_id"] == user),
        key=lambda r: r["rank"],
    )
    return [title[r["item_id"]] for r in rows]


def test_cli_prints_one_users_new_items_and_refuses_in_one_line(world, capsys):
    store = world["store"]
    argv = ["--store", str(store.root), "recommend", "--model", str(world["hybrid_ref"]), "--new-items"]
    refs = [str(world["new_text"]), str(world["new_images"])]
    rc = main([*argv, *refs, "--user", "3", "--top-n", str(TOP), "--explain-k", str(EXPLAIN)])
    out = capsys.readouterr().out
    assert rc == 0, out
    dense, _ = find_user(store, world["split"], "3", None)
    assert f"New this week for user 3 (source id; dense user_id {dense})" in out
    assert f"from {world['rec']}" in out  # the full run, found: nothing scored again
    lines = [line for line in out.splitlines() if line[:4].strip().isdigit()]
    assert [line.split()[0] for line in lines] == [str(r) for r in range(1, TOP + 1)]
    for line, title in zip(lines, _top_titles(store, world["rec"], dense)):
        assert title in line
    assert out.count("↳") == TOP * EXPLAIN + 1  # explanations, and the legend
    rc = main([*argv, *refs, "--top-n", str(TOP), "--explain-k", str(EXPLAIN)])
    out = capsys.readouterr().out
    assert rc == 0 and f"new-item recommendations: {world['rec']}" in out
    assert f"{N_USERS} users × top-{TOP} of 4 new items (3 with an image, 3 with a text), {EXPLAIN} explanation" in out
    nais_ref, _ = _publish_model(store, world["split"], [], "nais_prod", {"emb": 8})  # found if published already
    rc = main([*argv[:4], str(nais_ref), "--new-items", str(world["new_text"])])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot score new items" in err and "Traceback" not in err
    rc = main([*argv[:5], "--knn-share", "0.5"])  # a blend of what? there are no new items
    err = capsys.readouterr().err
    assert rc == 2 and "--knn-share blends content kNN into the ranking of --new-items" in err
    rc = main([*argv, *refs, "--user", "3", "--top-n", str(TOP), "--explain-k", "0", "--knn-share", "0.6"])
    out = capsys.readouterr().out
    assert rc == 0 and "New this week for user 3" in out and out.count("↳") == 0
    rc = main([*argv[:5], "--ensemble", str(world["hybrid_ref"])])  # an ensemble of what? no new items
    err = capsys.readouterr().err
    assert rc == 2 and "--ensemble averages models over the ranking of --new-items" in err


def test_cli_ingest_new_items_then_recommend_them(world, capsys):
    """``mmiris ingest new-items`` publishes the files the fixture published from Python; the refs
    it prints, given to ``mmiris recommend --new-items``, rank the same items as the fixture."""
    store, tmp = world["store"], world["tmp"]
    rc = main(
        ["--store", str(store.root), "ingest", "new-items", "--jsonl", str(tmp / "new.jsonl")]
        + ["--images-dir", str(tmp / "new_posters"), "--name", "week48"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    refs = out.split("--new-items ", 1)[1].split()
    assert refs == [str(store.latest("week48_item_text")), str(store.latest("week48_item_images"))]
    argv = ["--store", str(store.root), "recommend", "--model", str(world["hybrid_ref"]), "--new-items", *refs]
    rc = main([*argv, "--top-n", str(TOP), "--explain-k", str(EXPLAIN), "--scheduler", world["sched"]])
    out = capsys.readouterr().out
    assert rc == 0, out
    rec = ArtifactRef.parse(out.split("new-item recommendations: ", 1)[1].split()[0])
    assert rec != world["rec"] and set(map(str, refs)) <= set(store.manifest(rec).parents)
    for table in ("recommendations", "new_items"):  # same items, same content: the same ranking
        got, want = store.read_table(rec, table).to_pylist(), store.read_table(world["rec"], table).to_pylist()
        assert [{k: v for k, v in r.items() if k != "score"} for r in got] == [
            {k: v for k, v in r.items() if k != "score"} for r in want
        ]
        if table == "recommendations":
            assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-6)


def test_report_shows_a_new_this_week_card_escaped(world, tmp_path):
    import html

    store, rec = world["store"], world["rec"]
    user = 0
    shown = _top_titles(store, rec, user)[:2]
    page = build_report(store, tmp_path / "report", users=[user], top=2).read_text()
    assert f"id='new-user-{user}'" in page and "New this week for user" in page
    assert "on 4 items that arrived after training" in page
    for title in shown:
        assert html.escape(title) in page
    assert NASTY not in page and WAR not in page and QUIET not in page
    assert page.count("class='rec'") == 2 and page.count("class='rel'") == 2 * EXPLAIN
    assert "data:image/jpeg;base64" in page  # posters: the new items' and the history items'


# -- the extension itself, on in-memory models --------------------------------------------------
def _tiny(name, **cfg):
    from test_models_reference import make, tiny_data

    history, _, _, feats = tiny_data(seed=3)
    return make(name, history, feats, **cfg), history


def _new_feats(model, n=3, seed=7):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in model.modalities:
        present = torch.tensor([True, False, True][:n])
        out[m] = ItemModality(m, torch.randn(n, model.features[m].dim, generator=g) * present[:, None], present)
    return out


@pytest.mark.parametrize(
    "name, cfg",
    [("hybrid_iris", {}), ("hybrid_iris", {"content_metric": True}), ("vbpr", {})],
    ids=["hybrid_iris", "hybrid_iris_metric", "vbpr"],
)
def test_extension_keeps_old_items_and_gives_new_items_zero_rows(name, cfg):
    model, _ = _tiny(name, **cfg)
    model.eval()
    ext = extend_catalogue(model, _new_feats(model))
    assert ext.n_items == model.n_items + 3
    users = torch.arange(model.n_users)
    old = torch.arange(model.n_items).expand(model.n_users, -1)
    with torch.no_grad():
        torch.testing.assert_close(ext.scores(users, old), model.scores(users, old))
        for key in type(model).item_rows:
            assert torch.equal(
                ext.state_dict()[key][model.n_items :], torch.zeros_like(ext.state_dict()[key][model.n_items :])
            )
        if cfg.get("content_metric"):  # the learned projections carry over; a new item is projected by M_q
            assert torch.equal(ext.metric_p, model.metric_p) and torch.equal(ext.metric_q, model.metric_q)
            new = torch.arange(model.n_items, ext.n_items)
            chat = ext.content_similarity_vectors(new)
            d = model.config.content_similarity
            assert chat.shape == (3, 2 * d) and not torch.equal(chat[:, :d], chat[:, d:])


def test_hybrid_iris_ranks_new_items_by_the_learned_similarity_when_asked():
    """new_items="similarity": an item added after training is scored γ n^-(α+β) Σ_i ĉ_i·ĉ_j by
    a loop over the users' histories (ĉ_i = c_i M_p, ĉ_j = c_j M_q), the old items as before, and
    its explanations are the history items with the largest shares of that sum."""
    from mmiris.recommend.explain import explain

    model, history = _tiny("hybrid_iris", content_metric=True, new_items="similarity")
    model.eval()
    ext = extend_catalogue(model, _new_feats(model))
    d, c = model.config.content_similarity, model.config
    users = torch.arange(model.n_users)
    old = torch.arange(model.n_items).expand(model.n_users, -1)
    new = (model.n_items + torch.arange(3)).expand(model.n_users, -1)
    with torch.no_grad():
        torch.testing.assert_close(ext.scores(users, old), model.scores(users, old))
        chat = ext.content_similarity_vectors(torch.arange(ext.n_items))
        got = ext.scores(users, new)
        full = ext.score_all(users)
        for u in range(model.n_users):
            hist = [int(i) for i in history.items_of(u)]
            for t, j in enumerate(new[u].tolist()):
                share = {i: float(ext.sim_scale * chat[i, :d] @ chat[j, d:]) for i in hist}
                want = sum(share.values()) * len(hist) ** -(c.alpha + c.beta) if hist else 0.0
                assert abs(float(got[u, t]) - want) < 1e-4 * max(1.0, abs(want)), (u, j)
                assert abs(float(full[u, j]) - want) < 1e-4 * max(1.0, abs(want)), (u, j)
                if len(hist) >= 2:
                    ids, rel = explain(ext, torch.tensor([u]), torch.tensor([[j]]), 2)
                    top = sorted(share.values(), reverse=True)[:2]  # ties (a new item without content): any order
                    assert [share[i] for i in ids[0, 0].tolist()] == top
                    scale = len(hist) ** -(c.alpha + c.beta)
                    torch.testing.assert_close(rel[0, 0], torch.tensor(top) * scale, rtol=1e-4, atol=1e-6)


def test_vbpr_new_item_score_is_its_visual_part():
    model, _ = _tiny("vbpr")
    new = _new_feats(model)
    ext = extend_catalogue(model, new)
    users = torch.arange(model.n_users)
    with torch.no_grad():
        got = ext.scores(users, (model.n_items + torch.arange(3)).expand(model.n_users, -1))
        f = new["image"].features
        want = (
            model.theta_user.weight @ (model.E.weight @ f.t())  # θ_u·(E f_j)
            + (model.visual_bias.weight @ f.t())  # β'·f_j
            + model.user_bias[:, None]
            + model.global_bias  # γ_j = 0, b_j = 0
        )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_content_knn_new_item_score_is_the_mean_cosine_over_the_history():
    model, history = _tiny("content_knn")
    new = _new_feats(model)
    ext = extend_catalogue(model, new)
    blocks = []
    for m, w in (("image", 0.5), ("text", 0.5)):  # centred over the extended catalogue's present items
        x = torch.cat([model.features[m].features, new[m].features]).double()
        p = torch.cat([model.features[m].present, new[m].present])
        x = torch.where(p[:, None], x - x[p].mean(0), torch.zeros_like(x))
        blocks.append(torch.nn.functional.normalize(x, dim=1) * w**0.5)
    c = torch.cat(blocks, dim=1)
    users = torch.arange(model.n_users)
    with torch.no_grad():
        got = ext.scores(users, (model.n_items + torch.arange(3)).expand(model.n_users, -1))
    for u in range(model.n_users):
        hist = [int(i) for i in history.items_of(u)]
        for t in range(3):
            j = model.n_items + t
            want = sum(float(c[i] @ c[j]) for i in hist) / len(hist) if hist else 0.0
            assert abs(float(got[u, t]) - want) < 1e-5
