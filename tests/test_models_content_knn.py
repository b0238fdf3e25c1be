"""Content kNN against a loop over its definition (mean cosine to the history without j)."""

import numpy as np
import torch

from mmiris.data.modality import ItemModality
from mmiris.data.split import UserHistory
from mmiris.models.build import build_model

N_USERS, N_ITEMS = 5, 12


def _setup():
    rng = np.random.default_rng(3)
    lengths = [0, 1, 2, 4, 7]
    users = np.repeat(np.arange(N_USERS), lengths)
    items = np.concatenate([rng.choice(N_ITEMS, n, replace=False) for n in lengths])
    history = UserHistory.from_pairs(users, items, N_USERS, N_ITEMS)
    img_present = rng.random(N_ITEMS) > 0.3
    txt_present = rng.random(N_ITEMS) > 0.3
    img = rng.normal(size=(N_ITEMS, 6)).astype(np.float32) + 3.0  # an offset that centring removes
    txt = rng.normal(size=(N_ITEMS, 4)).astype(np.float32)
    feats = {
        "image": ItemModality.from_arrays("image", np.arange(N_ITEMS), img, img_present, N_ITEMS),
        "text": ItemModality.from_arrays("text", np.arange(N_ITEMS), txt, txt_present, N_ITEMS),
    }
    return history, feats, img, txt, img_present, txt_present


def _reference(history, img, txt, ip, tp, w, user, j):
    def unit(x, present):
        c = x - x[present].mean(0)
        out = np.zeros_like(c)
        for i in range(len(c)):
            if present[i] and np.linalg.norm(c[i]) > 0:
                out[i] = c[i] / np.linalg.norm(c[i])
        return out

    ui, ut = unit(img, ip), unit(txt, tp)
    others = [i for i in history.items_of(user) if i != j]
    if not others:
        return 0.0
    return float(np.mean([w * ui[i] @ ui[j] + (1 - w) * ut[i] @ ut[j] for i in others]))


def test_scores_and_score_all_match_the_definition():
    history, feats, img, txt, ip, tp = _setup()
    model = build_model("content_knn", {"image_weight": 0.3}, N_USERS, N_ITEMS, history, feats)
    model.fit()
    users = torch.arange(N_USERS)
    items = torch.arange(N_ITEMS).expand(N_USERS, -1)
    ref = np.array([[_reference(history, img, txt, ip, tp, 0.3, u, j) for j in range(N_ITEMS)] for u in range(N_USERS)])
    np.testing.assert_allclose(model.scores(users, items).numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(model.score_all(users).numpy(), ref, atol=1e-5)
    assert (model.score_all(users)[0] == 0).all()  # empty history


def test_a_new_item_with_content_gets_a_score_and_one_without_gets_zero():
    history, feats, *_ = _setup()
    model = build_model("content_knn", None, N_USERS, N_ITEMS, history, feats)
    s = model.score_all(torch.tensor([4]))[0]
    both_missing = ~(feats["image"].present | feats["text"].present)
    assert torch.all(s[both_missing] == 0)
    assert torch.any(s[~both_missing] != 0)
