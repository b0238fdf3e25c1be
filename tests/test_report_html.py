"""The HTML report: built from real artifacts in a store, rendered in headless Chromium."""

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from mmiris.artifacts import Output
from mmiris.data.split import load_split
from mmiris.pipelines.demo_data import generate_demo_dataset
from mmiris.pipelines.recommend import recommend_output
from mmiris.pipelines.report import build_report
from tests.test_recommend_topn import TinyAttention

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _split(store, refs, n_neg=5):
    inter = store.read_table(refs.interactions, "interactions").to_pydict()
    n_users = store.manifest(refs.interactions).stats["n_users"]
    n_items = store.manifest(refs.interactions).stats["n_items"]
    rng = np.random.default_rng(0)
    per_user: dict[int, list[int]] = {}
    for u, i in zip(inter["user_id"], inter["item_id"]):
        per_user.setdefault(u, []).append(i)
    train, held = {"user_id": [], "item_id": []}, {"valid": [], "test": []}
    for u, items in sorted(per_user.items()):
        for i in items[:-2]:
            train["user_id"].append(u)
            train["item_id"].append(i)
        for part, item in (("valid", items[-2]), ("test", items[-1])):
            negs = rng.choice(sorted(set(range(n_items)) - set(items)), n_neg, replace=False).tolist()
            held[part].append({"user_id": u, "item_id": item, "negatives": negs})
    tables = {"train": pa.table(train), **{p: pa.Table.from_pylist(rows) for p, rows in held.items()}}
    return store.publish(
        "test-split",
        "split",
        Output(tables, stats={"n_users": n_users, "n_items": n_items}),
        parents=[refs.interactions],
        params={"seed": 0},
    )


def _model(store, split_ref, name, emb, losses):
    log = pa.table(
        {
            "epoch": pa.array([1 + s // 5 for s in range(len(losses))], pa.int32()),
            "step": pa.array(range(1, len(losses) + 1), pa.int64()),
            "loss": pa.array(losses, pa.float64()),
            "metric": pa.nulls(len(losses), pa.string()),
            "value": pa.nulls(len(losses), pa.float64()),
            "seconds": pa.array(np.linspace(0.1, 2.0, len(losses)), pa.float64()),
        }
    )
    epoch_rows = pa.table(
        {
            "epoch": pa.array([1, 2], pa.int32()),
            "step": pa.array([5, 10], pa.int64()),
            "loss": pa.nulls(2, pa.float64()),
            "metric": pa.array(["hr10", "hr10"]),
            "value": pa.array([0.3, 0.4]),
            "seconds": pa.array([1.0, 2.0]),
        }
    )
    return store.publish(
        f"model-{name}",
        "model",
        Output({"training_log": pa.concat_tables([log, epoch_rows])}, files={"model.pt": b"x"}),
        parents=[split_ref],
        params={"model": name, "model_config": {"emb": emb}},
    )


def _metrics(store, model_ref, split_ref, base):
    rows = [
        {
            "model": str(model_ref),
            "split": str(split_ref),
            "protocol": p,
            "metric": m,
            "k": k,
            "value": base * (1 if p == "sampled" else 0.5) * (1 if m == "hr" else 0.6) * (k / 20) ** 0.3,
            "users": 40,
        }
        for p in ("sampled", "full")
        for m in ("hr", "ndcg")
        for k in (5, 10, 20)
    ]
    ranks = pa.table(
        {
            "protocol": ["sampled"],
            "user_id": pa.array([0], pa.int64()),
            "item_id": pa.array([0], pa.int64()),
            "rank": pa.array([0], pa.int64()),
            "candidates": pa.array([6], pa.int64()),
        }
    )
    tables = {"metrics": pa.Table.from_pylist(rows)}
    from mmiris.artifacts.schema import load_contract

    if "ranks" in load_contract("metrics").tables:
        tables["ranks"] = ranks
    return store.publish(f"metrics-{model_ref.name}", "metrics", Output(tables), parents=[model_ref, split_ref])


@pytest.fixture()
def report_store(store, monkeypatch):
    refs = generate_demo_dataset(store, n_users=40, n_items=60, seed=1)
    split_ref = _split(store, refs)
    split = load_split(store, split_ref)
    m_attn = _model(store, split_ref, "multimodal_iris", 16, list(np.linspace(0.69, 0.3, 10)))
    m_nais = _model(store, split_ref, "nais_prod", 16, list(np.linspace(0.69, 0.4, 10)))
    _metrics(store, m_attn, split_ref, 0.8)
    _metrics(store, m_nais, split_ref, 0.7)
    model = TinyAttention(split.n_users, split.n_items, split.history(), seed=5)
    out = recommend_output(model, split, top_n=10, explain_k=3)
    rec_ref = store.publish(
        "recommendations-multimodal_iris", "recommendations", out, parents=[m_attn, split_ref], params={"top_n": 10}
    )
    # The cards recompute a_ij over the whole history with the model: hand them this one.
    monkeypatch.setattr("mmiris.recommend.loader.load_trained_model", lambda store, ref: model)
    return store, split_ref, rec_ref, model


def test_report_has_tables_curves_and_cards(report_store, tmp_path):
    store, split_ref, rec_ref, model = report_store
    path = build_report(store, tmp_path / "report", users=[3, 7])
    page = path.read_text()
    assert "Multimodal IRIS" in page and "NAIS (prod)" in page
    assert "like Table II" in page and "Embedding size 16" in page
    assert "0.8000" in page  # sampled HR@20 of the first model: 0.8 · 1 · 1
    assert "Training loss" in page and (tmp_path / "report/figures/loss-0.png").exists()
    # cards name the user by the source id users know, with the dense id beside it
    assert "User demo-user-00003 <span class='muted'>(user_id 3)</span>" in page
    assert "User demo-user-00007" in page and "demo-user-00000" not in page
    assert (tmp_path / "report/figures/relevance-0-3.png").exists()
    # recommendation and explanation titles come from the catalogue
    recs = store.read_table(rec_ref).to_pylist()
    items = store.read_table("demo-items", "items").to_pydict()
    titles = dict(zip(items["item_id"], items["title"]))
    first = next(r for r in recs if r["user_id"] == 3 and r["rank"] == 1)
    assert _esc(titles[first["item_id"]]) in page
    assert _esc(titles[first["explanations"][0]["item_id"]]) in page
    assert f"{first['score']:.3f}" in page
    # self-contained: no external resources, every image is a data: URI that decodes
    srcs = re.findall(r"src='([^']+)'", page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r"(href|src)=['\"]https?:", page)
    for s in srcs[:5]:
        Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).verify()


def _esc(t):
    import html

    return html.escape(t)


def test_report_renders_in_headless_chromium(report_store, tmp_path):
    assert CHROMIUM, "this test needs Debian's chromium: apt-get install -y chromium (.ci/run installs it)"
    store, *_ = report_store
    path = build_report(store, tmp_path / "report", users=[3])
    shot = tmp_path / "shot.png"
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    subprocess.run(
        base + [f"--screenshot={shot}", "--window-size=1280,2400", path.as_uri()],
        check=True,
        capture_output=True,
        timeout=60,
    )
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape[0] >= 2000 and img.std() > 20  # not blank
    # the posters and charts rendered: many distinct colours, not just text on white
    rgb = np.asarray(Image.open(shot).convert("RGB"))[::4, ::4].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 500
    dom = subprocess.run(
        base + ["--dump-dom", path.as_uri()], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert "mmiris report" in dom and "User demo-user-00003" in dom and "Comparison of methods" in dom
    assert dom.count("<img") >= 10
