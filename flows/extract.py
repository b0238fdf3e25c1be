"""Flows: image and text features on Dask (pipelines/extract.py).

``dask_address`` (e.g. ``tcp://scheduler:8786``) runs the extraction on that cluster — GPU
workers declaring the Dask resource ``GPU`` get the model work; without it the stage starts
a LocalCluster of ``workers`` processes here. Encoders by registry name (offline defaults
``efficientnet-lite0`` and ``minilm``) or a local weights path; for items that arrived after
training, the encoders of a model's own features (pipelines/recommend.py ``plan_new_items``).
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.flows.dask_cluster import existing_cluster
from mmiris.flows.retry_policy import retry_unless_user_error
from mmiris.flows.stage_logs import forward_stage_logs, now
from mmiris.flows.ui_artifacts import finish_stage
from mmiris.pipelines.extract import extract_image_features, extract_text_features
from mmiris.pipelines.recommend import plan_new_items
from mmiris.recommend.new_items import FEATURE_KIND

# One retry: a Dask worker lost mid-run (node preempted, OOM-killed) is worth another go;
# a bad encoder name or input artifact (MmirisError) is not.
_RETRY: dict[str, Any] = dict(
    retries=1, retry_delay_seconds=10, retry_condition_fn=retry_unless_user_error, cache_policy=NO_CACHE
)

Device = Literal["auto", "cpu", "cuda"]


@task(name="extract-image-features", **_RETRY)
def extract_image_task(
    store: str | None,
    item_images: str,
    encoder: str,
    workers: int | None,
    batch_size: int | None,
    device: str,
    dask_address: str | None,
    name: str,
) -> str:
    with existing_cluster(dask_address) as client:
        return str(
            extract_image_features(
                ArtifactStore(store),
                item_images,
                encoder,
                client=client,
                workers=workers,
                batch_size=batch_size,
                device=device,
                name=name,
            )
        )


@task(name="extract-text-features", **_RETRY)
def extract_text_task(
    store: str | None,
    item_text: str,
    encoder: str,
    workers: int | None,
    batch_size: int | None,
    device: str,
    dask_address: str | None,
    name: str,
) -> str:
    with existing_cluster(dask_address) as client:
        return str(
            extract_text_features(
                ArtifactStore(store),
                item_text,
                encoder,
                client=client,
                workers=workers,
                batch_size=batch_size,
                device=device,
                name=name,
            )
        )


@task(name="extract-new-item-features", **_RETRY)
def extract_new_item_features_task(
    store: str | None,
    model: str,
    new_items: list[str],
    split: str | None,
    workers: int | None,
    dask_address: str | None,
) -> dict[str, str]:
    with existing_cluster(dask_address) as client:
        plan = plan_new_items(ArtifactStore(store), model, new_items, split, client=client, workers=workers)
    return {FEATURE_KIND[m]: str(ref) for m, ref in plan.features.items()}


@flow(name="extract-image-features")
def extract_image_features_flow(
    item_images: str = "item_images@latest",
    encoder: str = "efficientnet-lite0",
    workers: int | None = None,
    batch_size: int | None = None,
    device: Device = "auto",
    dask_address: str | None = None,
    name: str = "image_features",
    store: str | None = None,
) -> str:
    """Every item's image -> a pretrained feature vector (``image_features``)."""
    forward_stage_logs()
    started = now()
    ref = extract_image_task(store, item_images, encoder, workers, batch_size, device, dask_address, name)
    finish_stage(ArtifactStore(store), {"image_features": ref}, f"extract {name}", started)
    return ref


@flow(name="extract-text-features")
def extract_text_features_flow(
    item_text: str = "item_text@latest",
    encoder: str = "minilm",
    workers: int | None = None,
    batch_size: int | None = None,
    device: Device = "auto",
    dask_address: str | None = None,
    name: str = "text_features",
    store: str | None = None,
) -> str:
    """Every item's text -> a pretrained feature vector (``text_features``)."""
    forward_stage_logs()
    started = now()
    ref = extract_text_task(store, item_text, encoder, workers, batch_size, device, dask_address, name)
    finish_stage(ArtifactStore(store), {"text_features": ref}, f"extract {name}", started)
    return ref


@flow(name="extract-new-item-features")
def extract_new_item_features_flow(
    model: str,
    new_items: list[str],
    split: str | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    store: str | None = None,
) -> dict[str, str]:
    """Features of items that arrived after training (``new_items``: their item_text /
    item_images refs) for each modality ``model`` reads, with the encoders of the model's own
    features: ``new_items-image_features`` / ``new_items-text_features`` (an extraction of
    the same input with the same encoder is found, not redone). First checks that the model
    can score new items and that they are not in its catalogue."""
    forward_stage_logs()
    started = now()
    refs = extract_new_item_features_task(store, model, new_items, split, workers, dask_address)
    return finish_stage(ArtifactStore(store), refs, f"extract new item features {model.split('@')[0]}", started)
