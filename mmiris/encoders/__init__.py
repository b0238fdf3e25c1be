"""Pretrained image and text encoders behind one registry (see ``registry``)."""

from mmiris.encoders.registry import (
    IMAGE_ENCODERS,
    TEXT_ENCODERS,
    EncoderSpec,
    get_image_encoder,
    get_text_encoder,
    image_encoder_spec,
    load_image_encoder,
    load_text_encoder,
    text_encoder_spec,
)

__all__ = [
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "EncoderSpec",
    "get_image_encoder",
    "get_text_encoder",
    "image_encoder_spec",
    "load_image_encoder",
    "load_text_encoder",
    "text_encoder_spec",
]
