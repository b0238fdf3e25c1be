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


def sq(t: torch.Tensor) -> torch.Tensor:
    """‖t‖²_F."""
    return t.pow(2).sum()
