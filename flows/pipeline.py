"""End-to-end flows: every stage as a subflow, linked only by artifact references.

``pipeline`` runs on real data (ingest -> crawl -> extract -> split -> train -> evaluate ->
recommend -> report); ``pipeline-demo`` runs the same chain on the embedded, generated demo
catalogue (no internet, a few minutes on 2 cores). Each stage is the same flow a user can
run alone, so every stage shows up in the UI as its own run with its logs and artifacts;
a re-run with the same inputs and parameters reuses every existing version and says so.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.crawl import crawl_amazon_images_flow, crawl_omdb_flow
from flows.dask_cluster import feature_cluster
from flows.demo_data import demo_data_flow
from flows.evaluate import evaluate_flow
from flows.extract import extract_image_features_flow, extract_text_features_flow
from flows.ingest import ingest_amazon_flow, ingest_movielens_flow, ingest_ncf_flow
from flows.recommend import recommend_flow
from flows.report import report_flow
from flows.split import split_flow
from flows.stage_logs import forward_stage_logs
from flows.train import train_flow
from flows.ui_artifacts import show_refs
from mmiris.artifacts import ArtifactStore
from mmiris.errors import MmirisError
from mmiris.models import get_model_class
from pipelines.evaluate import read_metrics

INGEST_FLOWS = {"movielens": ingest_movielens_flow, "ncf": ingest_ncf_flow,
                "amazon": ingest_amazon_flow}


def model_stages(store: str | None, split: str, features: dict[str, str | None],
                 models: list[str], model_settings: dict | None, train_settings: dict | None,
                 recommend_with: str | None, top_n: int, explain_k: int, report_dir: str,
                 title: str) -> dict[str, Any]:
    """train -> evaluate for each model, then recommend with one and write the report."""
    log = get_run_logger()
    for name in models:  # fail before hours of training, not after
        missing = [m for m in get_model_class(name).modalities if not features.get(m)]
        if missing:
            raise MmirisError(f"model {name} needs {' and '.join(missing)} features, which this "
                              "pipeline has none of")
    trained, metrics = {}, {}
    for name in models:
        reads = get_model_class(name).modalities
        trained[name] = train_flow(split=split, model=name, model_settings=model_settings,
                                   train_settings=train_settings,
                                   image_features=features["image"] if "image" in reads else None,
                                   text_features=features["text"] if "text" in reads else None,
                                   store=store)
        metrics[name] = evaluate_flow(model=trained[name], store=store)
    if recommend_with is None:  # the best model by sampled HR@10 on the test users
        s = ArtifactStore(store)
        scores = {n: read_metrics(s, ref).get("sampled", {}).get("hr10", 0.0)
                  for n, ref in metrics.items()}
        recommend_with = max(scores, key=scores.get)
        log.info("recommending with %s (best sampled HR@10: %s)", recommend_with,
                 ", ".join(f"{n} {v:.4f}" for n, v in scores.items()))
    if recommend_with not in trained:
        raise MmirisError(f"recommend_with={recommend_with!r} is not one of models {models}")
    recs = recommend_flow(model=trained[recommend_with], top_n=top_n, explain_k=explain_k,
                          store=store)
    report = report_flow(out_dir=report_dir, metrics=list(metrics.values()),
                         recommendations=[recs], title=title, store=store)
    return {"models": trained, "metrics": metrics, "recommendations": recs, "report": report}


def _flat(refs: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in refs.items():
        if isinstance(v, dict):
            out.update({f"{k}:{n}": r for n, r in v.items()})
        elif v and "@" in str(v):
            out[k] = str(v)
    return out


@flow(name="pipeline-demo")
def demo_pipeline_flow(n_users: int = 300, n_items: int = 200, seed: int = 0,
                       n_negatives: int = 99,
                       models: list[str] = ["fism", "nais_prod", "multimodal_iris"],  # noqa: B006
                       model_settings: dict[str, Any] | None = {"emb": 16},  # noqa: B006
                       train_settings: dict[str, Any] | None = {"epochs": 5},  # noqa: B006
                       image_encoder: str = "efficientnet-lite0", text_encoder: str = "minilm",
                       workers: int | None = None, dask_address: str | None = None,
                       recommend_with: str | None = None, top_n: int = 10, explain_k: int = 3,
                       report_dir: str = "mmiris-report/demo", name: str = "demo",
                       store: str | None = None) -> dict[str, Any]:
    """The whole chain on the generated demo catalogue: demo data -> split -> image and text
    features -> train, evaluate each of ``models`` -> recommend (best HR@10 unless
    ``recommend_with``) -> report. Returns every artifact ref and the report path."""
    forward_stage_logs()
    data = demo_data_flow(n_users=n_users, n_items=n_items, seed=seed, name=name, store=store)
    split = split_flow(interactions=data["interactions"], n_negatives=n_negatives, seed=seed,
                       name=f"{name}-split", store=store)
    with feature_cluster(dask_address, workers) as address:
        image = extract_image_features_flow(item_images=data["item_images"],
                                            encoder=image_encoder, dask_address=address,
                                            name=f"{name}-image_features", store=store)
        text = extract_text_features_flow(item_text=data["item_text"], encoder=text_encoder,
                                          dask_address=address, name=f"{name}-text_features",
                                          store=store)
    out = {**data, "split": split, "image_features": image, "text_features": text}
    out |= model_stages(store, split, {"image": image, "text": text}, models, model_settings,
                        train_settings, recommend_with, top_n, explain_k, report_dir,
                        f"mmiris demo ({n_users} generated users, {n_items} items)")
    show_refs(ArtifactStore(store), _flat(out), f"pipeline {name}")
    return out


@flow(name="pipeline")
def pipeline_flow(ingest: dict[str, Any],
                  crawl: Literal["omdb", "amazon-images", "none"] = "omdb",
                  crawl_params: dict[str, Any] | None = None,
                  item_text: str | None = None, item_images: str | None = None,
                  split_params: dict[str, Any] | None = None,
                  image_encoder: str = "efficientnet-lite0", text_encoder: str = "minilm",
                  models: list[str] = ["nais_prod", "multimodal_iris"],  # noqa: B006
                  model_settings: dict[str, Any] | None = {"emb": 16},  # noqa: B006
                  train_settings: dict[str, Any] | None = None,
                  recommend_with: str | None = None, top_n: int = 10, explain_k: int = 3,
                  report_dir: str = "mmiris-report", workers: int | None = None,
                  dask_address: str | None = None, store: str | None = None) -> dict[str, Any]:
    """The whole chain on real data.

    ``ingest``: {"format": "ncf" | "movielens" | "amazon", ...the parameters of that ingest
    flow}, e.g. {"format": "movielens", "source": "ml-1m.zip"}. ``crawl``: OMDb (plots and
    posters; ``crawl_params`` go to the crawl-omdb flow, e.g. {"links": "links.csv"}), Amazon
    images (``image_url`` of the items), or none. ``item_text``/``item_images``: existing
    artifacts instead of crawling. The split comes from ingest (NCF) or the split flow
    (``split_params``). Models missing a modality fail before any training starts."""
    forward_stage_logs()
    ingest = dict(ingest)
    fmt = ingest.pop("format", None)
    if fmt not in INGEST_FLOWS:
        raise MmirisError(f"ingest.format {fmt!r}: expected one of {sorted(INGEST_FLOWS)}")
    data = INGEST_FLOWS[fmt](**ingest, store=store)
    crawled: dict[str, str] = {}
    if crawl == "omdb" and not (item_text and item_images):
        crawled = crawl_omdb_flow(items=data["items"], **(crawl_params or {}),
                                  dask_address=dask_address, store=store)
    elif crawl == "amazon-images" and not item_images:
        crawled = crawl_amazon_images_flow(items=data["items"], **(crawl_params or {}),
                                           dask_address=dask_address, store=store)
    item_text = item_text or crawled.get("item_text")
    item_images = item_images or crawled.get("item_images")
    image = text = None
    with feature_cluster(dask_address, workers) as address:
        if item_images:
            image = extract_image_features_flow(item_images=item_images, encoder=image_encoder,
                                                dask_address=address, store=store)
        if item_text:
            text = extract_text_features_flow(item_text=item_text, encoder=text_encoder,
                                              dask_address=address, store=store)
    split = data.get("split") or split_flow(interactions=data["interactions"],
                                            **(split_params or {}), store=store)
    out = {**data, **crawled, "split": split, "image_features": image, "text_features": text}
    out |= model_stages(store, split, {"image": image, "text": text}, models, model_settings,
                        train_settings, recommend_with, top_n, explain_k, report_dir,
                        f"mmiris {fmt}")
    show_refs(ArtifactStore(store), _flat(out), f"pipeline {fmt}")
    return out
