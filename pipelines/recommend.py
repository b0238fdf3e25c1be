"""Stage: batch top-N recommendations with interest-relevance explanations.

    ref = recommend(store, model_ref, split_ref, top_n=10, explain_k=3)

Writes a ``recommendations`` artifact (schemas/recommendations.json): one row per (user,
rank) with the item, its predicted probability σ(r̂_uj) and, for attention models, the
user's ``explain_k`` historical items of highest interest relevance a_ij (null otherwise).
Items the user is known to have consumed anywhere in the split (train, validation and
test) are never recommended; the model scores with the history it was trained with.

    ref = recommend_new_items(store, model_ref, ["new_item_text", "new_item_images"], top_n=10)

Items that arrived after training (``item_text`` / ``item_images`` artifacts of items the
catalogue does not have): their features are extracted by the feature stage with the encoders
of the model's own feature artifacts (an existing extraction is found, not redone), the
model's catalogue is extended in memory (``mmiris.recommend.new_items``) and each user gets
the top-N among the new items, with explanations, in a ``new_item_recommendations`` artifact
(schemas/new_item_recommendations.json). Only models that score an item from its content
can (``scores_new_items`` on the model class); the others are refused by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmiris.artifacts import ArtifactRef, ArtifactStore, Output
from mmiris.artifacts.code_version import source_version
from mmiris.artifacts.store import Manifest
from mmiris.data.split import load_split
from mmiris.errors import InputError, MmirisError
from mmiris.eval.explanations import explanation_overlap
from mmiris.models import get_model_class
from mmiris.models.base import ModelConfig, Recommender
from mmiris.recommend import new_items as N
from mmiris.recommend.loader import load_trained_model, model_split
from mmiris.recommend.topn import TopN, consumed_history, recommend_among, recommend_top_n

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
    arr = _users_of(model, split, users, model_label)
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
    stats = _stats(recs, table, top_n, explain_k, model)
    if recs.explain_items is not None:  # 1 = the same reasons for every recommendation
        overlap = explanation_overlap(recs.explain_items)
        stats["explanation_overlap"] = None if np.isnan(overlap) else round(overlap, 4)
    return Output(
        {"recommendations": table},
        stats=stats,
        info={"seconds": round(seconds, 3), "users_per_s": round(n_users / seconds, 1) if seconds else None},
    )


def _users_of(model: Recommender, split, users: list[int] | None, model_label: str) -> np.ndarray | None:
    """Check that model and split belong together and ``users`` are in range; give the model
    the split's histories if it has none. The users as an array (None: every user)."""
    if (model.n_users, model.n_items) != (split.n_users, split.n_items):
        raise MmirisError(
            f"model {model_label or model.name} has {model.n_users} users × {model.n_items} items but split "
            f"{split.ref} has {split.n_users} × {split.n_items}: they do not belong together"
        )
    arr = None if users is None else np.asarray(users, dtype=np.int64)
    if arr is not None and len(bad := arr[(arr < 0) | (arr >= split.n_users)]):
        raise MmirisError(f"--users: user {int(bad[0])} is outside 0..{split.n_users - 1} of split {split.ref}")
    if model.history is None:
        model.set_history(split.history())
    return arr


def _stats(recs: TopN, table, top_n: int, explain_k: int, model: Recommender) -> dict:
    return {
        "users": len(recs.users),
        "rows": table.num_rows,
        "top_n": top_n,
        "explain_k": explain_k,
        "explained": recs.explain_items is not None,
        "model": model.name,
    }


# -- new items: scored by a content-aware model with its catalogue extended ------------------
NEW_ITEMS_KIND = "new_item_recommendations"
NewItemRefs = ArtifactRef | str | Sequence[ArtifactRef | str]


def new_recommendations_name(model_ref: ArtifactRef) -> str:
    return f"new-recommendations-{model_ref.name.removeprefix('model-')}"


def new_features_name(modality: str) -> str:
    """Where the new items' features go (not ``image_features``: ``@latest`` of the training
    features must stay the catalogue's)."""
    return f"new_items-{N.FEATURE_KIND[modality]}"


@dataclass
class NewItemsPlan:
    model_ref: ArtifactRef
    split_ref: ArtifactRef
    cls: type[Recommender]
    params: dict
    name: str
    features: dict[str, ArtifactRef]  # modality -> the new items' features (model's encoder)
    contents: dict[str, ArtifactRef]  # modality -> their item_text / item_images
    knn: ArtifactRef | None = None  # the content_knn blended in (knn_share > 0)
    knn_share: float = 0.0
    ensemble: tuple[ArtifactRef, ...] = ()  # further models averaged with the model (``ensemble``)

    @property
    def parents(self) -> list[ArtifactRef]:
        refs = [self.model_ref, *self.ensemble, self.split_ref, *self.contents.values(), *self.features.values()]
        refs += [self.knn] if self.knn is not None else []
        return list({str(r): r for r in refs}.values())


def _model_class(store: ArtifactStore, m: Manifest) -> tuple[type[Recommender], ModelConfig | None]:
    """The registry class and typed config of model artifact ``m`` (from its params, else its file)."""
    if m.kind != "model":
        raise MmirisError(f"--model {m.ref} is a {m.kind!r} artifact, expected a model")
    name, config = m.params.get("model"), m.params.get("model_config")
    if not name:
        from mmiris.models.build import read_model_file

        blob = read_model_file(store, m.ref)
        name, config = blob["model"], blob["config"]
    try:
        cls = get_model_class(str(name))
    except KeyError as exc:
        raise MmirisError(f"model {m.ref}: {str(exc).strip(chr(34) + chr(39))}") from None
    try:
        return cls, cls.config_cls.from_dict(dict(config or {}))
    except (TypeError, ValueError):  # checked again on the loaded model
        return cls, None


def _new_item_ids(store: ArtifactStore, m: Manifest) -> np.ndarray:
    table = m.kind if m.kind in ("item_text", "item_images") else "features"
    return store.read_table(m.ref, table, columns=["item_id"]).column("item_id").to_numpy()


def plan_new_items(
    store: ArtifactStore,
    model_ref: ArtifactRef | str,
    new_items: NewItemRefs,
    split_ref: ArtifactRef | str | None = None,
    *,
    top_n: int = 10,
    explain_k: int = 3,
    users: list[int] | None = None,
    name: str | None = None,
    client=None,
    workers: int | None = None,
    knn_share: float = 0.0,
    ensemble: Sequence[ArtifactRef | str] = (),
) -> NewItemsPlan:
    """Check the model and the new items, and extract their features (or find them)."""
    model_ref, split_ref, params, _ = _plan(store, model_ref, split_ref, top_n, explain_k, users, None)
    name = name or new_recommendations_name(model_ref)
    cls, config = _model_class(store, store.manifest(model_ref))
    N.check_can_score_new_items(cls, config, str(model_ref))
    members = _ensemble_members(store, model_ref, split_ref, ensemble)
    if not 0.0 <= knn_share <= 1.0:
        raise InputError(f"--knn-share {knn_share}: expected a share of content kNN in [0, 1]")
    if knn_share and cls.name == "content_knn":
        raise InputError(f"--knn-share: model {model_ref} is content kNN already; there is nothing to blend")
    refs = [new_items] if isinstance(new_items, (str, ArtifactRef)) else list(new_items)
    if not refs:
        raise InputError("--new-items: expected an item_text and/or an item_images artifact of the new items")
    given: dict[str, Manifest] = {}
    for r in refs:
        gm = store.manifest(store.resolve(r))
        mod = N.MODALITY_OF.get(gm.kind)
        if mod is None:
            raise InputError(
                f"--new-items {gm.ref}: a {gm.kind!r} artifact, expected item_text or item_images "
                f"(or their text_features / image_features)"
            )
        if mod in given:
            raise InputError(f"--new-items: two {mod} artifacts, {given[mod].ref} and {gm.ref}; give one of each kind")
        given[mod] = gm
    read = [mod for mod in cls.modalities if mod in given]
    if not read:
        raise InputError(
            f"--new-items: model {cls.name} reads {' and '.join(cls.modalities)} content, the new items "
            f"have only {' and '.join(given)} ({', '.join(str(g.ref) for g in given.values())})"
        )
    for mod in given:
        if mod not in cls.modalities:
            log.info("model %s reads no %s features: %s serves titles only", cls.name, mod, given[mod].ref)
    contents: dict[str, ArtifactRef] = {}
    for mod, gm in given.items():
        if gm.kind == N.CONTENT_KIND[mod]:
            contents[mod] = gm.ref
        else:  # features given: their item_text / item_images parent has the titles
            up = [ArtifactRef.parse(p) for p in gm.parents]
            src = [p for p in up if store.manifest(p).kind == N.CONTENT_KIND[mod]]
            if src:
                contents[mod] = src[0]
    model_m = store.manifest(model_ref)
    n_items = int(store.manifest(split_ref).stats.get("n_items", 0))
    ids = np.unique(np.concatenate([_new_item_ids(store, given[mod]) for mod in read]))
    if not len(ids):
        raise InputError(
            f"--new-items {', '.join(str(given[mod].ref) for mod in read)}: no items in them; expected at least one"
        )
    N.check_not_in_catalogue(
        store, model_m.ref, n_items, ids, [g.ref for g in given.values()] + list(contents.values())
    )
    model_feats = N.feature_parents(store, model_m.ref)
    features: dict[str, ArtifactRef] = {}
    for mod in read:
        gm, mf = given[mod], model_feats.get(mod)
        if mf is None:
            raise MmirisError(f"model {model_m.ref} reads {mod} features but has no {N.FEATURE_KIND[mod]} parent")
        if gm.kind == N.FEATURE_KIND[mod]:
            N.same_encoder(gm, mf)
            features[mod] = gm.ref
            continue
        found = N.find_features(store, gm.ref, N.FEATURE_KIND[mod], mf.params)
        if found is None:
            from mmiris.pipelines.extract import extract_image_features, extract_text_features

            extract = extract_image_features if mod == "image" else extract_text_features
            spec = N.encoder_of(mf)
            log.info("extracting %s features of %s with %s (the model's encoder)", mod, gm.ref, spec.id)
            found = extract(store, gm.ref, spec, client=client, workers=workers, name=new_features_name(mod))
            N.same_encoder(store.manifest(found), mf)
        features[mod] = found
    knn = None
    if knn_share:
        try:
            knn = content_knn_for(store, split_ref, model_m.ref)
        except InputError as exc:
            raise InputError(f"--knn-share: {exc}") from None
        params["knn_share"] = float(knn_share)  # absent at 0: the model alone, as before
    if members:
        params["ensemble"] = [str(r) for r in members]  # absent without: the model alone, as before
    return NewItemsPlan(model_m.ref, split_ref, cls, params, name, features, contents, knn, float(knn_share), members)


def _ensemble_members(
    store: ArtifactStore, model_ref: ArtifactRef, split_ref: ArtifactRef, ensemble: Sequence[ArtifactRef | str]
) -> tuple[ArtifactRef, ...]:
    """The further models of an ensemble, checked: each can score new items, was trained on
    the model's split and read the model's very feature artifacts (so the new items' features
    serve them all: seeds of one configuration, say); sorted, as their order changes nothing."""
    own = {m: f.ref for m, f in N.feature_parents(store, model_ref).items()}
    out: dict[str, ArtifactRef] = {}
    for given in ensemble:
        ref = store.resolve(given)
        if ref == model_ref or str(ref) in out:
            raise InputError(f"--ensemble {given}: {ref} is the model itself or given twice; name each model once")
        cls, config = _model_class(store, store.manifest(ref))
        N.check_can_score_new_items(cls, config, str(ref))
        trained_on = model_split(store, ref)
        if trained_on != split_ref:
            raise InputError(
                f"--ensemble {ref}: trained on {trained_on}, the model on {split_ref}; every member needs the same split"
            )
        theirs = {m: f.ref for m, f in N.feature_parents(store, ref).items()}
        if theirs != own:
            raise InputError(
                f"--ensemble {ref}: it read the features {_named(theirs)}, the model {_named(own)}; every member "
                f"must read the model's feature artifacts"
            )
        out[str(ref)] = ref
    return tuple(out[k] for k in sorted(out))


def _named(refs: dict[str, ArtifactRef]) -> str:
    return ", ".join(f"{m} {r}" for m, r in sorted(refs.items())) or "none"


def content_knn_for(store: ArtifactStore, split_ref: ArtifactRef | str, model_ref: ArtifactRef | str) -> ArtifactRef:
    """content_knn on ``split_ref`` over the feature artifacts ``model_ref`` read (found in the
    store when fitted before with the same inputs: it has nothing to train). What
    ``knn_share`` blends in, and ``benchmarks.cold_blend``'s default ``--knn``."""
    from mmiris.models.content_knn import ContentKNN
    from mmiris.pipelines.train import train_model

    model_feats = N.feature_parents(store, store.resolve(model_ref))
    missing = [m for m in ContentKNN.modalities if m not in model_feats]
    if missing:
        raise InputError(
            f"content kNN reads {' and '.join(ContentKNN.modalities)} features, model {model_ref} "
            f"has no {' or '.join(N.FEATURE_KIND[m] for m in missing)} parent"
        )
    return train_model(
        store,
        split_ref,
        "content_knn",
        image_features=model_feats["image"].ref,
        text_features=model_feats["text"].ref,
    )


def planned_new_items_ref(
    store: ArtifactStore,
    model_ref: ArtifactRef | str,
    new_items: NewItemRefs,
    split_ref: ArtifactRef | str | None = None,
    **kw,
) -> ArtifactRef:
    """The ref ``recommend_new_items`` gives these arguments (features are extracted or found)."""
    plan = plan_new_items(store, model_ref, new_items, split_ref, **kw)
    return store.ref_for(plan.name, NEW_ITEMS_KIND, plan.parents, plan.params, source_version(*CODE))


def recommend_new_items(
    store: ArtifactStore,
    model_ref: ArtifactRef | str,
    new_items: NewItemRefs,
    split_ref: ArtifactRef | str | None = None,
    *,
    top_n: int = 10,
    explain_k: int = 3,
    users: list[int] | None = None,
    batch_users: int = 256,
    name: str | None = None,
    client=None,
    workers: int | None = None,
    knn_share: float = 0.0,
    ensemble: Sequence[ArtifactRef | str] = (),
) -> ArtifactRef:
    """Publish (or find) ``new-recommendations-<model>``: for every user (or ``users``) the
    top ``top_n`` among the items of ``new_items`` (item_text / item_images refs), with
    explanations. ``client``/``workers``: the Dask cluster of the feature extraction
    (``extract_image_features``), used only when the features are not in the store yet.
    ``knn_share`` > 0 ranks by a blend with content kNN over the model's features (which
    becomes a parent): (1 − share)·z_model + share·z_kNN, z standardised over the user's
    new items (docs/content.md measured it on cold items). ``ensemble``: further models
    (same split, same feature artifacts) averaged with the model, each with the model's share
    of what content kNN leaves, (1 − share)/(1 + len(ensemble)); scores and explanations stay
    the model's (docs/content.md: two seeds rank ML-1M cold items 0.005 HR@10 better than one)."""
    plan = plan_new_items(
        store,
        model_ref,
        new_items,
        split_ref,
        top_n=top_n,
        explain_k=explain_k,
        users=users,
        name=name,
        client=client,
        workers=workers,
        knn_share=knn_share,
        ensemble=ensemble,
    )

    def build() -> Output:
        new = N.load_new_items(store, plan.features, plan.contents, plan.cls.modalities)
        return new_items_output(
            load_trained_model(store, plan.model_ref),
            load_split(store, plan.split_ref),
            new,
            top_n=top_n,
            explain_k=explain_k,
            users=plan.params["users"],
            batch_users=batch_users,
            model_label=str(plan.model_ref),
            knn=load_trained_model(store, plan.knn) if plan.knn is not None else None,
            knn_share=plan.knn_share,
            ensemble=[load_trained_model(store, r) for r in plan.ensemble],
        )

    return store.get_or_create(plan.name, NEW_ITEMS_KIND, plan.parents, plan.params, build, source_version(*CODE))


def new_items_output(
    model: Recommender,
    split,
    new: N.NewItems,
    *,
    top_n: int,
    explain_k: int,
    users: list[int] | None = None,
    batch_users: int = 256,
    model_label: str = "",
    knn: Recommender | None = None,
    knn_share: float = 0.0,
    ensemble: Sequence[Recommender] = (),
) -> Output:
    """The work of ``recommend_new_items`` on an in-memory model, split and new items."""
    arr = _users_of(model, split, users, model_label)
    ext = N.extend_catalogue(model, new.features)
    blend = []
    knn_share = knn_share if knn is not None else 0.0
    for k, member in enumerate(ensemble):
        _users_of(member, split, users, f"ensemble member {k + 1}")
        blend.append((N.extend_catalogue(member, new.features), (1.0 - knn_share) / (1 + len(ensemble))))
    if knn is not None and knn_share:
        _users_of(knn, split, users, "content kNN")
        blend.append((N.extend_catalogue(knn, new.features), knn_share))
    t0 = time.perf_counter()
    candidates = model.n_items + np.arange(len(new), dtype=np.int64)
    recs: TopN = recommend_among(
        ext, candidates, arr, top_n=top_n, explain_k=explain_k, batch_users=batch_users, blend=blend
    )
    seconds = time.perf_counter() - t0
    table = recs.to_table()
    n_users = len(recs.users)
    log.info("top-%d of %d new items for %d users in %.1fs", top_n, len(new), n_users, seconds)
    stats = {
        **_stats(recs, table, top_n, explain_k, model),
        "n_items": model.n_items,
        "new_items": len(new),
        "new_with_image": int(new.present("image").sum()),
        "new_with_text": int(new.present("text").sum()),
        "knn_share": knn_share,
        "ensemble": len(ensemble),  # further models averaged with the model
    }
    return Output(
        {"recommendations": table, "new_items": N.new_items_table(model.n_items, new)},
        stats=stats,
        info={"seconds": round(seconds, 3), "users_per_s": round(n_users / seconds, 1) if seconds else None},
    )
