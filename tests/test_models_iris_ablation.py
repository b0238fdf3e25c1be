"""The IRIS ablation differs only in what it names (issue: remove the confounds)."""

import numpy as np
import pytest
import torch

from mmiris.data.modality import ItemModality
from mmiris.data.split import UserHistory
from mmiris.models import get_model_class
from mmiris.models.build import build_model
from mmiris.typed_config import config_from_dict

N_USERS, N_ITEMS, IMG, TXT = 3, 10, 20, 12


def _data(text_dim=TXT):
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(N_USERS), 3)
    items = np.concatenate([rng.choice(N_ITEMS, 3, replace=False) for _ in range(N_USERS)])
    history = UserHistory.from_pairs(users, items, N_USERS, N_ITEMS)
    ones = np.ones(N_ITEMS, dtype=bool)
    feats = {
        "image": ItemModality.from_arrays(
            "image", np.arange(N_ITEMS), rng.normal(size=(N_ITEMS, IMG)).astype(np.float32), ones, N_ITEMS
        ),
        "text": ItemModality.from_arrays(
            "text", np.arange(N_ITEMS), rng.normal(size=(N_ITEMS, text_dim)).astype(np.float32), ones, N_ITEMS
        ),
    }
    return history, feats


@pytest.mark.parametrize("name", ["image_iris", "image_add_text_iris", "multimodal_iris"])
def test_every_variant_has_the_papers_768_image_hidden_layer(name):
    history, feats = _data()
    model = build_model(name, {"emb": 8}, N_USERS, N_ITEMS, history, feats)
    assert model.image1.in_features == IMG and model.image1.out_features == 768
    assert model.image2.out_features == 8


def test_w_share_maps_text_and_the_768_hidden_layer_to_k():
    history, feats = _data()
    model = build_model("multimodal_iris", {"emb": 8}, N_USERS, N_ITEMS, history, feats)
    assert tuple(model.share_t2v.weight.shape) == (8, TXT)  # eq. 7: W_share t⁰
    assert tuple(model.share_v2t.weight.shape) == (8, 768)  # eq. 8: W_share v¹


def test_image_hidden_none_gives_one_w_share_of_the_text_size():
    history, feats = _data()
    model = build_model("multimodal_iris", {"emb": 8, "image_hidden": None}, N_USERS, N_ITEMS, history, feats)
    assert model.image1.out_features == TXT and model.share_v2t is None


def test_tower_activation_sets_sigma_and_old_activation_field_still_loads():
    history, feats = _data()
    ids = torch.arange(N_ITEMS)
    out = {}
    for act in ("relu", "tanh"):
        torch.manual_seed(0)
        model = build_model("multimodal_iris", {"emb": 8, "tower_activation": act}, N_USERS, N_ITEMS, history, feats)
        out[act] = model.item_vectors(ids)["image"]
    assert (out["relu"] >= 0).all() and (out["tanh"] < 0).any()
    cls = get_model_class("multimodal_iris").config_cls
    assert config_from_dict(cls, {"activation": "tanh"}).tower_activation == "tanh"  # artifacts before the rename
