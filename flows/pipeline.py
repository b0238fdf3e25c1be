"""End-to-end flows: every stage as a subflow, linked only by artifact references.

``pipeline`` runs on real data (ingest -> crawl -> extract -> split -> train -> evaluate ->
recommend -> report); ``pipeline-demo`` runs the same chain on the embedded, generated demo
catalogue with the choices of ``mmiris demo`` (pipelines/demo.py), so both produce the same
artifact versions and either reuses what the other published. ``pipeline-new-items`` is the
weekly "new this week" chain for items that arrived after training (ingest new items ->
their features -> recommend among them -> report), with no retraining. Each stage is the
same flow a user can run alone, so it shows up in the UI as its own run with its logs and
artifacts; a re-run with the same inputs and parameters reuses every existing version and
says so.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from mmiris.artifacts import ArtifactStore
from mmiris.errors import MmirisError
from mmiris.flows.crawl import crawl_amazon_images_flow, crawl_omdb_flow
from mmiris.flows.dask_cluster import feature_cluster
from mmiris.flows.demo_data import demo_data_flow
from mmiris.flows.evaluate import evaluate_flow
from mmiris.flows.extract import (
    extract_image_features_flow,
    extract_new_item_features_flow,
    extract_text_features_flow,
)
from mmiris.flows.ingest import ingest_amazon_flow, ingest_movielens_flow, ingest_ncf_flow, ingest_new_items_flow
from mmiris.flows.recommend import recommend_flow
from mmiris.flows.report import report_flow
from mmiris.flows.split import split_flow
from mmiris.flows.stage_logs import forward_stage_logs
from mmiris.flows.train import train_flow
from mmiris.flows.ui_artifacts import show_refs
from mmiris.models import get_model_class
from mmiris.pipelines.compare import DEMO_NOTE, best_explainer, modalities_needed, settings_for
from mmiris.pipelines.demo import DemoOptions, feasible_negatives

INGEST_FLOWS: dict[str, Any] = {
    "movielens": ingest_movielens_flow,
    "ncf": ingest_ncf_flow,
    "amazon": ingest_amazon_flow,
}
DEMO = DemoOptions()
EXTRACT_FLOWS: dict[str, tuple[Any, str]] = {  # modality: (flow, its source parameter)
    "image": (extract_image_features_flow, "item_images"),
    "text": (extract_text_features_flow, "item_text"),
}


def extract_features(
    needs: set[str],
    sources: dict[str, str | None],
    encoders: dict[str, str],
    prefix: str,
    dask_address: str | None,
    workers: int | None,
    store: str | None,
) -> dict[str, str]:
    """``<prefix>image_features`` / ``<prefix>text_features`` for the modalities the models
    read, from ``sources`` (item_images / item_text refs), on one Dask cluster."""
    if not needs:
        return {}
    features = {}
    with feature_cluster(dask_address, workers) as address:
        for m in sorted(needs):  # image, then text
            source = sources.get(m)
            if source is None:  # modalities_needed made sure a source or a crawl provides it
                raise MmirisError(f"no item {m} artifact to extract {m} features from")
            extract, arg = EXTRACT_FLOWS[m]
            features[m] = extract(
                **{arg: source}, encoder=encoders[m], dask_address=address, name=f"{prefix}{m}_features", store=store
            )
    return features


def _settings(model: str, model_settings: dict | None) -> dict | None:
    kept, dropped = settings_for(model, model_settings)
    if dropped:
        get_run_logger().info("model %s has no setting(s) %s; not passing them", model, dropped)
    return kept


def model_stages(
    store: str | None,
    split: str,
    features: dict[str, str],
    models: list[str],
    model_settings: dict | None,
    train_settings: dict | None,
    recommend_with: str | None,
    top_n: int,
    explain_k: int,
    report_dir: str,
    title: str,
    notes: list[str] | None = None,
    cards: int = 3,
) -> dict[str, Any]:
    """train -> evaluate for each model, recommend with one, write the report."""
    log = get_run_logger()
    trained, metrics = {}, {}
    for name in models:
        reads = {m: features.get(m) for m in get_model_class(name).modalities}
        trained[name] = train_flow(
            split=split,
            model=name,
            model_settings=_settings(name, model_settings),
            train_settings=train_settings,
            image_features=reads.get("image"),
            text_features=reads.get("text"),
            store=store,
        )
        metrics[name] = evaluate_flow(model=trained[name], store=store)
    if recommend_with is None:  # as `mmiris demo`: the best attention model by sampled HR@10
        recommend_with, hr10 = best_explainer(ArtifactStore(store), metrics)
        log.info(
            "recommending with %s (sampled HR@10: %s)",
            recommend_with,
            ", ".join(f"{n} {v:.4f}" for n, v in hr10.items()),
        )
    if recommend_with not in trained:
        raise MmirisError(f"recommend_with={recommend_with!r} is not one of models {models}")
    recs = recommend_flow(model=trained[recommend_with], split=split, top_n=top_n, explain_k=explain_k, store=store)
    report = report_flow(
        out_dir=report_dir,
        metrics=list(metrics.values()),
        recommendations=[recs],
        n_users=cards,
        title=title,
        notes=notes,
        store=store,
    )
    return {"models": trained, "metrics": metrics, "recommendations": recs, "report": report}


def _flat(refs: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in refs.items():
        if isinstance(v, dict):
            out.update({f"{k}: {n}": r for n, r in v.items()})
        elif v and "@" in str(v):
            out[k] = str(v)
    return out


@flow(name="pipeline-demo")
def demo_pipeline_flow(
    n_users: int = DEMO.n_users,
    n_items: int = DEMO.n_items,
    seed: int = DEMO.seed,
    models: list[str] = list(DEMO.models),  # noqa: B006
    emb: int = DEMO.emb,
    epochs: int = DEMO.epochs,
    batch_size: int = DEMO.batch_size,
    lr: float = DEMO.lr,
    n_negatives: int = DEMO.n_negatives,
    image_encoder: str = DEMO.image_encoder,
    text_encoder: str = DEMO.text_encoder,
    workers: int | None = DEMO.feature_workers,
    dask_address: str | None = None,
    recommend_with: str | None = None,
    top_n: int = DEMO.top_n,
    explain_k: int = DEMO.explain_k,
    cards: int = DEMO.cards,
    report_dir: str = "mmiris-demo",
    store: str | None = None,
) -> dict[str, Any]:
    """The whole chain on the generated demo catalogue, as ``mmiris demo``: demo data ->
    split -> image and text features (only those the models read) -> train and evaluate
    each of ``models`` -> recommend (best attention model unless ``recommend_with``) ->
    report. Returns every artifact ref and the report path."""
    forward_stage_logs()
    needs = modalities_needed(models, {"image", "text"})
    data = demo_data_flow(n_users=n_users, n_items=n_items, seed=seed, name="demo", store=store)
    n_neg = feasible_negatives(ArtifactStore(store), data["interactions"], n_items, n_negatives)
    if n_neg < n_negatives:
        get_run_logger().info("small catalogue: %d sampled negatives per user instead of %d", n_neg, n_negatives)
    split = split_flow(interactions=data["interactions"], n_negatives=n_neg, seed=seed, name="demo-split", store=store)
    features = extract_features(
        needs,
        {"image": data["item_images"], "text": data["item_text"]},
        {"image": image_encoder, "text": text_encoder},
        "demo-",
        dask_address,
        workers,
        store,
    )
    train_settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "patience": epochs}
    out = {**data, "split": split, **{f"{m}_features": r for m, r in features.items()}}
    out |= model_stages(
        store,
        split,
        features,
        models,
        {"emb": emb},
        train_settings,
        recommend_with,
        top_n,
        explain_k,
        report_dir,
        "mmiris demo report",
        notes=[DEMO_NOTE],
        cards=cards,
    )
    show_refs(ArtifactStore(store), _flat(out), "pipeline demo")
    return out


@flow(name="pipeline")
def pipeline_flow(
    ingest: dict[str, Any],
    crawl: Literal["omdb", "amazon-images", "none"] = "omdb",
    crawl_params: dict[str, Any] | None = None,
    item_text: str | None = None,
    item_images: str | None = None,
    split_params: dict[str, Any] | None = None,
    image_encoder: str = "efficientnet-lite0",
    text_encoder: str = "minilm",
    models: list[str] = ["nais_prod", "multimodal_iris"],  # noqa: B006
    model_settings: dict[str, Any] | None = {"emb": 16},  # noqa: B006
    train_settings: dict[str, Any] | None = None,
    recommend_with: str | None = None,
    top_n: int = 10,
    explain_k: int = 3,
    report_dir: str = "mmiris-report",
    workers: int | None = None,
    dask_address: str | None = None,
    store: str | None = None,
) -> dict[str, Any]:
    """The whole chain on real data.

    ``ingest``: {"format": "ncf" | "movielens" | "amazon", ...the parameters of that ingest
    flow}, e.g. {"format": "movielens", "source": "ml-1m.zip"}. ``crawl``: OMDb (plots and
    posters; ``crawl_params`` go to the crawl-omdb flow, e.g. {"links": "links.csv"}), Amazon
    images (``image_url`` of the items), or none; only the modalities ``models`` read are
    crawled and extracted. ``item_text``/``item_images``: existing artifacts instead of
    crawling. The split comes from ingest (NCF) or the split flow (``split_params``).
    ``model_settings`` go to each model that has the field."""
    forward_stage_logs()
    ingest = dict(ingest)
    fmt = ingest.pop("format", None)
    if fmt not in INGEST_FLOWS:
        raise MmirisError(f"ingest.format {fmt!r}: expected one of {sorted(INGEST_FLOWS)}")
    will_have = {
        m for m, given in (("text", item_text or crawl == "omdb"), ("image", item_images or crawl != "none")) if given
    }
    needs = modalities_needed(models, will_have)
    data = INGEST_FLOWS[fmt](**ingest, store=store)
    crawled: dict[str, str] = {}
    if crawl == "omdb" and not ((item_text or "text" not in needs) and (item_images or "image" not in needs)):
        crawled = crawl_omdb_flow(items=data["items"], **(crawl_params or {}), dask_address=dask_address, store=store)
    elif crawl == "amazon-images" and "image" in needs and not item_images:
        crawled = crawl_amazon_images_flow(
            items=data["items"], **(crawl_params or {}), dask_address=dask_address, store=store
        )
    sources = {"image": item_images or crawled.get("item_images"), "text": item_text or crawled.get("item_text")}
    prefix = ingest.get("name_prefix", "")
    features = extract_features(
        needs, sources, {"image": image_encoder, "text": text_encoder}, prefix, dask_address, workers, store
    )
    split = data.get("split") or split_flow(
        interactions=data["interactions"], **{"name": f"{prefix}split", **(split_params or {})}, store=store
    )
    out = {**data, **crawled, "split": split, **{f"{m}_features": r for m, r in features.items()}}
    out |= model_stages(
        store,
        split,
        features,
        models,
        model_settings,
        train_settings,
        recommend_with,
        top_n,
        explain_k,
        report_dir,
        f"mmiris report ({fmt})",
    )
    show_refs(ArtifactStore(store), _flat(out), f"pipeline {fmt}")
    return out


@flow(name="pipeline-new-items")
def new_items_pipeline_flow(
    model: str = "model-hybrid_iris@latest",
    jsonl: str | None = None,
    images_dir: str | None = None,
    id_field: str = "movie_id",
    text_field: str = "Plot",
    title_field: str = "Title",
    name: str = "new",
    split: str | None = None,
    top_n: int = 10,
    explain_k: int = 3,
    users: list[int] | None = None,
    knn_share: float = 0.0,
    ensemble: list[str] | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    report_dir: str | None = "mmiris-report/new-items",
    store: str | None = None,
) -> dict[str, Any]:
    """ "New this week": items that arrived after training, ranked for every user by a model
    that scores an item from its content (hybrid_iris, vbpr, content_knn), with no retraining.

    The new items' records (``jsonl``; ``id_field``, ``text_field``, ``title_field``) and/or
    posters (``images_dir``) -> ``<name>_item_text`` / ``<name>_item_images`` -> their
    features with the encoders of ``model``'s own features (Dask) -> for every user (or
    ``users``) the top ``top_n`` among them, each with ``explain_k`` history items
    (``new-recommendations-<model>``) -> the report's "New this week" cards in ``report_dir``
    (None: no report). The same files again reuse every version. ``knn_share`` blends content
    kNN into the ranking and ``ensemble`` averages further models (same split and features,
    e.g. other seeds) with ``model``, as ``mmiris recommend --new-items`` does (docs/recommend.md)."""
    forward_stage_logs()
    content = ingest_new_items_flow(
        jsonl=jsonl,
        images_dir=images_dir,
        id_field=id_field,
        text_field=text_field,
        title_field=title_field,
        name=name,
        store=store,
    )
    new_items = list(content.values())
    features = extract_new_item_features_flow(
        model=model, new_items=new_items, split=split, workers=workers, dask_address=dask_address, store=store
    )
    recs = recommend_flow(
        model=model,
        split=split,
        top_n=top_n,
        explain_k=explain_k,
        users=users,
        new_items=new_items,
        knn_share=knn_share,
        ensemble=ensemble,
        store=store,
    )
    out: dict[str, Any] = {**content, **features, "recommendations": recs}
    if report_dir is not None:
        out["report"] = report_flow(
            out_dir=report_dir,
            metrics=[],  # the new items have no metrics: the page is their cards
            recommendations=[recs],
            users=users,
            title="mmiris: new this week",
            store=store,
        )
    show_refs(ArtifactStore(store), _flat(out), f"pipeline new items {name}")
    return out
