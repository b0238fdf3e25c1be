"""Stage: batch top-N recommendations with interest-relevance explanations.

    ref = recommend(store, model_ref, split_ref, top_n=10, explain_k=3)

Writes a ``recommendations`` artifact (schemas/recommendations.json): one row per (user,
rank) with the item, its predicted probability σ(r̂_uj) and, for attention models, the
user's ``explain_k`` historical items of highest interest relevance a_ij (null otherwise).
Items the user is known to have consumed anywhere in the split (train, validation and
test) are never recommended; the model scores with the history it was trained with.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.code_version import source_version
from mmiris.data.split import load_split
from mmiris.errors import MmirisError
from mmiris.eval.explanations import explanation_overlap
from mmiris.models.base import Recommender
from mmiris.recommend.loader import load_trained_model, model_split
from mmiris.recommend.topn import consumed_history, recommend_top_n

log = logging.getLogger("mmiris.recommend")

# What decides the recommendations besides the model (whose code is in its own version).
CODE = ("mmiris.pipelines.recommend", "mmiris.recommend", "mmiris.eval.explanations", "mmiris.data")


def recommendations_name(model_ref: ArtifactRef) -> str:
    return f"recommendations-{model_ref.name.removeprefix('model-')}"


def _plan(
    store: ArtifactStore,
    model_ref: ArtifactRef | str,
    split_ref: ArtifactRef | str | None,
    top_n: int,
    explain_k: int,
    users: list[int] | None,
    name: str | None,
) -> tuple[ArtifactRef, ArtifactRef, dict, str]:
    model_ref = store.resolve(model_ref)
    split_ref = store.resolve(split_ref) if split_ref is not None else model_split(store, model_ref)
    if top_n < 1 or explain_k < 0:
        raise MmirisError(f"top_n must be >= 1 and explain_k >= 0 (got {top_n}, {explain_k})")
    user_list = sorted({int(u) for u in users}) if users is not None else None
    params = {"top_n": top_n, "explain_k": explain_k, "users": user_list}
    return model_ref, split_ref, params, name or recommendations_name(model_ref)


def planned_ref(
    store: ArtifactStore,
    model_ref: ArtifactRef | str,
    split_ref: ArtifactRef | str | None = None,
    *,
    top_n: int = 10,
    explain_k: int = 3,
    users: list[int] | None = None,
    name: str | None = None,
) -> ArtifactRef:
    """The ref ``recommend`` gives these arguments (it may or may not exist yet)."""
    model_ref, split_ref, params, name = _plan(store, model_ref, split_ref, top_n, explain_k, users, name)
    return store.ref_for(name, "recommendations", [model_ref, split_ref], params, source_version(*CODE))


def recommend(
    store: ArtifactStore,
    model_ref: ArtifactRef | str,
    split_ref: ArtifactRef | str | None = None,
    *,
    top_n: int = 10,
    explain_k: int = 3,
    users: list[int] | None = None,
    batch_users: int = 256,
    name: str | None = None,
) -> ArtifactRef:
    """Publish (or find) ``recommendations-<model>``; ``split_ref`` defaults to the model's split."""
    model_ref, split_ref, params, name = _plan(store, model_ref, split_ref, top_n, explain_k, users, name)
    user_list = params["users"]

    def build() -> Output:
        model = load_trained_model(store, model_ref)
        return recommend_output(
            model,
            load_split(store, split_ref),
            top_n=top_n,
            explain_k=explain_k,
            users=user_list,
            batch_users=batch_users,
            model_label=str(model_ref),
        )

    return store.get_or_create(name, "recommendations", [model_ref, split_ref], params, build, source_version(*CODE))


def recommend_output(
    model: Recommender,
    split,
    *,
    top_n: int,
    explain_k: int,
    users: list[int] | None = None,
    batch_users: int = 256,
    model_label: str = "",
) -> Output:
    """The stage's work on an in-memory model and split (what ``recommend`` publishes)."""
    if (model.n_users, model.n_items) != (split.n_users, split.n_items):
        raise MmirisError(
            f"model {model_label or model.name} has {model.n_users} users × {model.n_items} items but split "
            f"{split.ref} has {split.n_users} × {split.n_items}: they do not belong together"
        )
    if users is not None:
        arr = np.asarray(users, dtype=np.int64)
        bad = arr[(arr < 0) | (arr >= split.n_users)]
        if len(bad):
            raise MmirisError(f"--users: user {int(bad[0])} is outside 0..{split.n_users - 1} of split {split.ref}")
    else:
        arr = None
    if model.history is None:
        model.set_history(split.history())
    consumed = consumed_history(
        split.n_users,
        split.n_items,
        (split.train_users, split.train_items),
        (split.valid_users, split.valid_items),
        (split.test_users, split.test_items),
    )
    t0 = time.perf_counter()
    recs = recommend_top_n(model, consumed, arr, top_n=top_n, explain_k=explain_k, batch_users=batch_users)
    seconds = time.perf_counter() - t0
    table = recs.to_table()
    n_users = len(recs.users)
    log.info(
        "recommended top-%d for %d users in %.1fs (%.0f users/s)",
        top_n,
        n_users,
        seconds,
        n_users / seconds if seconds else float("inf"),
    )
    stats = {
        "users": n_users,
        "rows": table.num_rows,
        "top_n": top_n,
        "explain_k": explain_k,
        "explained": recs.explain_items is not None,
        "model": model.name,
    }
    if recs.explain_items is not None:  # 1 = the same reasons for every recommendation
        overlap = explanation_overlap(recs.explain_items)
        stats["explanation_overlap"] = None if np.isnan(overlap) else round(overlap, 4)
    return Output(
        {"recommendations": table},
        stats=stats,
        info={"seconds": round(seconds, 3), "users_per_s": round(n_users / seconds, 1) if seconds else None},
    )
