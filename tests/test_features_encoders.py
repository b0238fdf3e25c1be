"""Encoders without Dask: registry, image decoding of bad inputs, text normalisation, pooling."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mmiris.encoders import (
    get_image_encoder,
    get_text_encoder,
    image_encoder_spec,
    text_encoder_spec,
)
from mmiris.encoders.image import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing, decode_image
from mmiris.encoders.text import normalize_text
from mmiris.errors import MmirisError

PREP = ImagePreprocessing(resize=40, crop=32)


def encode_image(mode="RGB", size=(60, 80), color=(200, 30, 10), fmt="JPEG", **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt, **save)
    return buf.getvalue()


# ---------------------------------------------------------------- registry
def test_registry_resolves_names_and_reads_dims_from_the_encoder():
    cnn = get_image_encoder("tiny-random-cnn")
    assert cnn.dim == 32 and cnn.encode(torch.zeros(2, 3, 32, 32)).shape == (2, 32)
    bert = get_text_encoder("tiny-random-bert")
    assert bert.dim == 32 and bert.encode(["a", "b c"]).shape == (2, 32)
    with pytest.raises(MmirisError, match="not a registered name"):
        image_encoder_spec("no-such-encoder")


def test_offline_defaults_carry_real_weights_with_hashes():
    from mmiris.artifacts import file_sha256

    spec = image_encoder_spec("efficientnet-lite0")
    assert spec.weights_sha256 == file_sha256(spec.path)
    enc = get_image_encoder(spec)
    assert enc.dim == 1280  # pooled EfficientNet-Lite0, read by running the model
    tspec = text_encoder_spec("minilm")
    assert tspec.id == "all-MiniLM-L6-v2" and len(tspec.weights_sha256) == 64
    minilm = get_text_encoder(tspec)
    assert minilm.dim == 384 and minilm.l2_normalize and minilm.pooling == "mean"
    v = minilm.encode(["a man walks his dog", "a person walks a dog", "tax law of 1986"])
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # real pretrained weights, not random


def test_local_weights_file_architecture_is_read_from_its_keys(tmp_path):
    import torchvision

    path = tmp_path / "my-resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    spec = image_encoder_spec(str(path))
    assert spec.family == "resnet18" and spec.weights_sha256
    assert get_image_encoder(spec).dim == 512
    bad = tmp_path / "junk.pth"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(MmirisError, match="cannot tell the architecture"):
        image_encoder_spec(str(bad))


def test_batchnorm_folding_keeps_the_outputs():
    import torchvision

    from mmiris.encoders.image import efficientnet_lite0, fold_conv_bn
    from mmiris.encoders.registry import efficientnet_lite0_weights

    net = torchvision.models.resnet18(weights=None)
    gen = torch.Generator().manual_seed(0)
    for m in net.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    net.eval()
    x = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.inference_mode():
        expected = net(x)
        folded = fold_conv_bn(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, atol=1e-4, rtol=1e-4)
        w = str(efficientnet_lite0_weights())
        x = torch.randn(2, 3, 224, 224, generator=gen)
        torch.testing.assert_close(
            efficientnet_lite0(w, fold=True)(x), efficientnet_lite0(w, fold=False)(x), atol=1e-4, rtol=1e-4
        )


# ---------------------------------------------------------------- images
def test_uniform_image_preprocesses_to_the_imagenet_normalised_colour():
    out = decode_image(encode_image(fmt="PNG", color=(200, 30, 10)), PREP)
    assert out.reason is None and out.tensor.shape == (3, 32, 32)
    expected = [(c / 255 - m) / s for c, m, s in zip((200, 30, 10), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(out.tensor.mean((1, 2)), torch.tensor(expected), atol=1e-4)


@pytest.mark.parametrize(
    "case, data, treatment",
    [
        ("png", encode_image(fmt="PNG"), "format_PNG"),
        ("tiff", encode_image(fmt="TIFF"), "format_TIFF"),
        ("cmyk", encode_image("CMYK", color=(0, 200, 200, 0)), "mode_CMYK"),
        ("greyscale", encode_image("L", color=90), "mode_L"),
        ("16-bit tiff", None, "mode_I;16"),
        ("rgba", encode_image("RGBA", color=(10, 20, 30, 0), fmt="PNG"), "mode_RGBA"),
        ("palette", encode_image("P", color=3, fmt="GIF"), "mode_P"),
        ("small", encode_image(size=(20, 24)), "upscaled"),
    ],
)
def test_odd_images_are_normalised_to_rgb(case, data, treatment):
    if case == "16-bit tiff":
        buf = io.BytesIO()
        Image.fromarray(np.arange(60 * 80, dtype=np.uint16).reshape(60, 80) * 9).save(buf, "TIFF")
        data = buf.getvalue()
    out = decode_image(data, PREP)
    assert out.reason is None, out.reason
    assert out.tensor.shape == (3, 32, 32) and torch.isfinite(out.tensor).all()
    assert treatment in out.treatments
    if case == "rgba":  # transparent pixels composite onto white
        white = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
        assert torch.allclose(out.tensor.mean((1, 2)), torch.tensor(white), atol=1e-4)


def test_exif_rotation_is_applied():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    Image.new("RGB", (80, 40), (1, 2, 3)).save(buf, "JPEG", exif=exif.tobytes())
    assert "exif_rotated" in decode_image(buf.getvalue(), PREP).treatments


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "no_image"),
        (None, "no_image"),
        (b"this is not an image", "corrupt_image"),
        (encode_image()[:200], "corrupt_image"),  # truncated JPEG
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt_image"),  # a PNG header and nothing else
        (encode_image(size=(1, 1), fmt="GIF"), "image_too_small"),  # 1x1 "no image" placeholder
    ],
)
def test_unusable_images_are_reported_not_raised(data, reason):
    out = decode_image(data, PREP)
    assert out.tensor is None and out.reason.startswith(reason)


# ---------------------------------------------------------------- texts
@pytest.mark.parametrize(
    "value, text, reason, treatment",
    [
        ("  A  plot\twith\n\nspaces ", "A plot with spaces", None, None),
        ("", None, "empty_text", None),
        ("   \n ", None, "empty_text", None),
        ("N/A", None, "empty_text", None),
        (None, None, "no_text", None),
        ("Cafe\u0301 noir", "Caf\u00e9 noir", None, None),  # NFC
        ("bell\x07 and \x00 nul", "bell and nul", None, None),
        ("caf\xe9 cr\xe8me".encode("cp1252"), "caf\u00e9 cr\u00e8me", None, "decoded_cp1252"),
        (b"\x81caf\xe9", "caf\u00e9", None, "decoded_latin1"),  # not cp1252 either; C1 dropped
        (b"caf\xe9".decode("utf-8", "surrogateescape"), "caf\u00e9", None, "decoded_cp1252"),
        ("x" * 200_000, "x" * 100_000, None, "truncated_chars"),
    ],
)
def test_normalize_text(value, text, reason, treatment):
    out = normalize_text(value)
    assert (out.text, out.reason) == (text, reason)
    if treatment:
        assert treatment in out.treatments


def test_masked_mean_pooling_ignores_padding_and_cls_pooling_reads_the_first_token():
    enc = get_text_encoder("tiny-random-bert")
    texts = ["short", "a much longer text that forces padding on the short one " * 3]
    batched = enc.encode(texts)
    alone = np.stack([enc.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    # reference: masked mean of the last hidden states, written out by hand
    inputs = enc.tokenizer(texts[:1], return_tensors="pt")
    with torch.no_grad():
        hidden = enc.model(**inputs).last_hidden_state[0]
    np.testing.assert_allclose(batched[0], hidden.mean(0).numpy(), atol=1e-5)
    cls = get_text_encoder("tiny-random-bert", pooling="cls")
    np.testing.assert_allclose(cls.encode(texts[:1])[0], hidden[0].numpy(), atol=1e-5)


def test_very_long_text_is_cut_at_the_token_limit():
    enc = get_text_encoder("tiny-random-bert", max_length=16)
    inputs, n_cut = enc.prepare(["word " * 1000, "two words"])
    assert inputs["input_ids"].shape[1] == 16 and n_cut == 1


def test_doc2vec_is_trained_on_the_texts_and_infers_deterministically():
    from mmiris.encoders.doc2vec import Doc2VecConfig, Doc2VecEncoder, train_doc2vec

    corpus = [f"a story about {w} and the {w} family" for w in ("dogs", "cats", "ships", "kings")] * 3
    cfg = Doc2VecConfig(vector_size=16, epochs=5, infer_epochs=5)
    enc = Doc2VecEncoder("doc2vec", train_doc2vec(corpus, cfg), cfg)
    assert enc.dim == 16
    a = enc.encode(["a story about ships", "the cats family"])
    b = enc.encode(["the cats family", "a story about ships"])
    np.testing.assert_array_equal(a, b[::-1])  # same text, same vector, whatever the order
