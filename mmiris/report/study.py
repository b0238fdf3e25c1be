"""The ML-1M study's tables and validation curves (benchmarks/study.py writes the rows file;
``mmiris report --study FILE`` and docs/study.md show them).

The tables follow the paper's: Table II (every method, emb 16), Table IV/V (the item-similarity
family at emb 16 / 64, HR and NDCG at 10 and 20), Table VI (text encoders), plus the
shuffled-content control. Each cell is mean ± std over the seeds run (std only with ≥ 2
seeds); the paper's published value sits beside it where it has one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmiris.errors import MmirisError

# The paper's ML-1M numbers (its own split, not NCF's): Table II (emb 64 per Table V), IV, V, VI.
PAPER_TABLE_IV = {
    "fism": (0.7914, 0.5384, 0.8945, 0.5597),
    "nais": (0.7992, 0.5523, 0.9025, 0.5760),
    "image_iris": (0.8083, 0.5556, 0.9040, 0.5776),
    "multimodal_iris": (0.8113, 0.5639, 0.9053, 0.5798),
}
PAPER_TABLE_V = {
    "fism": (0.8136, 0.5750, 0.9066, 0.5941),
    "nais": (0.8194, 0.5736, 0.9109, 0.6025),
    "image_iris": (0.8247, 0.5876, 0.9147, 0.6113),
    "multimodal_iris": (0.8293, 0.5898, 0.9149, 0.6123),
}
PAPER_TABLE_II = {
    "vbpr": (0.7852, 0.5386),
    "fism": (0.8136, 0.5750),
    "neumf": (0.8101, 0.5519),
    "nais": (0.8194, 0.5736),
    "image_iris": (0.8247, 0.5876),
    "image_add_text_iris": (0.8252, 0.5875),
    "multimodal_iris": (0.8293, 0.5898),
}
PAPER_TABLE_VI = {
    16: {"bert": (0.8113, 0.5639), "doc2vec": (0.8088, 0.5573)},
    64: {"bert": (0.8293, 0.5898), "doc2vec": (0.8270, 0.5891)},
}
# NAIS (TKDE 2018) Table 5 and NCF on the NCF ML-1M split, emb 16 — the split we run on.
NCF_SPLIT_PUBLISHED = {
    "itempop": (0.4536, 0.2543),
    "fism": (0.6647, 0.3949),
    "nais_concat": (0.6972, 0.4196),
    "nais_prod": (0.6969, 0.4194),
    "mf": (0.6664, 0.3973),
    "neumf": (0.726, 0.445),
}

LABELS = {
    "itempop": "ItemPop",
    "mf": "MF",
    "ease": "EASE",
    "fism": "FISM",
    "nais_prod": "NAIS_prod",
    "nais_concat": "NAIS_concat",
    "vbpr": "VBPR",
    "neumf": "NeuMF",
    "image_iris": "Image IRIS",
    "image_add_text_iris": "Image-add-Text IRIS",
    "multimodal_iris": "Multimodal IRIS",
    "hybrid_iris": "Hybrid IRIS",
    "content_knn": "content kNN",
}
VARIANT_LABELS = {"nodrop": "no content dropout"}  # variants shown as extra rows of Table II
TABLE_II_ORDER = [
    "itempop",
    "mf",
    "ease",
    "content_knn",
    "vbpr",
    "neumf",
    "fism",
    "nais_prod",
    "nais_concat",
    "image_iris",
    "image_add_text_iris",
    "multimodal_iris",
]
FAMILY_ORDER = ["fism", "nais_prod", "nais_concat", "image_iris", "image_add_text_iris", "multimodal_iris"]


@dataclass
class Cell:
    mean: float | None
    std: float | None
    n: int

    def text(self, digits: int = 4) -> str:
        if self.mean is None:
            return "–"
        if self.n >= 2:
            return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"
        return f"{self.mean:.{digits}f}"


def load_study(path: str | Path) -> dict:
    """The rows file written by benchmarks.study (``{"rows": [...], "summary": ...}``)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise MmirisError(
            f"--study {p}: no such file (benchmarks.study writes benchmarks/results/study.json)"
        ) from None
    except json.JSONDecodeError as exc:
        raise MmirisError(f"--study {p}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise MmirisError(f"--study {p}: expected an object with a 'rows' list (benchmarks.study's format)")
    return doc


def _rows(doc: dict, model: str, emb: int, variant: str = "") -> list[dict]:
    return [
        r
        for r in doc["rows"]
        if "error" not in r and r.get("model") == model and r.get("emb") == emb and (r.get("variant") or "") == variant
    ]


def cell(doc: dict, model: str, emb: int, key: str, variant: str = "") -> Cell:
    vals = np.asarray([r[key] for r in _rows(doc, model, emb, variant) if r.get(key) is not None], dtype=float)
    if not len(vals):
        return Cell(None, None, 0)
    return Cell(float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals))


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def tables(doc: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) for each study table; cells are strings."""
    out = []
    head = [
        "model",
        "seeds",
        "HR@10",
        "NDCG@10",
        "full HR@10",
        "full NDCG@10",
        "valid HR@10",
        "best epoch",
        "stopped",
        "s / epoch",
        "expl. overlap",
        "published (NCF split)",
        "paper (own split)",
    ]
    body = []
    for m, v in [(m, "") for m in TABLE_II_ORDER] + [("hybrid_iris", ""), ("hybrid_iris", "nodrop")]:
        rs = _rows(doc, m, 16, v)
        if not rs:
            continue
        pub = NCF_SPLIT_PUBLISHED.get(m) if not v else None
        paper = PAPER_TABLE_II.get("nais" if m.startswith("nais") else m) if not v else None
        body.append(
            [
                LABELS.get(m, m) + (f", {VARIANT_LABELS[v]}" if v else ""),
                ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"])),
                cell(doc, m, 16, "hr10", v).text(),
                cell(doc, m, 16, "ndcg10", v).text(),
                cell(doc, m, 16, "full_hr10", v).text(),
                cell(doc, m, 16, "full_ndcg10", v).text(),
                cell(doc, m, 16, "valid_hr10", v).text(),
                cell(doc, m, 16, "best_epoch", v).text(1),
                "/".join(sorted({r["stopped"] for r in rs})),
                cell(doc, m, 16, "epoch_seconds", v).text(1),
                cell(doc, m, 16, "explanation_overlap", v).text(3),
                f"{pub[0]:.4f} / {pub[1]:.4f}" if pub else "–",
                f"{paper[0]:.4f} / {paper[1]:.4f}" if paper else "–",
            ]
        )
    out.append(
        (
            "Table II: every method, emb 16 (test: each user's latest item, HR/NDCG@10 against the 99 "
            "NCF negatives; full: against all unseen items; valid: a random held-out item, 99 sampled "
            "negatives)",
            head,
            body,
        )
    )

    for emb, paper_t, name in ((16, PAPER_TABLE_IV, "IV"), (64, PAPER_TABLE_V, "V")):
        head_f = ["model", "seeds", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "paper HR@10 / NDCG@10 / HR@20 / NDCG@20"]
        body_f = []
        for m in FAMILY_ORDER + ["hybrid_iris"]:
            if not _rows(doc, m, emb):
                continue
            p = paper_t.get("nais" if m.startswith("nais") else m)
            body_f.append(
                [LABELS.get(m, m), str(cell(doc, m, emb, "hr10").n)]
                + [cell(doc, m, emb, k).text() for k in ("hr10", "ndcg10", "hr20", "ndcg20")]
                + [" / ".join(f"{v:.4f}" for v in p) if p else "–"]
            )
        if body_f:
            out.append((f"Table {name}: the item-similarity family, emb {emb}", head_f, body_f))

    head_c = ["row", "seeds", "HR@10", "NDCG@10", "full HR@10", "full NDCG@10"]
    body_c = []
    for label, model, variant in (
        ("Multimodal IRIS, real features", "multimodal_iris", ""),
        ("Multimodal IRIS, features shuffled across items", "multimodal_iris", "shuffled"),
        ("Image-add-Text IRIS, real features", "image_add_text_iris", ""),
        ("Image-add-Text IRIS, features shuffled across items", "image_add_text_iris", "shuffled"),
        ("NAIS_concat (no content)", "nais_concat", ""),
    ):
        if variant == "" and model == "image_add_text_iris" and not _rows(doc, model, 16, "shuffled"):
            continue  # its real-features row is in Table II; here only beside its control
        if _rows(doc, model, 16, variant):
            body_c.append(
                [label, str(cell(doc, model, 16, "hr10", variant).n)]
                + [cell(doc, model, 16, k, variant).text() for k in ("hr10", "ndcg10", "full_hr10", "full_ndcg10")]
            )
    if body_c:
        out.append(("Control: do the features carry signal the model uses? (emb 16)", head_c, body_c))

    head_b = ["row", "seeds", "HR@10", "NDCG@10", "full HR@10", "expl. overlap"]
    body_b = []
    for label, variant in (
        ("Multimodal IRIS, one user per batch (the NAIS paper's batching)", ""),
        ("Multimodal IRIS, users mixed in every batch", "mixed"),
    ):
        if _rows(doc, "multimodal_iris", 16, "mixed") and _rows(doc, "multimodal_iris", 16, variant):
            body_b.append(
                [label, str(cell(doc, "multimodal_iris", 16, "hr10", variant).n)]
                + [
                    cell(doc, "multimodal_iris", 16, k, variant).text()
                    for k in ("hr10", "ndcg10", "full_hr10", "explanation_overlap")
                ]
            )
    if body_b:
        out.append(("Batch composition: does it decide the attention collapse? (emb 16)", head_b, body_b))

    head_t = ["text encoder", "emb", "HR@10", "NDCG@10", "paper HR@10 / NDCG@10 (BERT row: BERT)"]
    body_t = []
    for label, variant, key in (
        ("all-MiniLM-L6-v2 (our BERT stand-in)", "", "bert"),
        ("Doc2Vec", "doc2vec", "doc2vec"),
    ):
        for emb in (16, 64):
            if _rows(doc, "multimodal_iris", emb, variant):
                hr, ndcg = PAPER_TABLE_VI[emb][key]
                body_t.append(
                    [
                        label,
                        str(emb),
                        cell(doc, "multimodal_iris", emb, "hr10", variant).text(),
                        cell(doc, "multimodal_iris", emb, "ndcg10", variant).text(),
                        f"{hr:.4f} / {ndcg:.4f}",
                    ]
                )
    if body_t:
        out.append(("Table VI: text encoders for Multimodal IRIS", head_t, body_t))
    return out


def markdown(doc: dict) -> str:
    """The study tables as GitHub markdown (pasted into docs/study.md)."""
    parts = []
    for caption, head, body in tables(doc):
        parts.append(f"**{caption}**\n")
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + "---|" * len(head))
        parts.extend("| " + " | ".join(r) + " |" for r in body)
        parts.append("")
    return "\n".join(parts)


def curves(doc: dict, emb: int = 16) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, epochs, validation HR@10) per row with a curve (the paper's Fig. 6, on validation)."""
    out = []
    for r in sorted(doc["rows"], key=lambda r: (r.get("model", ""), r.get("variant") or "", r.get("seed", 0))):
        if "error" in r or r.get("emb") != emb or not r.get("valid_curve"):
            continue
        label = (
            LABELS.get(r["model"], r["model"]) + (f" ({r['variant']})" if r.get("variant") else "") + f" s{r['seed']}"
        )
        y = np.asarray(r["valid_curve"], dtype=float)
        out.append((label, np.arange(1, len(y) + 1), y))
    return out


def curves_png(doc: dict, emb: int = 16) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmiris.report.figures import _png

    cs = curves(doc, emb)
    if not cs:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, x, y in cs:
        ax.plot(x, y, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation HR@10")
    ax.set_title(f"Validation HR@10 per epoch, emb {emb} (cf. the paper's Fig. 6)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def html_section(doc: dict, curves16: bytes | None, source: str) -> str:
    """The study's tables and curves as an HTML fragment (``mmiris report --study FILE``)."""
    from mmiris.report.html import data_uri, e

    out = [
        "<h2>ML-1M study (benchmarks.study)</h2>",
        f"<p class='muted'>From <code>{e(source)}</code>: each row trained to early stopping on validation "
        "HR@10, then evaluated on the test items; mean ± std over seeds where several were run.</p>",
    ]
    for caption, head, body in tables(doc):
        out.append(
            f"<table class='metrics'><caption>{e(caption)}</caption><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in head)
            + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body)
            + "</table>"
        )
    if curves16:
        out.append(
            "<h3>Validation HR@10 per epoch (like the paper's Fig. 6)</h3>"
            f"<figure><img class='chart' alt='validation curves' src='{data_uri('image/png', curves16)}'>"
            "<figcaption>One line per study row at emb 16.</figcaption></figure>"
        )
    return "\n".join(out)
