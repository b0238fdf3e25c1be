"""mmiris: Multimodal IRIS recommender and the data system around it.

The Python API (docs/python-api.md): the stage functions every CLI command and Prefect flow
calls, plus ``open_store`` and a one-call comparison for notebooks::

    import mmiris

    store = mmiris.open_store("./mmiris-store")
    data = mmiris.generate_demo_dataset(store, n_users=60, n_items=40)
    split = mmiris.split_leave_one_out(store, data.interactions, n_negatives=20)
    mmiris.compare(split, models=["itempop", "fism", "nais_prod"], store=store)

Every name below is loaded on first use, so ``import mmiris`` stays cheap (no torch, no
pandas) and the command line starts fast. (Type checkers see them as ``Any``: importing the
stage layer here for them would make every module that reads ``__version__`` depend on it.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmiris.artifacts import ArtifactStore

__version__ = "0.1.0"

# name -> the module that defines it (the stages are mmiris.pipelines.*)
_API = {
    "ArtifactRef": "mmiris.artifacts",
    "ArtifactStore": "mmiris.artifacts",
    "TrainConfig": "mmiris.train.config",
    "generate_demo_dataset": "mmiris.pipelines.demo_data",
    "ingest_movielens": "mmiris.pipelines.ingest",
    "ingest_ncf": "mmiris.pipelines.ingest",
    "ingest_amazon": "mmiris.pipelines.ingest",
    "ingest_new_items": "mmiris.pipelines.new_items",
    "crawl_omdb": "mmiris.pipelines.crawl",
    "crawl_amazon_images": "mmiris.pipelines.crawl",
    "split_leave_one_out": "mmiris.pipelines.split",
    "extract_image_features": "mmiris.pipelines.extract",
    "extract_text_features": "mmiris.pipelines.extract",
    "train_model": "mmiris.pipelines.train",
    "tune_model": "mmiris.pipelines.tune",
    "evaluate_model": "mmiris.pipelines.evaluate",
    "read_metrics": "mmiris.pipelines.evaluate",
    # not "recommend": that name is the subpackage mmiris.recommend, which importing it rebinds
    "recommend_items": "mmiris.pipelines.recommend:recommend",
    "recommend_new_items": "mmiris.pipelines.recommend",
    "build_report": "mmiris.pipelines.report",
    "compare": "mmiris.pipelines.compare",
    "run_demo": "mmiris.pipelines.demo",
    "load_model": "mmiris.models.build",
    "model_names": "mmiris.models",
}

__all__ = ["__version__", "open_store", *_API]


def open_store(uri: str | None = None) -> ArtifactStore:
    """The artifact store at a path or URI (``s3://bucket/prefix``); default: $MMIRIS_STORE,
    else ./mmiris-store."""
    store_cls = __getattr__("ArtifactStore")
    return store_cls(uri)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mmiris' has no attribute {name!r}")
    module, _, attr = module.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value  # next time: a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
