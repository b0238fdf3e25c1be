"""Building blocks with the paper's initialisation (§IV-D): Xavier weights, zero biases,
N(0, 0.01) embeddings."""

from __future__ import annotations

import torch
from torch import nn

EMBEDDING_STD = 0.01  # §IV-D: embeddings ~ N(0, 0.01) (0.01 is the standard deviation, as NAIS's code)


def embedding(n: int, k: int) -> nn.Embedding:
    e = nn.Embedding(n, k)
    nn.init.normal_(e.weight, 0.0, EMBEDDING_STD)
    return e


def bias_vector(n: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(n))


def linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(d_in, d_out, bias=bias)
    nn.init.xavier_uniform_(lin.weight)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


def activation(name: str):
    try:
        return {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[name]
    except KeyError:
        raise ValueError(f"activation {name!r}: expected one of relu, sigmoid, tanh") from None


class _SquaredNorm(torch.autograd.Function):
    """‖t‖²_F in one pass forward (a dot product, no temporary) and one backward (2·g·t):
    ``t.pow(2).sum()`` walked the 1M-entry IRIS tower weight three times per step."""

    @staticmethod
    def forward(ctx, t):
        ctx.save_for_backward(t)
        flat = t.reshape(-1)
        return torch.dot(flat, flat)

    @staticmethod
    def backward(ctx, g):
        (t,) = ctx.saved_tensors
        return t * (2 * g)


def sq(t: torch.Tensor) -> torch.Tensor:
    """‖t‖²_F."""
    return _SquaredNorm.apply(t)
