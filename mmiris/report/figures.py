"""The report's pictures as PNG bytes: training-loss curves (paper Fig. 6), interest relevance
over a user's history (Fig. 1), and poster thumbnails. Matplotlib's Agg backend: no display."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from PIL import Image

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def loss_curves(
    curves: list[tuple[str, np.ndarray, np.ndarray]], validation: list[tuple[str, np.ndarray, np.ndarray]] | None = None
) -> bytes:
    """Training loss against optimiser steps, one line per model (paper Fig. 6); with
    ``validation`` a second panel of validation HR@10 per epoch."""
    panels = 2 if validation else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 3.8), squeeze=False)
    ax = axes[0, 0]
    for n, (label, steps, loss) in enumerate(curves):
        color = PALETTE[n % len(PALETTE)]
        if len(steps) > 60:  # raw steps faint, moving average bold
            ax.plot(steps, loss, color=color, alpha=0.25 if len(steps) < 2000 else 0.08, linewidth=0.6)
            w = max(3, len(steps) // 30)
            smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1 :], smooth, color=color, linewidth=1.8, label=label)
        else:
            ax.plot(
                steps,
                loss,
                color=color,
                linewidth=1.8,
                marker="o" if len(steps) < 15 else None,
                markersize=3,
                label=label,
            )
    finite = [v for _, _, loss in curves for v in np.asarray(loss, dtype=float) if np.isfinite(v)]
    if finite:  # a few spiky steps must not flatten every curve: clip the view at the 99.5th percentile
        lo, hi = float(np.min(finite)), float(np.percentile(finite, 99.5))
        if hi > lo:
            ax.set_ylim(max(0.0, lo - 0.05 * (hi - lo)), hi + 0.05 * (hi - lo))
    ax.set_xlabel("iteration (optimiser step)")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    if validation:
        ax = axes[0, 1]
        for n, (label, epochs, values) in enumerate(validation):
            ax.plot(
                epochs, values, color=PALETTE[n % len(PALETTE)], marker="o", markersize=3, linewidth=1.8, label=label
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("validation HR@10 (sampled)")
        ax.set_title("Validation HR@10")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def relevance_chart(history: list[str], targets: list[str], weights: np.ndarray) -> bytes:
    """Grouped bars: interest relevance a_ij of each history item i (x) to each recommended
    target j (one colour per target), as in the paper's Fig. 1. ``weights`` is [T, H]."""
    T, H = weights.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * H + 2.0), 3.6))
    x = np.arange(H)
    width = 0.8 / max(T, 1)
    for t in range(T):
        ax.bar(
            x + (t - (T - 1) / 2) * width,
            weights[t],
            width,
            color=PALETTE[t % len(PALETTE)],
            label=_short(targets[t], 40),
        )
    ax.set_xticks(x)
    ax.set_xticklabels([_short(h, 22) for h in history], rotation=55, ha="right", fontsize=7)
    ax.set_ylabel(r"interest relevance $a_{ij}$")
    ax.set_title("Relevance of the user's history to each recommendation", fontsize=10)
    ax.legend(fontsize=7, title="recommended", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def thumbnail(data: bytes, height: int = 120) -> tuple[str, bytes] | None:
    """A browser-safe thumbnail (any Pillow-readable format in, JPEG out) or None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            w = max(1, round(img.width * height / max(img.height, 1)))
            img = img.resize((w, height), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=85)
            return "image/jpeg", buf.getvalue()
    except Exception:  # noqa: BLE001 - a broken poster must not break the report
        return None


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
