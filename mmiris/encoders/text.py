"""Text encoders: a Hugging Face transformer pooled to one vector per text (paper §IV-B, BERT).

Pooling is a masked mean over the last hidden layer by default, for BERT as for MiniLM:
raw ``bert-base-uncased``'s [CLS] state is trained only for next-sentence prediction and is a
poor sentence feature without fine-tuning (Reimers & Gurevych, Sentence-BERT, EMNLP 2019:
averaged BERT token states beat [CLS] on every similarity task they test), and the paper
gives no pooling. ``pooling="cls"`` is available. Sentence-transformers folders
(all-MiniLM-L6-v2) carry their own pooling, length limit and L2 normalisation, which are
honoured so the features match what that model was trained to produce.

``normalize_text`` is the one place raw text becomes encoder input: bytes that are not
UTF-8 are decoded as cp1252/latin-1, Unicode is NFC-normalised, control characters and runs
of whitespace collapse, and empty or placeholder text ("N/A") is reported missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mmiris.encoders.preprocess import MAX_CHARS, PLACEHOLDERS, NormalizedText, normalize_text, weights_file

__all__ = ["MAX_CHARS", "PLACEHOLDERS", "NormalizedText", "normalize_text", "weights_file"]


class HFTextEncoder:
    """A transformer encoder from a local Hugging Face folder (or a model object, for tests)."""

    def __init__(
        self,
        encoder_id: str,
        model,
        tokenizer,
        *,
        pooling: str = "mean",
        max_length: int = 512,
        l2_normalize: bool = False,
        device: str | torch.device = "cpu",
        weights_path: str | None = None,
        weights_sha256: str | None = None,
    ):
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling {pooling!r}: expected 'mean' or 'cls'")
        self.id = encoder_id
        self.tokenizer = tokenizer
        self.pooling, self.max_length, self.l2_normalize = pooling, max_length, l2_normalize
        self.device = torch.device(device)
        self.weights_path, self.weights_sha256 = weights_path, weights_sha256
        self.model = model.eval().to(self.device)
        # fp16 autocast on CUDA: BERT-family inference is stable in fp16 (LayerNorm and softmax
        # run in fp32 under autocast); CPU stays fp32. Features are returned as fp32.
        self.autocast = self.device.type == "cuda"
        self.dim = int(model.config.hidden_size)

    @classmethod
    def from_folder(
        cls,
        encoder_id: str,
        folder: str | Path,
        *,
        pooling: str | None = None,
        max_length: int | None = None,
        device="cpu",
        weights_sha256: str | None = None,
    ) -> HFTextEncoder:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per worker is noise
        folder = Path(folder)
        st = sentence_transformers_config(folder)
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
        limit = min(int(getattr(tok, "model_max_length", 512) or 512), int(model.config.max_position_embeddings))
        return cls(
            encoder_id,
            model,
            tok,
            pooling=pooling or st.get("pooling", "mean"),
            max_length=max_length or min(st.get("max_length", limit), limit),
            l2_normalize=st.get("l2_normalize", False),
            device=device,
            weights_path=str(weights_file(folder) or folder),
            weights_sha256=weights_sha256,
        )

    def prepare(self, texts: list[str]) -> tuple[dict, int]:
        """Tokenise (runs in the prefetch thread). Returns inputs and how many were cut."""
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        n_cut = int((enc["attention_mask"].sum(1) >= self.max_length).sum())
        return dict(enc), n_cut

    def run(self, inputs: dict) -> np.ndarray:
        with torch.inference_mode():
            inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
            if self.autocast:
                with torch.autocast("cuda", dtype=torch.float16):
                    hidden = self.model(**inputs).last_hidden_state
            else:
                hidden = self.model(**inputs).last_hidden_state
            hidden = hidden.float()
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            if self.l2_normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return pooled.cpu().numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.run(self.prepare(texts)[0])

    def describe(self) -> dict:
        return {
            "id": self.id,
            "dim": self.dim,
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "preprocessing": {
                "normalize_text": "utf-8|cp1252|latin-1, NFC, whitespace",
                "tokenizer": type(self.tokenizer).__name__,
                "max_length": self.max_length,
                "pooling": self.pooling,
                "l2_normalize": self.l2_normalize,
            },
            "device": str(self.device),
            "precision": "fp16-autocast" if self.autocast else "fp32",
        }


def sentence_transformers_config(folder: Path) -> dict:
    """Pooling, length limit and normalisation a sentence-transformers folder declares."""
    out: dict = {}
    modules = folder / "modules.json"
    if not modules.exists():
        return out
    for mod in json.loads(modules.read_text()):
        kind = mod.get("type", "")
        if kind.endswith("Pooling"):
            cfg = json.loads((folder / mod["path"] / "config.json").read_text())
            out["pooling"] = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
        elif kind.endswith("Normalize"):
            out["l2_normalize"] = True
    sbert = folder / "sentence_bert_config.json"
    if sbert.exists():
        length = json.loads(sbert.read_text()).get("max_seq_length")
        if length:
            out["max_length"] = int(length)
    return out


def tiny_random_bert(tokenizer_folder: str | Path, seed: int = 0, hidden: int = 32):
    """A 2-layer randomly initialised BERT over a local tokenizer, for tests (no download)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_folder, local_files_only=True)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    from mmiris.encoders.image import seeded_init

    return seeded_init(BertModel(cfg), seed, std=0.02), tok
