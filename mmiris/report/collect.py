"""Gather what the report shows from the store: metrics per split and model, training logs,
and per-user explanation cards (recommendations + their explanation items + the relevance
of the user's whole history, recomputed with the model's attention)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.artifacts.store import Manifest
from mmiris.errors import MmirisError
from mmiris.recommend.catalogue import Catalogue, load_catalogue, user_source_ids

log = logging.getLogger("mmiris.report")

DISPLAY_NAMES = {
    "itempop": "ItemPop",
    "mf": "MF",
    "bpr_mf": "BPR-MF",
    "ease": "EASE",
    "vbpr": "VBPR",
    "ncf": "NCF",
    "neumf": "NeuMF",
    "gmf": "GMF",
    "mlp": "MLP",
    "fism": "FISM",
    "nais": "NAIS",
    "nais_prod": "NAIS (prod)",
    "nais_concat": "NAIS (concat)",
    "image_iris": "Image IRIS",
    "image_add_text_iris": "Image-add-Text IRIS",
    "multimodal_iris": "Multimodal IRIS",
}
NO_EMBEDDING = {"itempop", "ease"}  # closed-form: no embedding size to show
# Rows in the paper's order (Table II): baselines first, Multimodal IRIS last.
ORDER = [
    "itempop",
    "mf",
    "bpr_mf",
    "ease",
    "vbpr",
    "ncf",
    "gmf",
    "mlp",
    "neumf",
    "fism",
    "nais",
    "nais_concat",
    "nais_prod",
    "image_iris",
    "image_add_text_iris",
    "multimodal_iris",
]


def display_name(model: str) -> str:
    return DISPLAY_NAMES.get(model, model)


@dataclass
class ModelInfo:
    ref: str
    model: str  # registry name
    emb: int | None
    label: str  # what tables and legends show

    @property
    def order(self) -> tuple:
        return (ORDER.index(self.model) if self.model in ORDER else len(ORDER), self.model, self.emb or 0)


@dataclass
class MetricRow:
    model: ModelInfo
    protocol: str
    metric: str
    k: int
    value: float
    users: int


@dataclass
class Curve:
    model: ModelInfo
    steps: np.ndarray
    loss: np.ndarray
    val_epochs: np.ndarray  # where each validation ran, in (fractional) epochs
    val_hr10: np.ndarray


@dataclass
class Explanation:
    item: int
    title: str
    relevance: float
    poster: bytes | None


@dataclass
class CardRow:
    rank: int
    item: int
    title: str
    score: float
    poster: bytes | None
    explanations: list[Explanation]


@dataclass
class Card:
    user: int  # dense user_id
    history_size: int
    rows: list[CardRow]
    chart: tuple[list[str], list[str], np.ndarray] | None  # history labels, target labels, [T, H]
    source_id: str | None = None  # the user's id in the source data (e.g. MovieLens UserID)


@dataclass
class TuneRow:
    """The newest ``tune-<model>`` study of a split: what the report's tuning table shows."""

    ref: str
    model: str
    trials: dict  # state -> count (complete, pruned, fail)
    best_value: float | None  # validation HR@10 of the best trial
    best_params: dict


@dataclass
class SplitSection:
    split: str
    dataset: str  # a human description of where the data came from
    n_users: int | None
    n_items: int | None
    metrics: list[MetricRow] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    recommendations: str | None = None
    recommender: ModelInfo | None = None
    catalogue_sources: dict = field(default_factory=dict)
    tunes: list[TuneRow] = field(default_factory=list)
    new: NewCards | None = None  # "new this week": top-N among items that arrived after training


@dataclass
class NewCards:
    """Cards of a ``new_item_recommendations`` artifact (``mmiris recommend --new-items``)."""

    ref: str
    recommender: ModelInfo
    n_new: int  # new items ranked
    cards: list[Card]
    posters: bool  # an item_images artifact for the new items or the catalogue


def model_info(store: ArtifactStore, ref: str) -> ModelInfo:
    try:
        m = store.manifest(ref)
    except MmirisError:
        return ModelInfo(ref, ref.split("@")[0].removeprefix("model-"), None, ref)
    name = str(m.params.get("model") or m.name.removeprefix("model-"))
    emb = None if name in NO_EMBEDDING else (m.params.get("model_config") or {}).get("emb")
    return ModelInfo(str(m.ref), name, emb, display_name(name))


def _all(store: ArtifactStore, kind: str) -> list[Manifest]:
    return [m for name in store.names() for m in store.versions(name) if m.kind == kind]


def collect_metrics(store: ArtifactStore, metrics_refs: list[str] | None) -> dict[str, list[MetricRow]]:
    """Metric rows grouped by split ref; for a (model, split, protocol, metric, k) measured by
    several artifacts, the newest wins."""
    manifests = (
        [store.manifest(store.resolve(r)) for r in metrics_refs] if metrics_refs is not None else _all(store, "metrics")
    )
    best: dict[tuple, tuple[str, MetricRow, str]] = {}
    infos: dict[str, ModelInfo] = {}
    for m in sorted(manifests, key=lambda m: m.created_at):
        t = store.read_table(m.ref, "metrics").to_pylist()
        for r in t:
            info = infos.setdefault(r["model"], model_info(store, r["model"]))
            key = (r["model"], r["split"], r["protocol"], r["metric"], r["k"])
            best[key] = (
                r["split"],
                MetricRow(info, r["protocol"], r["metric"], int(r["k"]), float(r["value"]), int(r["users"])),
                m.created_at,
            )
    out: dict[str, list[MetricRow]] = {}
    for split, row, _ in best.values():
        out.setdefault(split, []).append(row)
    _disambiguate([r.model for rows in out.values() for r in rows])
    return out


def _disambiguate(infos: list[ModelInfo]) -> None:
    """Two versions of one model with the same label get their embedding size / version added."""
    by_label: dict[str, set[str]] = {}
    for i in infos:
        by_label.setdefault(i.label, set()).add(i.ref)
    for i in infos:
        if len(by_label[display_name(i.model)]) > 1 and i.label == display_name(i.model):
            embs = {x.emb for x in infos if x.label == i.label}
            i.label = f"{i.label} @{i.ref.split('@')[1][:6]}" if len(embs) <= 1 else i.label


def collect_tunes(store: ArtifactStore, split: str) -> list[TuneRow]:
    """Per tuned model, the newest ``tune`` artifact whose study ran on ``split``."""
    newest: dict[str, Manifest] = {}
    for m in _all(store, "tune"):
        if m.params.get("split") == split:
            model = str(m.params.get("model"))
            if model not in newest or m.created_at > newest[model].created_at:
                newest[model] = m
    rows = [
        TuneRow(
            str(m.ref),
            model,
            {s: int(m.stats.get(f"n_{s}", 0)) for s in ("complete", "pruned", "fail")},
            m.stats.get("best_value"),
            m.stats.get("best_params") or {},
        )
        for model, m in newest.items()
    ]
    return sorted(rows, key=lambda r: (ORDER.index(r.model) if r.model in ORDER else len(ORDER), r.model))


def collect_curves(store: ArtifactStore, infos: list[ModelInfo]) -> list[Curve]:
    curves = []
    for info in sorted(infos, key=lambda i: i.order):
        try:
            t = store.read_table(info.ref, "training_log").to_pydict()
        except MmirisError as exc:
            log.info("no training log for %s: %s", info.ref, exc)
            continue
        step = np.asarray(t["step"], dtype=np.int64)
        loss = np.array([np.nan if v is None else v for v in t["loss"]], dtype=np.float64)
        is_step = ~np.isnan(loss)
        metric = np.array([m or "" for m in t["metric"]])
        value = np.array([np.nan if v is None else v for v in t["value"]], dtype=np.float64)
        epoch = np.asarray(t["epoch"], dtype=np.int64)
        hr = metric == "hr10"
        if not is_step.any():
            continue  # closed-form models (ItemPop, EASE) have no training curve
        curves.append(Curve(info, step[is_step], loss[is_step], _epoch_position(epoch, step, is_step, hr), value[hr]))
    return curves


def _epoch_position(epoch: np.ndarray, step: np.ndarray, is_step: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Where each of ``rows`` (validations) ran, in epochs: e at the end of epoch e, e - 1 + f
    after a fraction f of its steps (``eval_steps`` validates inside epochs)."""
    out = epoch[rows].astype(np.float64)
    for i, (e, s) in enumerate(zip(epoch[rows], step[rows])):
        steps = step[is_step & (epoch == e)]
        if len(steps) and s < steps.max():
            first = steps.min() - 1
            out[i] = e - 1 + (s - first) / (steps.max() - first)
    return out


def describe_dataset(store: ArtifactStore, split: str) -> tuple[str, int | None, int | None]:
    try:
        m = store.manifest(split)
    except MmirisError:
        return split, None, None
    src = []
    for p in m.parents:
        try:
            pm = store.manifest(ArtifactRef.parse(p))
        except MmirisError:
            continue
        sources = pm.info.get("sources")
        if isinstance(sources, dict) and sources:  # ingested files: name them (no directories)
            names = ", ".join(str(v).replace("\\", "/").rsplit("/", 1)[-1] for v in sources.values())
            src.append(f"{pm.ref} from {names}")
        else:
            src.append(str(pm.info.get("source") or pm.params.get("source") or pm.ref))
    return "; ".join(src) or m.name, m.stats.get("n_users"), m.stats.get("n_items")


def pick_recommendations(store: ArtifactStore, split: str) -> Manifest | None:
    """The recommendations for ``split`` to show: with explanations first, then for every
    user (not a ``--user`` query's single row set), then the newest."""
    cands = [m for m in _all(store, "recommendations") if split in m.parents]
    if not cands:
        return None
    return max(
        cands,
        key=lambda m: (
            bool(m.stats.get("explained")),
            m.params.get("users") is None,
            int(m.stats.get("users", 0)),
            m.created_at,
        ),
    )


def collect_cards(
    store: ArtifactStore,
    recs: Manifest,
    users: list[int] | None,
    n_users: int,
    top: int,
    chart_items: int = 15,
    catalogue: dict | None = None,
) -> tuple[list[Card], Catalogue]:
    """``catalogue``: explicit ``items``/``item_text``/``item_images`` refs (else found by lineage)."""
    table = store.read_table(recs.ref, "recommendations")
    all_users = sorted(set(table.column("user_id").to_pylist()))
    chosen = [u for u in users if u in set(all_users)] if users else all_users[:n_users]
    missing = sorted(set(users or []) - set(chosen))
    if missing:
        log.warning("no recommendations for user(s) %s in %s", missing, recs.ref)
    rows = [r for r in table.to_pylist() if r["user_id"] in set(chosen) and r["rank"] <= top]
    model_ref = next((p for p in recs.parents if store.manifest(ArtifactRef.parse(p)).kind == "model"), None)
    model = _try_load(store, model_ref)
    # history items for the charts
    history: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    wanted = {r["item_id"] for r in rows} | {e["item_id"] for r in rows for e in (r["explanations"] or [])}
    for u in chosen:
        targets = [r["item_id"] for r in sorted(rows, key=lambda r: r["rank"]) if r["user_id"] == u]
        if model is not None and model.has_attention and targets:
            with torch.inference_mode():
                hist, a, mask = model.attention(torch.tensor([u]), torch.tensor([targets]))
            h = hist[0][mask[0]].numpy()
            w = a[0][:, mask[0]].float().numpy()
            keep = np.argsort(-w.max(0), kind="stable")[:chart_items]
            history[u] = (h[keep], w[:, keep])
            wanted |= set(h[keep].tolist())
    cat = load_catalogue(store, list(recs.parents), 0, image_ids=wanted, **(catalogue or {}))
    split_ref = next((p for p in recs.parents if store.manifest(ArtifactRef.parse(p)).kind == "split"), None)
    sources = user_source_ids(store, ArtifactRef.parse(split_ref))[1] if split_ref else []
    cards = []
    hist_len = model.history.lengths() if model is not None and model.history is not None else None
    for u in chosen:
        urows = sorted((r for r in rows if r["user_id"] == u), key=lambda r: r["rank"])
        crow = [
            CardRow(
                r["rank"],
                r["item_id"],
                cat.title(r["item_id"]),
                float(r["score"]),
                cat.images.get(r["item_id"]),
                [
                    Explanation(
                        e["item_id"], cat.title(e["item_id"]), float(e["relevance"]), cat.images.get(e["item_id"])
                    )
                    for e in (r["explanations"] or [])
                ],
            )
            for r in urows
        ]
        chart = None
        if u in history:
            h, w = history[u]
            chart = ([cat.title(i) for i in h], [f"#{r.rank} {r.title}" for r in crow], w)
        cards.append(
            Card(
                u,
                int(hist_len[u]) if hist_len is not None else 0,
                crow,
                chart,
                sources[u] if u < len(sources) else None,
            )
        )
    return cards, cat


def _try_load(store: ArtifactStore, model_ref: str | None):
    if model_ref is None:
        return None
    try:
        from mmiris.recommend import loader  # the module, so a test can hand it a model

        return loader.load_trained_model(store, ArtifactRef.parse(model_ref))
    except Exception as exc:  # noqa: BLE001 - the cards still show the stored explanations
        log.warning("cannot load %s for the relevance charts: %s", model_ref, exc)
        return None


NEW_ITEMS_KIND = "new_item_recommendations"


def pick_new_item_recommendations(store: ArtifactStore, split: str) -> Manifest | None:
    """The newest ``new_item_recommendations`` for ``split`` made for every user (else the
    newest made for some users, e.g. a ``--user`` query)."""
    cands = [m for m in _all(store, NEW_ITEMS_KIND) if split in m.parents]
    if not cands:
        return None
    return max(cands, key=lambda m: (m.params.get("users") is None, m.created_at))


def collect_new_cards(
    store: ArtifactStore,
    recs: Manifest,
    users: list[int] | None,
    n_users: int,
    top: int,
    catalogue: dict | None = None,
    prefer: list[int] | None = None,
) -> NewCards:
    """ "New this week" cards: per user the top ``top`` new items (title from their item_text,
    poster from their item_images: the artifact's direct parents) with the explanation items
    (titles and posters from the model's catalogue). ``users``: whose cards (default: the
    ``prefer`` that have rows, e.g. the users of the other cards, else the first ``n_users``)."""
    table = store.read_table(recs.ref, "recommendations")
    new = store.read_table(recs.ref, "new_items").to_pydict()
    own_id = dict(zip(new["item_id"], new["new_item_id"]))
    titles = {i: t or f"new item {n}" for i, n, t in zip(new["item_id"], new["new_item_id"], new["title"])}
    present = set(table.column("user_id").to_pylist())
    if users:
        chosen = [u for u in users if u in present]
    else:
        chosen = [u for u in prefer or [] if u in present][:n_users] or sorted(present)[:n_users]
    rows = [r for r in table.to_pylist() if r["user_id"] in set(chosen) and r["rank"] <= top]
    kinds = {p: store.manifest(ArtifactRef.parse(p)).kind for p in recs.parents}
    model_ref = next((p for p, k in kinds.items() if k == "model"), None)
    split_ref = next((p for p, k in kinds.items() if k == "split"), None)
    lineage = [p for p in (model_ref, split_ref) if p]  # not the new items' own item_text
    hist_ids = {e["item_id"] for r in rows for e in (r["explanations"] or [])}
    cat = load_catalogue(store, list(lineage), 0, image_ids=hist_ids, **(catalogue or {}))
    posters: dict[int, bytes] = {}
    img_ref = next((p for p, k in kinds.items() if k == "item_images"), None)
    if img_ref is not None:
        wanted = {own_id[r["item_id"]] for r in rows}
        t = store.read_table(ArtifactRef.parse(img_ref), "item_images", columns=["item_id", "image", "present"])
        by_own = {
            i: b for i, b, p in zip(*(t.column(c).to_pylist() for c in ("item_id", "image", "present"))) if p and b
        }
        back = {n: i for i, n in own_id.items()}
        posters = {back[n]: b for n, b in by_own.items() if n in wanted}
    sources = user_source_ids(store, ArtifactRef.parse(split_ref))[1] if split_ref else []
    cards = []
    for u in chosen:
        urows = sorted((r for r in rows if r["user_id"] == u), key=lambda r: r["rank"])
        crow = [
            CardRow(
                r["rank"],
                r["item_id"],
                titles.get(r["item_id"], f"item {r['item_id']}"),
                float(r["score"]),
                posters.get(r["item_id"]),
                [
                    Explanation(
                        e["item_id"], cat.title(e["item_id"]), float(e["relevance"]), cat.images.get(e["item_id"])
                    )
                    for e in (r["explanations"] or [])
                ],
            )
            for r in urows
        ]
        cards.append(Card(u, 0, crow, None, sources[u] if u < len(sources) else None))
    info = model_info(store, model_ref) if model_ref else ModelInfo(str(recs.ref), "?", None, "the model")
    return NewCards(
        str(recs.ref),
        info,
        int(recs.stats.get("new_items", len(own_id))),
        cards,
        img_ref is not None or "item_images" in cat.sources,
    )
