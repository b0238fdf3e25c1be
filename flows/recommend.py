"""Flow: top-N recommendations with interest-relevance explanations (pipelines/recommend.py)."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from mmiris.artifacts import ArtifactStore
from mmiris.flows.stage_logs import forward_stage_logs, now
from mmiris.flows.ui_artifacts import artifact_key, finish_stage
from mmiris.pipelines.recommend import recommend, recommend_new_items


@task(name="recommend", cache_policy=NO_CACHE)
def recommend_task(
    store: str | None,
    model: str,
    split: str | None,
    top_n: int,
    explain_k: int,
    users: list[int] | None,
    new_items: list[str] | None = None,
    knn_share: float = 0.0,
    ensemble: list[str] | None = None,
) -> str:
    if new_items is not None:  # the top-N among items that arrived after training
        s = ArtifactStore(store)
        ref = recommend_new_items(
            s,
            model,
            new_items,
            split,
            top_n=top_n,
            explain_k=explain_k,
            users=users,
            knn_share=knn_share,
            ensemble=ensemble or (),
        )
        return str(ref)
    return str(recommend(ArtifactStore(store), model, split, top_n=top_n, explain_k=explain_k, users=users))


@flow(name="recommend")
def recommend_flow(
    model: str = "model-nais_prod@latest",
    split: str | None = None,
    top_n: int = 10,
    explain_k: int = 3,
    users: list[int] | None = None,
    preview_users: int = 3,
    new_items: list[str] | None = None,
    knn_share: float = 0.0,
    ensemble: list[str] | None = None,
    store: str | None = None,
) -> str:
    """Top ``top_n`` unseen items for every user (or ``users``), each with the user's
    ``explain_k`` historical items of highest relevance a_ij. Returns
    ``recommendations-<model>@…``; the first ``preview_users`` users are shown in the UI.
    ``new_items`` (item_text / item_images refs): rank those items, which arrived after
    training, instead (``new-recommendations-<model>@…``; content-aware models only), by the
    model's scores or, with ``knn_share`` > 0, by their blend with content kNN; ``ensemble``:
    further models (same split and features) averaged with the model (docs/recommend.md)."""
    forward_stage_logs()
    started = now()
    if ensemble and new_items is None:
        raise ValueError("ensemble averages models over new items: give new_items")
    ref = recommend_task(store, model, split, top_n, explain_k, users, new_items, knn_share, ensemble)
    s = ArtifactStore(store)
    finish_stage(s, {"recommendations": ref}, f"recommend {model.split('@')[0]}", started)
    rows = s.read_table(ref, "recommendations").to_pylist()
    shown = sorted({r["user_id"] for r in rows})[:preview_users]
    new = _new_items(s, ref) if new_items is not None else {}

    def item(i: int) -> dict:  # a new item by its own id and its title; a catalogue item by its id
        return {"item": new[i][0], "title": new[i][1]} if i in new else {"item": i}

    preview = [
        {
            "user": r["user_id"],
            "rank": r["rank"],
            **item(r["item_id"]),
            "score": round(float(r["score"]), 4),
            "because of (item: relevance)": ", ".join(
                f"{e['item_id']}: {e['relevance']:.3f}" for e in r["explanations"] or []
            ),
        }
        for r in rows
        if r["user_id"] in shown
    ]
    what = "new this week, " if new else ""
    create_table_artifact(
        preview,
        key=artifact_key("recommendations", ref.split("@")[0]),
        description=f"{ref}: {what}first {len(shown)} users",
    )
    return ref


def _new_items(store: ArtifactStore, ref: str) -> dict[int, tuple[int, str]]:
    """New-item recommendations: each recommended item's own id and title (from its item_text;
    an item without one shows as "new item <id>", as in the report and the CLI table)."""
    t = store.read_table(ref, "new_items").to_pydict()
    return {i: (n, title or f"new item {n}") for i, n, title in zip(t["item_id"], t["new_item_id"], t["title"])}
