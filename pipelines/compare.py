"""Comparing models on one split: train and evaluate each, one table (``mmiris.compare``).

    result = compare_models(store, "split", ["itempop", "nais_prod"], model_config={"emb": 16})
    result.table  # one row per model: sampled and full-ranking HR/NDCG@5,10,20

The demo (pipelines/demo.py), the end-to-end flows (flows/pipeline.py) and the Python API
share what is decided here: which modalities a list of models reads
(``modalities_needed``), which shared settings apply to which model (``settings_for``), which
model recommends with explanations (``best_explainer``) and the note every report on the
generated demo data carries (``DEMO_NOTE``). Each model's train and evaluate are the
ordinary stages, so a comparison run twice finds every artifact.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.errors import MmirisError
from mmiris.models import get_model_class
from mmiris.pipelines.evaluate import evaluate_model, read_metrics
from mmiris.pipelines.train import train_model
from mmiris.train.config import TrainConfig

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("mmiris.compare")

DEMO_NOTE = (
    "Data: the embedded demo catalogue — generated posters, plots and users, not real data (mmiris/demo/synthetic.py)."
)
METRIC_COLUMNS = tuple(f"{m}{k}" for k in (5, 10, 20) for m in ("hr", "ndcg"))


@dataclasses.dataclass
class Comparison:
    models: dict[str, ArtifactRef]  # model name -> its model artifact
    metrics: dict[str, ArtifactRef]  # model name -> its metrics artifact (test items)
    table: list[dict[str, Any]]  # per model: "model", sampled hr5..ndcg20, full-ranking hr5_full..ndcg20_full


def modalities_needed(models: Iterable[str], have: set[str] | None = None, what: str = "models") -> set[str]:
    """The item modalities ("image", "text") the models read; an unknown model name, or one
    that reads a modality outside ``have`` (when given), fails before any work."""
    needs: set[str] = set()
    for name in models:
        try:
            cls = get_model_class(name)
        except KeyError as exc:
            raise MmirisError(f"{what}: {exc.args[0]}") from None
        missing = [m for m in cls.modalities if have is not None and m not in have]
        if missing:
            raise MmirisError(f"model {name} needs {' and '.join(missing)} features, which this pipeline has none of")
        needs |= set(cls.modalities)
    return needs


def settings_for(model: str, settings: dict | None) -> tuple[dict | None, list[str]]:
    """(the fields of ``settings`` this model's config has, the names of the others): ``emb``
    applies to every model, ``beta`` only to attention models."""
    fields = {f.name for f in dataclasses.fields(get_model_class(model).config_cls)}
    kept = {k: v for k, v in (settings or {}).items() if k in fields}
    return kept or None, sorted(set(settings or {}) - set(kept))


def best_explainer(store: ArtifactStore, metrics: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """The model to recommend with: the best attention model (explanations need a_ij) by
    sampled HR@10, or the best model when none has attention; and every model's HR@10."""
    hr10 = {n: read_metrics(store, ref).get("sampled", {}).get("hr10", 0.0) for n, ref in metrics.items()}
    pool = [n for n in metrics if get_model_class(n).has_attention] or list(metrics)
    return max(pool, key=lambda n: hr10[n]), hr10


def metrics_row(store: ArtifactStore, model: str, metrics_ref: ArtifactRef | str) -> dict[str, Any]:
    """One table row: the model, then sampled metrics and full-ranking ones (``*_full``)."""
    m = read_metrics(store, metrics_ref)
    s, f = m.get("sampled", {}), m.get("full", {})
    return {"model": model, **{c: s.get(c) for c in METRIC_COLUMNS}, **{f"{c}_full": f.get(c) for c in METRIC_COLUMNS}}


def compare_models(
    store: ArtifactStore,
    split: ArtifactRef | str,
    models: Iterable[str],
    *,
    model_config: dict | None = None,
    train_config: TrainConfig | None = None,
    image_features: ArtifactRef | str | None = None,
    text_features: ArtifactRef | str | None = None,
    step: Callable[[str, Callable[[], Any]], Any] | None = None,
) -> Comparison:
    """Train and evaluate each of ``models`` on ``split``. ``model_config``: settings given to
    each model that has the field (e.g. {"emb": 16}); features go to the models that read
    them. ``step(label, fn)`` runs each train/evaluate call (the demo times and prints them)."""
    models = list(models)
    have = {m for m, r in (("image", image_features), ("text", text_features)) if r is not None}
    modalities_needed(models, have)
    run = step or (lambda label, fn: fn())
    cfg = train_config or TrainConfig()
    trained: dict[str, ArtifactRef] = {}
    metrics: dict[str, ArtifactRef] = {}
    for name in models:
        reads = get_model_class(name).modalities
        settings, dropped = settings_for(name, model_config)
        if dropped:
            log.info("model %s has no setting(s) %s; not passing them", name, dropped)

        def train(name: str = name, settings: dict | None = settings, reads: tuple[str, ...] = reads) -> ArtifactRef:
            return train_model(
                store,
                split,
                name,
                model_config=settings,
                train_config=cfg,
                image_features=image_features if "image" in reads else None,
                text_features=text_features if "text" in reads else None,
            )

        def evaluate(name: str = name) -> ArtifactRef:
            return evaluate_model(store, trained[name], split)

        trained[name] = run(f"train {name}", train)
        metrics[name] = run(f"evaluate {name}", evaluate)
    return Comparison(trained, metrics, [metrics_row(store, n, ref) for n, ref in metrics.items()])


def compare(
    split: ArtifactRef | str,
    models: Iterable[str],
    *,
    store: ArtifactStore | str | None = None,
    model_config: dict | None = None,
    train_config: TrainConfig | dict | None = None,
    image_features: ArtifactRef | str | None = None,
    text_features: ArtifactRef | str | None = None,
) -> pd.DataFrame:
    """``mmiris.compare``: train and evaluate each model on ``split``, one row per model
    (index ``model``; columns sampled ``hr5``..``ndcg20`` and full-ranking ``hr5_full``..).
    ``store``: an ArtifactStore, a path or URI (default: $MMIRIS_STORE or ./mmiris-store);
    ``train_config``: a TrainConfig or its fields as a dict. The artifacts are in
    ``df.attrs["models"]`` and ``df.attrs["metrics"]`` (model name -> ``name@version``)."""
    import pandas as pd

    s = store if isinstance(store, ArtifactStore) else ArtifactStore(store)
    cfg = TrainConfig.from_dict(train_config) if isinstance(train_config, dict) else train_config
    res = compare_models(
        s,
        split,
        models,
        model_config=model_config,
        train_config=cfg,
        image_features=image_features,
        text_features=text_features,
    )
    df = pd.DataFrame(res.table).set_index("model")
    df.attrs["models"] = {n: str(r) for n, r in res.models.items()}
    df.attrs["metrics"] = {n: str(r) for n, r in res.metrics.items()}
    return df
