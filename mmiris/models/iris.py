"""The IRIS models (paper §III-C): the item-similarity score of eq. 5 with attention from the
Interest-Related Network (IRN) over learned projections of pretrained item features.

- ``image_iris`` (eq. 4–5): e_ij = hᵀ f(W1 v_i + W2 v_j + b), v = image tower(image features).
- ``image_add_text_iris`` (eq. 6): + W3 t_i + W4 t_j, t = text tower(text features).
- ``multimodal_iris`` (eq. 7–8): the towers exchange knowledge through W_share.

Towers (§IV-D): image [image_dim → 768 → k], text [text_dim → k], σ after every layer; the
same 768 in all three IRIS variants, so the ablation (Table IV) changes only what it names.
Knowledge sharing (eq. 7–8) sits at the layer where both towers produce k: v² = σ(W_i2i v¹ +
W_share t⁰), t¹ = σ(W_t2t t⁰ + W_share v¹). With the paper's BERT (768-d) v¹ and t⁰ have the
same size and ONE W_share ∈ R^{k×768} serves both directions as eq. 7–8 write it. When the
sizes differ (MiniLM's 384-d text against the 768 image hidden) W_share is two matrices,
384 → k applied to t⁰ in eq. 7 and 768 → k applied to v¹ in eq. 8: the only way the sizes fit.
``image_hidden = None`` picks the text encoder's dimension (the one-matrix form).

A missing modality is a zero vector (§III-D): the raw features are already zero there, and
the tower outputs are masked by the present flags at every layer, so an item without an
image contributes nothing through v (nor through W_share v¹). Per-item tower outputs and IRN
projections (W1 v_i, W2 v_j, …) are computed once per batch for the batch's distinct items.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmiris.models import register
from mmiris.models.item_similarity import AttentiveConfig, AttentiveItemSimilarity
from mmiris.models.layers import activation, linear, sq


@dataclass
class IRISConfig(AttentiveConfig):
    beta: float = 0.8  # smoothed softmax exponent, eq. 4 (paper §IV-D: β = 0.8)
    image_hidden: int | None = 768  # image tower [image_dim → 768 → k] (§IV-D); None: text dim
    # σ of the towers and of eq. 7–8. f of eq. 4 (the IRN's first layer) is ReLU, as in NAIS:
    # the paper allows "ReLU, sigmoid, etc." and both attention paths implement ReLU only.
    tower_activation: str = "relu"
    reg_feature: float = 1e-7  # λ3 of eq. 12 on the tower weights W_i2i, W_t2t

    RENAMED: ClassVar[dict[str, str]] = {"activation": "tower_activation"}  # models published before 2026-11-30


@dataclass
class MultimodalIRISConfig(IRISConfig):
    share: bool = True  # the knowledge-sharing unit (False: the paper's ablation without it)
    reg_share: float = 1e-7  # λ4 of eq. 12 on W_share


class _IRIS(AttentiveItemSimilarity):
    config: IRISConfig
    config_cls = IRISConfig
    towers: tuple[str, ...] = ()
    dense_towers = True  # precision "auto" trains it in bf16 where the CPU has it (train/config.py)
    ROWS = 64  # bf16: the towers' row count is rounded up to a multiple of this (see attention_inputs)

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        k, h = config.emb, config.attention_size
        self.act = activation(config.tower_activation)
        for m in self.modalities:  # not persistent: features come from their artifacts, not checkpoints
            self.register_buffer(f"{m}_features", self.features[m].features.float(), persistent=False)
            self.register_buffer(f"{m}_present", self.features[m].present.bool(), persistent=False)
        self.irn_hist = nn.ModuleDict({m: linear(k, h, bias=False) for m in self.modalities})  # W1, W3
        self.irn_target = nn.ModuleDict({m: linear(k, h, bias=False) for m in self.modalities})  # W2, W4
        self.irn_bias = nn.Parameter(torch.zeros(h))  # b
        self.h = linear(h, 1, bias=False)  # h

    def item_vectors(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tower outputs {modality: [N, k]} for item ids [N] (zero where the modality is missing).
        Under bf16 autocast the tower matmuls run in bf16 (fp32 accumulation); outputs may be bf16."""
        raise NotImplementedError

    def item_tables(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """IRN inputs per item: A = Σ_m W_hist^m x_i^m [N, h] and C = Σ_m W_target^m x_j^m + b [N, h]
        (eq. 4/6 split into a history part and a target part). The towers may run in bf16; the
        IRN projections run in fp32 (tiny k × h matmuls: nothing to gain, precision to lose).
        Subclasses may return more per-item tables after A and C (hybrid_iris does)."""
        return self.irn_tables(self.item_vectors(ids))

    def irn_tables(self, vecs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, C) of ``item_tables`` from tower outputs already computed."""
        with torch.autocast(next(iter(vecs.values())).device.type, enabled=False):
            v = torch.cat([vecs[m].float() for m in self.modalities], dim=1)  # [N, k·M]
            # both sides of every modality in ONE GEMM: [N, k·M] @ [k·M, 2h]
            Wh = torch.cat([self.irn_hist[m].weight for m in self.modalities], dim=1)
            Wt = torch.cat([self.irn_target[m].weight for m in self.modalities], dim=1)
            AC = v @ torch.cat([Wh, Wt], dim=0).t()
            h = Wh.shape[0]
            return AC[:, :h], AC[:, h:] + self.irn_bias

    def batch_tables(self, hist: torch.Tensor, items: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """``item_tables`` of the batch's distinct items (each item's towers once) and the
        inverse index of every history slot, then every target, into them."""
        ids = torch.cat([hist.reshape(-1), items.reshape(-1)])
        uniq, inv = torch.unique(ids, return_inverse=True)
        n = len(uniq)
        dev = ids.device.type
        if torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16:
            # bf16 GEMMs go through oneDNN, which JIT-compiles and caches a kernel per shape: a
            # new item count every step grew the process by ~1 GB over an epoch. Rounding the
            # count up to a multiple of ROWS (padding rows repeat item 0, and are cut off
            # before use, so their gradient is exactly zero) bounds the shapes to n_items / ROWS.
            uniq = F.pad(uniq, (0, -n % self.ROWS))
        return tuple(t[:n] for t in self.item_tables(uniq)), inv

    def attention_inputs(self, hist, items, PH, QT):
        B, L = hist.shape
        cached = getattr(self, "_tables", None)
        if cached is not None and not torch.is_grad_enabled():  # evaluation: whole catalogue once
            A_tab, C_tab = cached[:2]
            return dict(A=A_tab[hist], C=C_tab[items])
        (A_tab, C_tab, *_), inv = self.batch_tables(hist, items)
        return dict(A=A_tab[inv[: B * L]].view(B, L, -1), C=C_tab[inv[B * L :]].view(*items.shape, -1))

    @contextmanager
    def cached_items(self):
        """Evaluation: the towers and IRN projections of every item, computed once (no grad)
        and reused by every ``scores`` call inside the block; exact, as parameters do not
        change there. Evaluation used to recompute them per batch of users (and per chunk of
        the catalogue in ``score_all``)."""
        if getattr(self, "_tables", None) is not None:  # nested: the outer block's tables
            yield
            return
        with torch.no_grad():
            ids = torch.arange(self.n_items, device=self.device)
            self._tables = tuple(t.contiguous() for t in self.item_tables(ids))
        try:
            yield
        finally:
            self._tables = None

    def score_all(self, users):
        with self.cached_items():
            return super().score_all(users)

    def _present(self, m, ids, dtype=None):
        return getattr(self, f"{m}_present")[ids].to(dtype or getattr(self, f"{m}_features").dtype)[:, None]

    def _raw(self, m, ids):
        """Raw features of ``ids``; a bf16 copy of the table is kept while bf16 autocast is on,
        so the gather moves half the bytes and no per-step cast of [N, 1280] is needed."""
        feats = getattr(self, f"{m}_features")
        dev = feats.device.type
        if torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16:
            cache = self.__dict__.setdefault("_bf16_features", {})
            hit = cache.get(m)
            if hit is None or hit[0] is not feats:
                hit = cache[m] = (feats, feats.to(torch.bfloat16))
            return hit[1][ids]
        return feats[ids]

    def regularization(self):
        c = self.config
        r = super().regularization()
        r = r + c.reg_attention * sum(sq(l.weight) for l in [*self.irn_hist.values(), *self.irn_target.values()])
        return r + c.reg_feature * sum(sq(l.weight) for l in self.tower_layers())

    def tower_layers(self) -> list[nn.Linear]:
        raise NotImplementedError


def _image_hidden(config, features) -> int:
    if config.image_hidden is not None:
        return config.image_hidden
    return features["text"].dim if "text" in features else 768


@register
class ImageIRIS(_IRIS):
    name = "image_iris"
    modalities: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        hid = _image_hidden(config, self.features)
        self.image1 = linear(self.features["image"].dim, hid)  # W_i2i^0
        self.image2 = linear(hid, config.emb)  # W_i2i^1

    def item_vectors(self, ids):
        x = self._raw("image", ids)
        pres = self._present("image", ids, x.dtype)
        v1 = self.act(self.image1(x))
        v1 = v1 * pres.to(v1.dtype)
        v2 = self.act(self.image2(v1))
        return {"image": v2 * pres.to(v2.dtype)}

    def tower_layers(self):
        return [self.image1, self.image2]


@register
class ImageAddTextIRIS(ImageIRIS):
    name = "image_add_text_iris"
    modalities = ("image", "text")

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        self.text1 = linear(self.features["text"].dim, config.emb)  # W_t2t

    def item_vectors(self, ids):
        out = super().item_vectors(ids)
        t1 = self.act(self.text1(self._raw("text", ids)))
        out["text"] = t1 * self._present("text", ids, t1.dtype)
        return out

    def tower_layers(self):
        return [self.image1, self.image2, self.text1]


@register
class MultimodalIRIS(ImageAddTextIRIS):
    name = "multimodal_iris"
    config: MultimodalIRISConfig
    config_cls = MultimodalIRISConfig

    def __init__(self, config, n_users, n_items, history=None, features=None):
        super().__init__(config, n_users, n_items, history, features)
        text_dim, hid = self.features["text"].dim, self.image1.out_features
        self.share_t2v = linear(text_dim, config.emb, bias=False) if config.share else None  # W_share (eq. 7)
        if config.share and hid != text_dim:  # sizes differ: a second matrix for eq. 8's direction
            self.share_v2t = linear(hid, config.emb, bias=False)
        else:
            self.share_v2t = None

    def _share_v(self):  # the matrix applied to v¹ in eq. 8
        return self.share_v2t if self.share_v2t is not None else self.share_t2v

    def item_vectors(self, ids):
        v0, t0 = self._raw("image", ids), self._raw("text", ids)
        pv, pt = self._present("image", ids, v0.dtype), self._present("text", ids, t0.dtype)
        t0 = t0 * pt
        v1 = self.act(self.image1(v0))
        v1 = v1 * pv.to(v1.dtype)
        k = self.config.emb
        if self.share_t2v is None:
            v2, t1 = self.act(self.image2(v1)), self.act(self.text1(t0))
        elif self.share_v2t is None:  # one W_share (v¹ and t⁰ the same size): each side in one GEMM
            # [v¹; t⁰] @ [W_i2i¹ W_share; W_share W_t2t⁰]-style: v² and t¹ pre-activations together
            vt = torch.cat([v1, t0.to(v1.dtype)], dim=1)
            Ws = self.share_t2v.weight
            W = torch.cat([torch.cat([self.image2.weight, Ws], 1), torch.cat([Ws, self.text1.weight], 1)], 0)
            pre = F.linear(vt, W, torch.cat([self.image2.bias, self.text1.bias]))
            v2, t1 = self.act(pre[:, :k]), self.act(pre[:, k:])  # eq. 7, eq. 8
        else:  # two W_share: v¹ feeds image2 and share_v2t, t⁰ feeds share_t2v and text1: two GEMMs
            from_v = F.linear(v1, torch.cat([self.image2.weight, self.share_v2t.weight]))
            from_t = F.linear(t0, torch.cat([self.share_t2v.weight, self.text1.weight]))
            v2 = self.act(from_v[:, :k] + from_t[:, :k] + self.image2.bias)  # eq. 7
            t1 = self.act(from_t[:, k:] + from_v[:, k:] + self.text1.bias)  # eq. 8
        return {"image": v2 * pv.to(v2.dtype), "text": t1 * pt.to(t1.dtype)}

    def regularization(self):
        r = super().regularization()
        shares = [m for m in (self.share_t2v, self.share_v2t) if m is not None]
        return r + self.config.reg_share * sum((sq(m.weight) for m in shares), torch.zeros((), device=r.device))
