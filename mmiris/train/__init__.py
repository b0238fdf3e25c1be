"""Training: the sampler, the loop, DDP setup, checkpoints and the model loader."""

from mmiris.train.checkpoint import load_model
from mmiris.train.config import TrainConfig, pick_device

__all__ = ["TrainConfig", "load_model", "pick_device"]
