"""Items that arrived after training (``mmiris recommend --new-items``): which models can score
them, the encoder that must read them, and the model's catalogue extended in memory.

A model scores a never-seen item from its content when its class declares
``scores_new_items = True`` (hybrid_iris: q_j = Q_j + U_q g_j; vbpr: θ_u·(E f_j) + β'·f_j;
content_knn: cosines of content vectors). Its ``item_rows`` name the state-dict entries with
one row per item; a new item gets zero rows there (no collaborative signal yet, b_j = 0) and
its feature vectors are appended to the model's, so the model's own equations score it and
its attention explains it, with no retraining. A class may also define
``new_items_refusal(config) -> str | None`` for configurations that lose the content path
(hybrid_iris with ``content_embeddings=False`` and ``content_similarity=0``). Every other model is refused by name:
scoring new items with zero learned rows would give every one of them the same score.

New items come as ``item_text`` / ``item_images`` artifacts (or their ``text_features`` /
``image_features``) whose ``item_id`` is the new item's own id, its id in the source data;
it must not be one of the catalogue's source ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from mmiris.artifacts import ArtifactRef, ArtifactStore
from mmiris.artifacts.store import Manifest
from mmiris.data.modality import ItemModality
from mmiris.data.split import UserHistory
from mmiris.encoders.registry import EncoderSpec
from mmiris.errors import InputError, MmirisError
from mmiris.models import get_model_class, model_names
from mmiris.models.base import ModelConfig, Recommender

log = logging.getLogger("mmiris.recommend")

MODALITY_OF = {"item_images": "image", "image_features": "image", "item_text": "text", "text_features": "text"}
CONTENT_KIND = {"image": "item_images", "text": "item_text"}
FEATURE_KIND = {"image": "image_features", "text": "text_features"}


# -- which models can ------------------------------------------------------------------------
def scores_new_items(cls: type[Recommender]) -> bool:
    """What ``cls`` declares (``scores_new_items``; absent: False)."""
    return bool(getattr(cls, "scores_new_items", False))


def new_item_models() -> list[str]:
    """Registry models whose class declares that it scores new items from their content."""
    return [n for n in model_names() if scores_new_items(get_model_class(n))]


def refusal(cls: type[Recommender], config: ModelConfig | None = None) -> str | None:
    """Why a model of ``cls`` (with ``config``) cannot score new items; None when it can."""
    if scores_new_items(cls):
        hook = getattr(cls, "new_items_refusal", None)
        return hook(config) if hook is not None and config is not None else None
    if cls.modalities and cls.has_attention:
        return (
            "its attention reads a new item's content, but the score Σ a_ij p_i·q_j + b_j needs q_j and b_j, "
            "learned rows that are zero for an item it never saw, so every new item would score 0"
        )
    return "its score comes from learned per-item rows only, zero for an item it never saw: every new item would score the same"


def check_can_score_new_items(cls: type[Recommender], config: ModelConfig | None, label: str) -> None:
    """Raise a one-line error naming the models that can, when ``cls`` cannot."""
    why = refusal(cls, config)
    if why is not None:
        raise MmirisError(
            f"model {label} ({cls.name}) cannot score new items: {why}; models that score new items from "
            f"their content: {', '.join(new_item_models())} (train one of them on this split)"
        )


# -- the encoder the model's features were made with -----------------------------------------
def feature_parents(store: ArtifactStore, model_ref: ArtifactRef) -> dict[str, Manifest]:
    """The model's feature artifacts by modality (its image_features / text_features parents)."""
    out = {}
    for p in store.manifest(model_ref).parents:
        m = store.manifest(ArtifactRef.parse(p))
        if m.kind in ("image_features", "text_features"):
            out[MODALITY_OF[m.kind]] = m
    return out


def encoder_of(feat: Manifest) -> EncoderSpec:
    """The encoder that made feature artifact ``feat`` (from its manifest), checked to be the
    same weights today: new items must be encoded into the same vector space."""
    from mmiris.encoders.preprocess import weights_file
    from mmiris.encoders.registry import image_encoder_spec, text_encoder_spec, weights_sha256

    modality = MODALITY_OF[feat.kind]
    params, info = feat.params, feat.info.get("encoder") or {}
    family, enc_id = params.get("family") or info.get("family"), params.get("encoder")
    if not family or not enc_id:
        raise MmirisError(f"{feat.ref}: its manifest names no encoder (params.encoder, params.family)")
    if family == "doc2vec":
        raise MmirisError(
            f"{feat.ref} was made with Doc2Vec, trained on the catalogue's own texts: the feature stage "
            f"would train a different Doc2Vec on the new texts (another vector space); train the model "
            f"on features of a pretrained text encoder (minilm, bert-base-uncased) to score new items"
        )
    options = tuple(sorted((params.get("options") or {}).items()))
    spec = EncoderSpec(modality, family, enc_id, info.get("path"), params.get("weights_sha256"), options)
    if spec.weights_sha256 is None:  # seeded random test encoders: the options are the identity
        return spec
    path = Path(spec.path) if spec.path else None
    wfile = (path if path.is_file() else weights_file(path)) if path is not None and path.exists() else None
    if wfile is not None:
        now = weights_sha256(wfile)
        if now == spec.weights_sha256:
            return spec
        raise MmirisError(
            f"encoder mismatch: the model's {modality} features {feat.ref} were made with {enc_id} weights "
            f"sha256 {spec.weights_sha256[:12]}…, but {wfile} now has sha256 {now[:12]}…; new items "
            f"encoded with it would not be comparable (restore the weights, or retrain on new features)"
        )
    try:  # the weights moved (another machine, a reinstalled wheel): the registry may know them
        opts = dict(options)
        found = (
            image_encoder_spec(enc_id)
            if modality == "image"
            else text_encoder_spec(enc_id, pooling=opts.get("pooling"), max_length=opts.get("max_length"))
        )
    except MmirisError:
        found = None
    if found is not None and found.weights_sha256 == spec.weights_sha256 and found.family == family:
        return found
    raise MmirisError(
        f"encoder mismatch: the model's {modality} features {feat.ref} were made with {enc_id} "
        f"(weights sha256 {spec.weights_sha256[:12]}… at {spec.path}), which is not on this machine; "
        f"new items must be encoded with the same weights"
    )


def same_encoder(new: Manifest, model_feat: Manifest) -> None:
    """New items' features must come from the encoder of the model's (params: encoder id,
    weights sha256, options, preprocessing); otherwise an error naming what differs."""
    differ = sorted(
        k for k in set(new.params) | set(model_feat.params) if new.params.get(k) != model_feat.params.get(k)
    )
    if differ:
        show = "; ".join(f"{k}: {new.params.get(k)!r} vs {model_feat.params.get(k)!r}" for k in differ)
        raise MmirisError(
            f"encoder mismatch: {new.ref} and the model's {model_feat.ref} differ in {show}; the model "
            f"compares vectors of one encoder only (pass the {CONTENT_KIND[MODALITY_OF[new.kind]]} artifact "
            f"instead, and the recommend stage extracts it with the model's encoder)"
        )


def find_features(store: ArtifactStore, content_ref: ArtifactRef, kind: str, params: dict) -> ArtifactRef | None:
    """An existing ``kind`` artifact extracted from ``content_ref`` with exactly ``params``
    (under any name: ``mmiris features`` may have run on the new items already)."""
    found = [
        m
        for name in store.names()
        for m in store.versions(name)
        if m.kind == kind and list(m.parents) == [str(content_ref)] and m.params == params
    ]
    return max(found, key=lambda m: m.created_at).ref if found else None


# -- the new items ---------------------------------------------------------------------------
@dataclass
class NewItems:
    """The new items in one order: ``ids[k]`` (their own ids) is item ``n_items + k`` of the
    extended catalogue; ``features`` hold one row per new item (zeros where missing)."""

    ids: np.ndarray  # int64 [n_new], sorted
    titles: list[str | None]
    features: dict[str, ItemModality]
    sources: dict[str, str]  # modality -> the artifact its content came from

    def __len__(self) -> int:
        return len(self.ids)

    def present(self, modality: str) -> np.ndarray:
        f = self.features.get(modality)
        return f.present.numpy() if f is not None else np.zeros(len(self.ids), dtype=bool)


def _feature_rows(store: ArtifactStore, ref: ArtifactRef) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(item ids, vectors [n, dim], present, reason by id) of a features artifact."""
    t = store.read_table(ref, "features")
    col = t.column("feature").combine_chunks()
    dim = col.type.list_size
    filled = col.fill_null([0.0] * dim) if col.null_count else col
    vectors = filled.flatten().to_numpy(zero_copy_only=False).reshape(len(t), dim).astype(np.float32)
    ids = t.column("item_id").to_numpy()
    present = t.column("present").to_numpy(zero_copy_only=False).astype(bool)
    reasons = dict(zip(ids.tolist(), t.column("reason").to_pylist())) if "reason" in t.column_names else {}
    return ids, vectors, present, reasons


def load_new_items(
    store: ArtifactStore,
    features: dict[str, ArtifactRef],
    contents: dict[str, ArtifactRef],
    model_modalities: tuple[str, ...],
) -> NewItems:
    """The new items of ``features`` (modality -> features artifact), titles from the text
    content artifact when given. Every item must have at least one modality the model reads."""
    rows = {m: _feature_rows(store, ref) for m, ref in features.items()}
    for m, (ids, *_) in rows.items():
        if len(np.unique(ids)) != len(ids):
            raise InputError(f"{features[m]}: an item_id appears twice; expected one row per new item")
    ids = np.unique(np.concatenate([r[0] for r in rows.values()])).astype(np.int64) if rows else np.zeros(0, np.int64)
    if not len(ids):
        given = ", ".join(str(r) for r in [*contents.values(), *features.values()])
        raise InputError(f"--new-items {given}: no items in them; expected at least one new item")
    feats = {}
    for m, (mids, vectors, present, _) in rows.items():
        pos = np.searchsorted(ids, mids)
        x = np.zeros((len(ids), vectors.shape[1]), dtype=np.float32)
        p = np.zeros(len(ids), dtype=bool)
        x[pos[present]] = vectors[present]
        p[pos[present]] = True
        feats[m] = ItemModality(m, torch.from_numpy(x), torch.from_numpy(p))
    read = [m for m in model_modalities if m in feats]
    usable = np.zeros(len(ids), dtype=bool)
    for m in read:
        usable |= feats[m].present.numpy()
    if not usable.all():
        bad = ids[~usable]
        why = []
        for i in bad[:5].tolist():
            parts = [f"{m}: {rows[m][3].get(i) or 'not given'}" for m in read if m in rows]
            why.append(f"{i} ({', '.join(parts)})")
        raise InputError(
            f"--new-items: {len(bad)} of {len(ids)} new items have no {' or '.join(model_modalities)} "
            f"content the model reads, e.g. {'; '.join(why)}; without content a new item cannot be "
            f"scored: drop them or give their posters/plots"
        )
    titles: list[str | None] = [None] * len(ids)
    if "text" in contents:
        t = store.read_table(contents["text"], "item_text", columns=["item_id", "title"]).to_pydict()
        by_id = {int(i): title for i, title in zip(t["item_id"], t["title"]) if title}
        titles = [by_id.get(int(i)) for i in ids]
    return NewItems(ids, titles, feats, {m: str(r) for m, r in contents.items()})


def check_not_in_catalogue(
    store: ArtifactStore, model_ref: ArtifactRef, n_items: int, ids: np.ndarray, given: list[ArtifactRef]
) -> None:
    """New items must be new: not one of the model's own catalogue artifacts, and no id that
    is a source id of the catalogue (its ``items`` artifact; without one, its dense ids)."""
    from mmiris.recommend.catalogue import ancestors, find_related

    family = {str(m.ref) for m in ancestors(store, [model_ref])}
    own = [str(r) for r in given if str(r) in family]
    if own:
        raise InputError(
            f"--new-items {', '.join(own)}: part of the model's own catalogue (an ancestor of {model_ref}); "
            f"expected items that arrived after training"
        )
    items_ref = find_related(store, [model_ref], "items")
    if items_ref is not None:
        t = store.read_table(items_ref, "items", columns=["item_id", "source_id"]).to_pydict()
        known = dict(zip(t["source_id"], t["item_id"]))
        clash = [(int(i), known[str(int(i))]) for i in ids if str(int(i)) in known]
        where = f"source ids of {items_ref}"
    else:
        clash = [(int(i), int(i)) for i in ids if 0 <= int(i) < n_items]
        where = f"the model's item ids 0..{n_items - 1} (no items artifact found)"
    if clash:
        shown = ", ".join(f"{i} (item_id {d})" for i, d in clash[:5])
        raise InputError(
            f"--new-items: {len(clash)} of {len(ids)} new items are already in the catalogue, among the "
            f"{where}: {shown}; score catalogue items with plain `mmiris recommend`, and give new items "
            f"ids the catalogue does not have"
        )


# -- the catalogue extended ------------------------------------------------------------------
def extend_catalogue(model: Recommender, new: dict[str, ItemModality]) -> Recommender:
    """A copy of ``model`` whose catalogue is its ``n_items`` items followed by the new ones
    (item ids n_items .. n_items + n_new - 1): the rows named by the class's ``item_rows``
    are zero for the new items, their feature vectors follow the model's, the users'
    histories are unchanged. The trained parameters are shared values, not retrained."""
    cls = type(model)
    check_can_score_new_items(cls, model.config, model.name)
    sizes = {m: int(f.features.shape[0]) for m, f in new.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"new items: every modality needs one row per new item, got {sizes}")
    n_new = next(iter(sizes.values()))
    n_ext = model.n_items + n_new
    feats = {}
    for m in model.modalities:
        old = model.features[m]
        add = new.get(m)
        if add is None:  # a modality the new items lack: the paper's zero vector, present False
            add = ItemModality(m, torch.zeros(n_new, old.dim), torch.zeros(n_new, dtype=torch.bool))
        if add.dim != old.dim:
            raise MmirisError(
                f"encoder mismatch: new items' {m} features have {add.dim} dimensions, the model's {old.dim}"
            )
        feats[m] = ItemModality(
            m,
            torch.cat([old.features.float().cpu(), add.features.float().cpu()]),
            torch.cat([old.present.bool().cpu(), add.present.bool().cpu()]),
            old.encoder,
        )
    hist = model.history
    history = UserHistory(hist.indptr, hist.indices, n_ext) if hist is not None else None
    ext = cls(model.config, model.n_users, n_ext, history, feats)
    state = model.state_dict()
    for key in getattr(cls, "item_rows", ()):
        if key in state:  # e.g. item_bias is absent when the config turns it off
            t = state[key]
            state[key] = torch.cat([t, torch.zeros((n_new, *t.shape[1:]), dtype=t.dtype, device=t.device)])
    try:
        ext.load_state_dict(state)
    except RuntimeError as exc:
        raise MmirisError(
            f"model {model.name}: cannot extend its catalogue ({str(exc).splitlines()[-1].strip()}); a "
            f"per-item parameter is missing from {cls.__name__}.item_rows"
        ) from None
    if hasattr(model, "backend"):  # the attention implementation chosen for this model
        ext.backend = model.backend
    return ext.to(model.device).train(model.training)


def new_items_table(n_items: int, new: NewItems) -> pa.Table:
    """The ``new_items`` table: extended item id, the item's own id, title, modalities present."""
    return pa.table(
        {
            "item_id": pa.array(n_items + np.arange(len(new), dtype=np.int64), pa.int64()),
            "new_item_id": pa.array(new.ids, pa.int64()),
            "title": pa.array(new.titles, pa.string()),
            "image": pa.array(new.present("image"), pa.bool_()),
            "text": pa.array(new.present("text"), pa.bool_()),
        }
    )
