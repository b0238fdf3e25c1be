"""What the extraction driver needs of the encoders without importing torch: the image
preprocessing record, text normalisation, and where a Hugging Face folder keeps its weights.
``mmiris.encoders.image`` and ``mmiris.encoders.text`` re-export them."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImagePreprocessing:
    """Standard ImageNet evaluation preprocessing: shorter side to ``resize``, centre crop."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    # Images with a side below this carry no content (1x1 "no image" placeholders): missing.
    min_side: int = 16

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


# OMDb writes "N/A" for unknown fields; other sources use similar placeholders.
PLACEHOLDERS = {"n/a", "na", "none", "null", "nan", "-", "--", "?"}
MAX_CHARS = 100_000  # longer texts are cut before tokenising (the encoder reads far less)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACE = re.compile(r"\s+")


@dataclass
class NormalizedText:
    text: str | None
    reason: str | None = None
    treatments: tuple[str, ...] = ()


def normalize_text(value: bytes | str | None, max_chars: int = MAX_CHARS) -> NormalizedText:
    """Decode and clean one text; never raises."""
    if value is None:
        return NormalizedText(None, "no_text")
    treatments: list[str] = []
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            try:
                value = raw.decode("cp1252")
                treatments.append("decoded_cp1252")
            except UnicodeDecodeError:
                value = raw.decode("latin-1")  # total: every byte is a character
                treatments.append("decoded_latin1")
    elif any("\udc80" <= ch <= "\udcff" for ch in value):
        # surrogateescape'd bytes from a non-UTF-8 file read as str: recover the bytes.
        return normalize_text(value.encode("utf-8", "surrogateescape"), max_chars)
    text = unicodedata.normalize("NFC", value)
    if "\ufffd" in text:
        treatments.append("replacement_chars")
    text = _SPACE.sub(" ", _CONTROL.sub(" ", text)).strip()
    if not text or text.lower() in PLACEHOLDERS:
        return NormalizedText(None, "empty_text", tuple(treatments))
    if len(text) > max_chars:
        text = text[:max_chars]
        treatments.append("truncated_chars")
    return NormalizedText(text, None, tuple(treatments))


def weights_file(folder: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return folder / name
    return None
