"""Doc2Vec (gensim), the paper's alternative text encoder (Table VI), trained on the catalogue.

The model is trained once on the driver over the normalised texts of the catalogue being
extracted (it has no pretrained weights here), saved to bytes, and shipped to the workers,
which infer one vector per text. Inference seeds its random state from the text, so a
text's vector does not depend on which worker or in which order it was inferred.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger("mmiris.encoders")


@dataclass(frozen=True)
class Doc2VecConfig:
    vector_size: int = 300  # the paper does not give it; 300 is gensim's common choice
    window: int = 8
    min_count: int = 2
    epochs: int = 40
    dm: int = 0  # PV-DBOW: the stronger document model on short texts
    infer_epochs: int = 40
    seed: int = 42
    max_words: int = 10_000  # gensim's own per-document limit

    def to_dict(self) -> dict:
        return asdict(self)


def tokenize(text: str, max_words: int = 10_000) -> list[str]:
    from gensim.utils import simple_preprocess

    return simple_preprocess(text, min_len=1, max_len=30)[:max_words]


def train_doc2vec(texts: list[str], config: Doc2VecConfig = Doc2VecConfig()) -> bytes:
    """Train on ``texts`` (already normalised) and return the pickled model."""
    from gensim.models.doc2vec import TaggedDocument

    docs = [TaggedDocument(tokenize(t, config.max_words), [i]) for i, t in enumerate(texts)]
    if not docs:
        raise ValueError("Doc2Vec needs at least one text to train on")
    # workers=1: gensim's multi-threaded training is not reproducible; the catalogue is small.
    gensim_log = logging.getLogger("gensim")
    level = gensim_log.level
    gensim_log.setLevel(max(level, logging.WARNING))  # one INFO line per epoch is noise
    try:
        model = _train(docs, config)
    finally:
        gensim_log.setLevel(level)
    log.info("Doc2Vec trained on %d texts, vocabulary %d words", len(docs), len(model.wv))
    buf = io.BytesIO()
    pickle.dump(model, buf, protocol=pickle.HIGHEST_PROTOCOL)
    return buf.getvalue()


def _train(docs, config: Doc2VecConfig):
    from gensim.models.doc2vec import Doc2Vec

    model = Doc2Vec(
        vector_size=config.vector_size,
        window=config.window,
        min_count=min(config.min_count, max(1, len(docs) // 2)),
        epochs=config.epochs,
        dm=config.dm,
        seed=config.seed,
        workers=1,
    )
    model.build_vocab(docs)
    model.train(docs, total_examples=len(docs), epochs=config.epochs)
    return model


class Doc2VecEncoder:
    def __init__(self, encoder_id: str, blob: bytes, config: Doc2VecConfig):
        self.id, self.config = encoder_id, config
        self.model = pickle.loads(blob)
        self.weights_sha256 = hashlib.sha256(blob).hexdigest()
        self.weights_path = None
        self.dim = int(self.model.vector_size)
        self.device = "cpu"

    def prepare(self, texts: list[str]) -> tuple[list[tuple[str, list[str]]], int]:
        n_cut = 0
        out = []
        for t in texts:
            words = tokenize(t, self.config.max_words + 1)
            n_cut += len(words) > self.config.max_words
            out.append((t, words[: self.config.max_words]))
        return out, n_cut

    def run(self, prepared: list[tuple[str, list[str]]]) -> np.ndarray:
        out = np.zeros((len(prepared), self.dim), dtype=np.float32)
        for i, (text, words) in enumerate(prepared):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            self.model.random = np.random.RandomState(seed)  # gensim calls .randint
            out[i] = self.model.infer_vector(words, epochs=self.config.infer_epochs)
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.run(self.prepare(texts)[0])

    def describe(self) -> dict:
        return {
            "id": self.id,
            "dim": self.dim,
            "weights_path": None,
            "weights_sha256": self.weights_sha256,
            "preprocessing": {
                "normalize_text": "utf-8|cp1252|latin-1, NFC, whitespace",
                "tokenizer": "gensim.simple_preprocess",
                **self.config.to_dict(),
            },
            "device": "cpu",
            "precision": "fp32",
        }
