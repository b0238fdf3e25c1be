"""The training configuration (paper §IV-D defaults) and the one device policy."""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mmiris.errors import MmirisError
from mmiris.typed_config import config_from_dict

if TYPE_CHECKING:
    import torch

LOSSES = ("log", "bpr", "squared")
PRECISIONS = ("auto", "fp32", "bf16")
BATCH_ORDERS = ("auto", "user", "shuffled")
SELECT_ON = ("warm", "cold")


@dataclass
class TrainConfig:
    lr: float = 0.001  # Adam, initial learning rate (§IV-D)
    batch_size: int = 512  # training instances (positives + negatives) per global batch (§IV-D)
    epochs: int = 20  # upper bound; early stopping usually ends sooner
    negatives: int = 4  # K sampled negatives per positive, resampled every epoch (§IV-D, [7])
    loss: str = "log"  # log: pointwise log loss (eq. 10/12); bpr (eq. 11); squared (eq. 9)
    patience: int = 3  # validations (epochs, unless eval_steps) without a better HR@10 before stopping
    seed: int = 0  # model init, negative sampling and batch order
    eval_every: int = 1  # validate every this many epochs (early stopping counts validations)
    # Also validate every this many optimiser steps inside an epoch (counted over the run, as
    # checkpoint_steps); 0: at epoch ends only. For models whose best state comes within an
    # epoch (on cold validation hybrid_iris's learned content metric peaked after 1,000–5,000
    # of an epoch's ~8,300 steps in eight runs, docs/content.md). Patience counts these
    # validations too. It can change the state chosen, so it is part of the version key.
    eval_steps: int = 0
    # Validate and publish an exponential moving average of the parameters (Polyak averaging)
    # with this decay per optimiser step, min(ema, (1 + t) / (10 + t)) at step t so that the
    # starting point fades out; 0: the parameters themselves. Smooths a trajectory whose
    # validations swing between neighbouring steps (hybrid_iris's learned metric, docs/content.md).
    ema: float = 0.0
    # Dense matmuls of the forward/backward (IRIS feature towers above all): "bf16" = bf16
    # autocast, master weights, Adam state, attention softmax and sums stay fp32; "auto" =
    # bf16 where measured faster (IRIS on a CPU with AVX512-BF16/AMX-BF16), else fp32. It
    # changes the numbers slightly, so it is part of the version key (resolved, never "auto").
    precision: str = "auto"
    # Items negatives are drawn from: "all" (the catalogue, as the papers) or "trained" (items
    # with at least one training interaction: a cold-item setting must not train its held-out
    # items as negatives, which a system that has not seen them yet could not do either).
    negatives_from: str = "all"
    # Which positives share a batch: "user" (each user's positives together, users of similar
    # history length side by side: the NAIS paper's batching, and what lets item-similarity
    # models read a history once per row), "shuffled" (positives of all users mixed, as the
    # NCF, BPR and VBPR papers train; for models that read histories, mixed among users of
    # similar history length, so padding stays small), or "auto": "user" for models that read
    # histories, "shuffled" for user-embedding models (MF, VBPR, NeuMF). Resolved before the
    # version key.
    batch_order: str = "auto"
    # Which validation picks the best epoch (early stopping): "warm" scores the validation items
    # as the model does; "cold" scores every candidate as an item the model never saw (its free
    # target rows zeroed, mmiris.models.base.targets_as_new): on the cold-item split, where
    # every test item is new, the epoch that ranks *new* items best, not the one that ranks
    # known items best. Only for models with a content path (``target_rows``: hybrid_iris, vbpr).
    select_on: str = "warm"
    # Below: how to run, not what is learned — kept out of the model artifact's version key.
    device: str = "auto"  # auto: cuda if available, else cpu
    threads: int = 0  # torch intra-op threads per process; 0 keeps torch's default
    checkpoint_steps: int = 0  # also checkpoint every this many steps inside an epoch; 0: epoch ends only
    eval_batch_pairs: int = 1 << 22  # user × candidate × history triples per validation batch

    RUNTIME = ("device", "threads", "checkpoint_steps", "eval_batch_pairs")

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise MmirisError(f"train config: precision {self.precision!r} is not one of {PRECISIONS}")
        if self.negatives_from not in ("all", "trained"):
            raise MmirisError(f"train config: negatives_from {self.negatives_from!r} is not 'all' or 'trained'")
        if self.batch_order not in BATCH_ORDERS:
            raise MmirisError(f"train config: batch_order {self.batch_order!r} is not one of {BATCH_ORDERS}")
        if self.select_on not in SELECT_ON:
            raise MmirisError(f"train config: select_on {self.select_on!r} is not one of {SELECT_ON}")
        if self.loss not in LOSSES:
            raise MmirisError(f"train config: loss {self.loss!r} is not one of {LOSSES}")
        for name in ("batch_size", "epochs", "patience", "eval_every"):
            if getattr(self, name) < 1:
                raise MmirisError(f"train config: {name} must be >= 1, got {getattr(self, name)}")
        if self.eval_steps < 0:
            raise MmirisError(f"train config: eval_steps must be >= 0 (0: at epoch ends only), got {self.eval_steps}")
        if self.eval_steps and self.eval_every != 1:
            raise MmirisError(
                f"train config: eval_steps {self.eval_steps} validates inside every epoch, which contradicts "
                f"eval_every {self.eval_every}; use one of them"
            )
        if not 0.0 <= self.ema < 1.0:
            raise MmirisError(f"train config: ema must be in [0, 1) (0: off), got {self.ema}")
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
    def from_dict(cls, d: dict) -> TrainConfig:
        return config_from_dict(cls, d, what="train config")


def pick_device(policy: str = "auto", local_rank: int = 0) -> torch.device:
    """The one device policy: ``auto`` = this rank's GPU if CUDA is available, else CPU.
    The dtype policy is ``resolve_precision`` below."""
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


@functools.cache
def cpu_has_bf16() -> bool:
    """Native bf16 dot products on this CPU (AVX512-BF16 or AMX-BF16), where oneDNN's bf16
    GEMM is several times its fp32 GEMM (measured 4.6x on one thread here)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(policy: str, model_cls, device) -> str:
    """The one dtype policy: "fp32" or "bf16" for training ``model_cls`` on ``device``.
    ``auto`` picks bf16 only where it was measured to be faster and to learn the same model:
    models with dense feature towers (``model_cls.dense_towers``, the IRIS family) on a CPU
    with native bf16. NAIS/FISM/MF have no large matmul to speed up (their attention runs in
    the fp32 kernel); GPUs were not measured, so they stay fp32 unless asked."""
    if policy not in PRECISIONS:
        raise MmirisError(f"train config: precision {policy!r} is not one of {PRECISIONS}")
    if policy != "auto":
        return policy
    dev_type = getattr(device, "type", str(device).split(":")[0])
    if dev_type == "cpu" and getattr(model_cls, "dense_towers", False) and cpu_has_bf16():
        return "bf16"
    return "fp32"


def resolve_batch_order(policy: str, model_cls) -> str:
    """``auto`` → "user" for models that read the users' histories (``needs_history``), else
    "shuffled". With user-grouped batches a user-embedding model sees one or two users per
    step (a batch of 1,024 instances holds 204 positives; an ML-1M user has 165 on average),
    and MF trained that way stayed at 0.56 test HR@10 (docs/study.md)."""
    if policy not in BATCH_ORDERS:
        raise MmirisError(f"train config: batch_order {policy!r} is not one of {BATCH_ORDERS}")
    if policy != "auto":
        return policy
    return "user" if getattr(model_cls, "needs_history", False) else "shuffled"


def resolve_config(cfg: TrainConfig, model_cls, device) -> TrainConfig:
    """``cfg`` with every "auto" policy made concrete for ``model_cls`` on ``device`` (precision,
    batch order): what the version key names and what the trainer runs."""
    from dataclasses import replace

    return replace(
        cfg,
        precision=resolve_precision(cfg.precision, model_cls, device),
        batch_order=resolve_batch_order(cfg.batch_order, model_cls),
    )


def autocast(precision: str, device):
    """The context the training forward runs in: bf16 autocast for "bf16", nothing for "fp32".
    Models keep their attention (softmax, weighted sums) in fp32 inside it."""
    import torch

    if precision == "bf16":
        dev_type = getattr(device, "type", str(device).split(":")[0])
        return torch.autocast(dev_type, dtype=torch.bfloat16)
    return nullcontext()
