"""The fused attention as a registered PyTorch op (mmiris::attentive_sum): torch.library's
own checks (schema, fake tensor, autograd registration, AOT dispatch), torch.compile seeing
one op, and the op's gradients against the eager reference path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmiris.data.split import UserHistory
from mmiris.models import attentive
from mmiris.models.build import build_model

pytestmark = pytest.mark.skipif(not attentive.fused_available(), reason="no C compiler: no fused kernel")

N_USERS, N_ITEMS, K, H = 4, 50, 8, 8


def _model(name):
    rng = np.random.default_rng(0)
    lengths = [0, 3, 37, 9]  # empty, short, longer than a kernel block (32)
    users = np.repeat(np.arange(N_USERS), lengths)
    items = np.concatenate([rng.choice(N_ITEMS, n, replace=False) for n in lengths])
    history = UserHistory.from_pairs(users, items, N_USERS, N_ITEMS)
    torch.manual_seed(0)
    model = build_model(name, {"emb": K, "attention_size": H}, N_USERS, N_ITEMS, history, {})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    targets = torch.from_numpy(rng.integers(0, N_ITEMS, size=(N_USERS, 5)))
    targets[2, 0] = int(history.items_of(2)[0])  # a target in its own history: excluded from R_u⁺
    return model, torch.arange(N_USERS), targets


def _op_args(name):
    """The op's arguments exactly as the model's fused path builds them."""
    model, users, targets = _model(name)
    model.backend = "fused"
    seen = []
    real = attentive._FusedAttentiveSum.apply
    attentive._FusedAttentiveSum.apply = lambda *a: seen.append(a) or real(*a)
    try:
        with torch.no_grad():
            model.scores(users, targets)
    finally:
        attentive._FusedAttentiveSum.apply = real
    (args,) = seen
    args = list(args)
    for i in (1, 2, 6, 7, 8, 9, 10):  # PT, QT, AT, C, W, bias, hv: differentiable inputs
        args[i] = args[i].detach().clone().requires_grad_(args[i].numel() > 0)
    return args


@pytest.mark.parametrize("name", ["nais_prod", "nais_concat"])
def test_opcheck(name):
    # schema, fake (meta) implementation, autograd registration and AOT dispatch, as torch checks them
    torch.library.opcheck(attentive.attentive_sum_op, tuple(_op_args(name)))


@pytest.mark.parametrize("name", ["nais_prod", "nais_concat"])
def test_compiled_graph_holds_the_op_and_matches_eager(name):
    args = _op_args(name)
    diff = [i for i in (1, 2, 6, 7, 8, 9, 10) if args[i].requires_grad]
    ops = []

    def backend(gm, example_inputs):  # record the traced graph's calls, run it as is
        ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    fn = lambda *a: attentive.attentive_sum_op(*a)[0]  # noqa: E731
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=backend, fullgraph=True)
    weights = torch.linspace(-1, 1, args[5].numel()).view(args[5].shape)
    out = compiled(*args)
    grads = torch.autograd.grad((out * weights).sum(), [args[i] for i in diff])
    ref = fn(*args)
    ref_grads = torch.autograd.grad((ref * weights).sum(), [args[i] for i in diff])
    assert any("mmiris.attentive_sum" in o for o in ops), ops  # one op in the graph, not a graph break
    assert torch.equal(out, ref)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["nais_prod", "nais_concat"])
def test_op_gradients_equal_the_eager_path(name):
    model, users, targets = _model(name)
    out = {}
    for backend in ("eager", "fused"):
        model.backend = backend
        model.zero_grad()
        s = model.scores(users, targets)
        (s * torch.linspace(-1, 2, s.numel()).view_as(s)).sum().backward()
        out[backend] = (s.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert torch.allclose(out["fused"][0], out["eager"][0], rtol=1e-4, atol=1e-5)
    assert out["fused"][1].keys() == out["eager"][1].keys()
    for n, g in out["eager"][1].items():
        assert torch.allclose(out["fused"][1][n], g, rtol=1e-4, atol=1e-5), n


def test_backend_name_recorded_for_artifacts():
    assert attentive.backend_name("auto", torch.device("cpu")) == "fused-op"
    assert attentive.backend_name("eager", torch.device("cpu")) == "eager"
    assert attentive.backend_name("auto", torch.device("cuda", 0)) == "eager"
