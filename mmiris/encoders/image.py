"""Image encoders: a CNN trunk whose pooled output is the item's visual feature (paper §IV-B).

``ImageEncoder`` wraps any module mapping a normalised ``[B, 3, crop, crop]`` batch to
``[B, dim]``; ``dim`` is read by running the module once, never hard-coded. ``decode_image``
turns raw bytes into that input, normalising what real catalogues contain (CMYK, greyscale,
16-bit, palette, alpha, EXIF rotation) and reporting what it cannot use as a reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torchvision.transforms import functional as TF

from mmiris.encoders.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImagePreprocessing", "decode_image"]


@dataclass
class DecodedImage:
    tensor: torch.Tensor | None  # [3, crop, crop] float32, or None when unusable
    reason: str | None = None  # why unusable
    treatments: tuple[str, ...] = ()  # normalisations applied, counted in the manifest stats


def decode_image(data: bytes | None, prep: ImagePreprocessing) -> DecodedImage:
    """Decode by content (not file name) and preprocess. Never raises on bad bytes."""
    if not data:
        return DecodedImage(None, "no_image")
    treatments: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF/ICC; we count what matters
            img: Image.Image = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt == "JPEG":
                # Let libjpeg decode at a reduced DCT scale when the image is much larger
                # than needed: same result after resize, several times less decode work.
                img.draft("RGB", (prep.resize, prep.resize))
            img.load()
            img = _to_rgb(img, treatments)
    except Image.DecompressionBombError as exc:
        return DecodedImage(None, f"image_too_large: {exc}")
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-item missing value
        return DecodedImage(None, f"corrupt_image: {type(exc).__name__}: {exc}"[:300])
    w, h = img.size
    if min(w, h) < prep.min_side:
        return DecodedImage(None, f"image_too_small: {w}x{h} (min side {prep.min_side})")
    if fmt != "JPEG":
        treatments.append(f"format_{fmt}")
    if min(w, h) < prep.crop:
        treatments.append("upscaled")
    interp = TF.InterpolationMode(prep.interpolation)
    img = TF.resize(img, prep.resize, interpolation=interp, antialias=True)
    img = TF.center_crop(img, prep.crop)
    x = TF.to_tensor(img)
    x = TF.normalize(x, prep.mean, prep.std)
    return DecodedImage(x, None, tuple(treatments))


def _to_rgb(img: Image.Image, treatments: list[str]) -> Image.Image:
    if img.getexif().get(0x0112, 1) not in (1, None):  # EXIF Orientation: camera rotated
        img = ImageOps.exif_transpose(img)
        treatments.append("exif_rotated")
    if getattr(img, "n_frames", 1) > 1:
        treatments.append("first_frame")
    mode = img.mode
    if mode == "RGB":
        return img
    treatments.append(f"mode_{mode}")
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit / float greyscale (TIFF, PNG): rescale the actual range to 0..255.
        a = np.asarray(img, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Transparent areas become white, as they are shown on a page.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


class ImageEncoder:
    """A loaded image encoder. ``encode`` runs batched inference; see ``dim``."""

    def __init__(
        self,
        encoder_id: str,
        model: nn.Module,
        prep: ImagePreprocessing,
        device: str | torch.device = "cpu",
        weights_path: str | None = None,
        weights_sha256: str | None = None,
    ):
        self.id = encoder_id
        self.prep = prep
        self.device = torch.device(device)
        self.weights_path = weights_path
        self.weights_sha256 = weights_sha256
        # channels_last: oneDNN's fast convolution layout on CPU (about 1.7x for
        # EfficientNet-Lite0 at one thread here), tensor-core friendly on CUDA.
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        # One dtype policy: fp32 on CPU; fp16 autocast on CUDA (convolutions, BN and pooling of
        # ImageNet CNNs are stable in fp16; features are returned as fp32).
        self.autocast = self.device.type == "cuda"
        with torch.inference_mode():
            probe = torch.zeros(1, 3, prep.crop, prep.crop, device=self.device)
            self.dim = int(self._forward(probe).shape[1])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast:
            with torch.autocast("cuda", dtype=torch.float16):
                return self.model(x).float()
        return self.model(x)

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        """``[B, 3, crop, crop]`` preprocessed images to ``[B, dim]`` float32 features."""
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            out = self._forward(x)
            return out.reshape(out.shape[0], -1).float().cpu().numpy()

    run = encode  # the pipeline's name: prepare (decode) in a thread, run on the model

    def describe(self) -> dict:
        return {
            "id": self.id,
            "dim": self.dim,
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.prep.to_dict(),
            "device": str(self.device),
            "precision": "fp16-autocast" if self.autocast else "fp32",
        }


# ------------------------------------------------------------------ trunks (pooled outputs)
class EfficientNetPooled(nn.Module):
    """EfficientNet-Lite trunk + global average pool: the 1280-d input of its classifier."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)  # type: ignore[operator]


def fold_conv_bn(module: nn.Module) -> nn.Module:
    """Fold each BatchNorm2d into the Conv2d registered right before it (inference only).

    Valid where every such pair runs back to back, as in the EfficientNet and ResNet trunks
    built here (tests compare folded and unfolded outputs); saves a pass over every
    activation map, about 1.3x on CPU."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module.eval()
    for parent in module.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                parent._modules[a] = fuse_conv_bn_eval(conv, bn)
                parent._modules[b] = nn.Identity()
    return module


def efficientnet_lite0(weights_path: str, fold: bool = True) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return EfficientNetPooled(fold_conv_bn(net) if fold else net.eval())


def resnet(arch: str, weights_path: str, fold: bool = True) -> nn.Module:
    """A torchvision ResNet with its classifier removed: the pooled (flatten) output."""
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.fc = nn.Identity()
    return fold_conv_bn(net) if fold else net.eval()


def tiny_random_cnn(seed: int = 0, width: int = 16) -> nn.Module:
    """A small randomly initialised CNN for tests: fast, deterministic, no download."""
    net = nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return seeded_init(net, seed)


def seeded_init(module: nn.Module, seed: int, std: float = 0.1) -> nn.Module:
    """Re-draw every parameter from its own generator: the same weights in every worker,
    even when workers are threads of one process building models at the same time (torch's
    global RNG would interleave)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name.lower():
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module
