"""The training configuration (paper §IV-D defaults) and the one device policy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from typing import TYPE_CHECKING

from mmiris.errors import MmirisError
from mmiris.typed_config import config_from_dict

if TYPE_CHECKING:
    import torch

LOSSES = ("log", "bpr", "squared")


@dataclass
class TrainConfig:
    lr: float = 0.001  # Adam, initial learning rate (§IV-D)
    batch_size: int = 512  # training instances (positives + negatives) per global batch (§IV-D)
    epochs: int = 20  # upper bound; early stopping usually ends sooner
    negatives: int = 4  # K sampled negatives per positive, resampled every epoch (§IV-D, [7])
    loss: str = "log"  # log: pointwise log loss (eq. 10/12); bpr (eq. 11); squared (eq. 9)
    patience: int = 3  # epochs without a better validation HR@10 before stopping
    seed: int = 0  # model init, negative sampling and batch order
    eval_every: int = 1  # validate every this many epochs (early stopping counts validations)
    # Below: how to run, not what is learned — kept out of the model artifact's version key.
    device: str = "auto"  # auto: cuda if available, else cpu
    threads: int = 0  # torch intra-op threads per process; 0 keeps torch's default
    checkpoint_steps: int = 0  # also checkpoint every this many steps inside an epoch; 0: epoch ends only
    eval_batch_pairs: int = 1 << 22  # user × candidate × history triples per validation batch

    RUNTIME = ("device", "threads", "checkpoint_steps", "eval_batch_pairs")

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise MmirisError(f"train config: loss {self.loss!r} is not one of {LOSSES}")
        for name in ("batch_size", "epochs", "patience", "eval_every"):
            if getattr(self, name) < 1:
                raise MmirisError(f"train config: {name} must be >= 1, got {getattr(self, name)}")
        if self.negatives < 1:
            raise MmirisError(f"train config: negatives must be >= 1, got {self.negatives}")
        if not self.lr > 0:
            raise MmirisError(f"train config: lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)

    def key_params(self) -> dict:
        """What determines the learned model (the artifact's version key)."""
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return config_from_dict(cls, d, what="train config")


def pick_device(policy: str = "auto", local_rank: int = 0) -> "torch.device":
    """The one device policy: ``auto`` = this rank's GPU if CUDA is available, else CPU.
    float32 everywhere (the models are small; no mixed precision)."""
    import torch

    if policy == "auto":
        policy = "cuda" if torch.cuda.is_available() else "cpu"
    if policy == "cuda":
        if not torch.cuda.is_available():
            raise MmirisError("train config: device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    if policy == "cpu":
        return torch.device("cpu")
    raise MmirisError(f"train config: device {policy!r}: expected auto, cpu or cuda")
