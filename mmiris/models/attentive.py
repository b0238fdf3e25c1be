"""The attentive sum at the heart of the item-similarity family (eq. 3–6; FISM is a_ij = 1):

    r̂_uj = |R_u⁺\\{j}|^-α · Σ_{i ∈ R_u⁺\\{j}} a_ij · (p_i · q_j)
    a_ij = exp(e_ij) / (Σ_i' exp(e_i'j))^β,    e_ij = hᵀ ReLU(pre_ij)          (eq. 4)
    pre_ij = A_i + C_j            "add":  W1 x_i + (W2 x_j + b)   (NAIS concat, eq. 4, 6)
           = W (p_i ⊙ q_j) + b     "prod": NAIS prod

Computed as a_ij = exp(e_ij − β·logsumexp_i e_ij), stable for any logits. When the history
without j is empty the score is 0 (and every a_ij is 0).

Two paths with the same numbers: a fused native kernel (kernels/attentive_sum.c; CPU,
float32), registered as the PyTorch op ``mmiris::attentive_sum`` (torch.library: fake and
autograd registrations), that never stores anything of size targets×history×h, and an eager PyTorch path
(GPU, other dtypes, no compiler) that works through (rows × targets) chunks of bounded size
and recomputes each chunk in backward (activation checkpointing), so memory stays bounded
for users with thousands of history items. Both run in fp32 under any autocast policy.
"""

from __future__ import annotations

import ctypes
import os

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mmiris.models import kernels

NEG = -1.0e30  # logit of an excluded/padded history slot (finite, so gradients stay finite)
EAGER_CHUNK_ELEMS = 1 << 22  # pairwise elements (rows × targets × history × width) per eager chunk

_i64, _f32, _ptr = ctypes.c_longlong, ctypes.c_float, ctypes.c_void_p


def _lib():
    lib = kernels.load("attentive_sum")
    if lib is not None and not getattr(lib, "_mmiris_typed", False):
        head = [ctypes.c_int, ctypes.c_int, _ptr, ctypes.c_int, _i64, _i64, ctypes.c_int, ctypes.c_int]
        lib.attentive_sum_forward.argtypes = head + [_ptr] * 10 + [_f32] * 2 + [_ptr] * 2
        lib.attentive_sum_forward.restype = None
        lib.attentive_sum_backward.argtypes = head + [_ptr] * 10 + [_f32] * 2 + [_ptr] * 9
        lib.attentive_sum_backward.restype = None
        lib.attentive_sum_block.restype = ctypes.c_int
        lib._mmiris_typed = True
    return lib


def fused_available() -> bool:
    return _lib() is not None


_BLOCK: list[int] = []


def _block() -> int:
    """The kernel's history block (the padded L is a multiple of it), read once."""
    if not _BLOCK:
        _BLOCK.append(int(_lib().attentive_sum_block()))
    return _BLOCK[0]


SMALL_WORK = 1 << 16  # pairs below which the kernel runs on one thread (a parallel region costs more)


def _threads(pairs: int | None = None) -> int:
    if pairs is not None and pairs < SMALL_WORK:
        return 1
    return max(1, int(os.environ.get("MMIRIS_KERNEL_THREADS", torch.get_num_threads())))


def _row_chunks(hlen: torch.Tensor, T: int, n_chunks: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of about equal work (history length × targets)."""
    B = len(hlen)
    if B == 0:
        return []
    cost = torch.cumsum(hlen.clamp_min(1).double() * max(T, 1), 0)
    total = float(cost[-1])
    bounds = torch.searchsorted(cost, torch.linspace(0, total, n_chunks + 1)[1:-1].double()).tolist()
    edges = sorted(set([0, *[min(b + 1, B) for b in bounds], B]))
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _p(t: torch.Tensor | None):
    return ctypes.c_void_p(t.data_ptr()) if t is not None and t.numel() else None


def _forward_impl(mode, PT, QT, hist, hlen, items, AT, C, W, bias, hv, beta, alpha):
    lib = _lib()
    B, T = items.shape
    K, L = PT.shape[1], PT.shape[2]
    H = hv.shape[0]
    score = torch.empty(B, T, dtype=torch.float32)
    lse = torch.empty(B, T, dtype=torch.float32)
    n = _threads(int(hlen.sum()) * T)
    parts = [(a, b, 0, T) for a, b in _row_chunks(hlen, T, 4 * n)]
    parts_t = torch.tensor(parts, dtype=torch.int64).reshape(-1)
    lib.attentive_sum_forward(
        mode,
        len(parts),
        _p(parts_t),
        n,
        T,
        L,
        K,
        H,
        _p(PT),
        _p(QT),
        _p(hist),
        _p(hlen),
        _p(items),
        _p(AT),
        _p(C),
        _p(W),
        _p(bias),
        _p(hv),
        float(beta),
        float(alpha),
        _p(score),
        _p(lse),
    )
    return score, lse


def _backward_impl(g, lse, mode, PT, QT, hist, hlen, items, AT, C, W, bias, hv, beta, alpha):
    lib = _lib()
    B, T = items.shape
    K, L = PT.shape[1], PT.shape[2]
    H = hv.shape[0]
    g = g.contiguous().float()
    n = _threads(int(hlen.sum()) * T)
    parts = _row_chunks(hlen, T, 4 * n)  # rows only: a row's history gradient has one writer
    parts_t = torch.tensor(parts, dtype=torch.int64).reshape(-1)
    nP = max(len(parts), 1)
    dPT, dQT = torch.zeros_like(PT), torch.zeros_like(QT)
    dAT, dC = torch.zeros_like(AT), torch.zeros_like(C)  # empty in PROD mode
    dW = torch.zeros(nP, H, K) if mode == 1 else None  # one slice per work item, summed below
    db = torch.zeros(nP, H) if mode == 1 else None
    dhv = torch.zeros(nP, H)
    lib.attentive_sum_backward(
        mode,
        len(parts),
        _p(parts_t),
        n,
        T,
        L,
        K,
        H,
        _p(PT),
        _p(QT),
        _p(hist),
        _p(hlen),
        _p(items),
        _p(AT),
        _p(C),
        _p(W),
        _p(bias),
        _p(hv),
        float(beta),
        float(alpha),
        _p(g),
        _p(lse),
        _p(dPT),
        _p(dQT),
        _p(dAT) if mode == 0 else None,
        _p(dC) if mode == 0 else None,
        _p(dW),
        _p(db),
        _p(dhv),
    )
    dW = dW.sum(0) if mode == 1 else torch.zeros_like(W)
    db = db.sum(0) if mode == 1 else torch.zeros_like(bias)
    return dPT, dQT, dAT, dC, dW, db, dhv.sum(0)


# The kernel as a registered PyTorch op (torch.library), so torch.compile / export see ONE op
# with a fake (shape) implementation and an autograd formula, instead of opaque ctypes calls.
# Inputs are the kernel's layout: PT [B, k, L'] and AT [B, h, L'] transposed, block-padded;
# QT [B, T, k], C [B, T, h]; mode 0 = additive (AT, C given; W, bias empty), 1 = prod.
# Returns (scores [B, T], logsumexp of the logits [B, T], which backward reuses).
@torch.library.custom_op("mmiris::attentive_sum", mutates_args=(), device_types="cpu")
def attentive_sum_op(
    mode: int,
    PT: torch.Tensor,
    QT: torch.Tensor,
    hist: torch.Tensor,
    hlen: torch.Tensor,
    items: torch.Tensor,
    AT: torch.Tensor,
    C: torch.Tensor,
    W: torch.Tensor,
    bias: torch.Tensor,
    hv: torch.Tensor,
    beta: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward_impl(mode, PT, QT, hist, hlen, items, AT, C, W, bias, hv, beta, alpha)


@attentive_sum_op.register_fake
def _attentive_sum_fake(mode, PT, QT, hist, hlen, items, AT, C, W, bias, hv, beta, alpha):
    B, T = items.shape
    return PT.new_empty(B, T), PT.new_empty(B, T)


@torch.library.custom_op("mmiris::attentive_sum_backward", mutates_args=(), device_types="cpu")
def attentive_sum_backward_op(
    g: torch.Tensor,
    lse: torch.Tensor,
    mode: int,
    PT: torch.Tensor,
    QT: torch.Tensor,
    hist: torch.Tensor,
    hlen: torch.Tensor,
    items: torch.Tensor,
    AT: torch.Tensor,
    C: torch.Tensor,
    W: torch.Tensor,
    bias: torch.Tensor,
    hv: torch.Tensor,
    beta: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward_impl(g, lse, mode, PT, QT, hist, hlen, items, AT, C, W, bias, hv, beta, alpha)


@attentive_sum_backward_op.register_fake
def _attentive_sum_backward_fake(g, lse, mode, PT, QT, hist, hlen, items, AT, C, W, bias, hv, beta, alpha):
    return (
        torch.empty_like(PT),
        torch.empty_like(QT),
        torch.empty_like(AT),
        torch.empty_like(C),
        torch.empty_like(W),
        torch.empty_like(bias),
        torch.empty_like(hv),
    )


def _setup_context(ctx, inputs, output):
    mode, PT, QT, hist, hlen, items, AT, C, W, bias, hv, beta, alpha = inputs
    ctx.save_for_backward(PT, QT, hist, hlen, items, AT, C, W, bias, hv, output[1])
    ctx.mode, ctx.beta, ctx.alpha = mode, beta, alpha


def _backward(ctx, g, _g_lse):  # lse is an auxiliary output: its gradient is never used
    PT, QT, hist, hlen, items, AT, C, W, bias, hv, lse = ctx.saved_tensors
    dPT, dQT, dAT, dC, dW, db, dhv = attentive_sum_backward_op(
        g, lse, ctx.mode, PT, QT, hist, hlen, items, AT, C, W, bias, hv, ctx.beta, ctx.alpha
    )
    need = ctx.needs_input_grad
    keep = lambda t, i: t if need[i] else None  # noqa: E731
    return (
        None,
        keep(dPT, 1),
        keep(dQT, 2),
        None,
        None,
        None,
        keep(dAT, 6),
        keep(dC, 7),
        keep(dW, 8),
        keep(db, 9),
        keep(dhv, 10),
        None,
        None,
    )


attentive_sum_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("mmiris::attentive_sum_shared_targets", mutates_args=(), device_types="cpu")
def attentive_sum_shared_targets_op(
    mode: int,
    PT: torch.Tensor,
    QT: torch.Tensor,
    hist: torch.Tensor,
    hlen: torch.Tensor,
    items: torch.Tensor,
    AT: torch.Tensor,
    C: torch.Tensor,
    W: torch.Tensor,
    bias: torch.Tensor,
    hv: torch.Tensor,
    beta: float,
    alpha: float,
) -> torch.Tensor:
    """Forward only (evaluation): every row scores the same targets ``items`` [T] (QT [T, k],
    C [T, h]), so nothing of size rows × targets × k is built. Scores [B, T]."""
    lib = _lib()
    B, T = hist.shape[0], items.shape[0]
    K, L = PT.shape[1], PT.shape[2]
    score = torch.empty(B, T, dtype=torch.float32)
    lse = torch.empty(B, T, dtype=torch.float32)
    n = _threads(int(hlen.sum()) * T)
    rows = _row_chunks(hlen, T, 4 * n)
    tn = max(1, -(-4 * n // max(len(rows), 1)))  # few rows: cut the targets too, every thread works
    parts = [(a, b, t0, min(T, t0 + -(-T // tn))) for a, b in rows for t0 in range(0, T, -(-T // tn))]
    parts_t = torch.tensor(parts, dtype=torch.int64).reshape(-1)
    lib.attentive_sum_forward(
        mode | 2,
        len(parts),
        _p(parts_t),
        n,
        T,
        L,
        K,
        hv.shape[0],
        _p(PT),
        _p(QT),
        _p(hist),
        _p(hlen),
        _p(items),
        _p(AT),
        _p(C),
        _p(W),
        _p(bias),
        _p(hv),
        float(beta),
        float(alpha),
        _p(score),
        _p(lse),
    )
    return score


@attentive_sum_shared_targets_op.register_fake
def _shared_fake(mode, PT, QT, hist, hlen, items, AT, C, W, bias, hv, beta, alpha):
    return PT.new_empty(hist.shape[0], items.shape[0])


@torch.no_grad()
def attentive_scores_shared(
    PH: torch.Tensor,
    Q: torch.Tensor,
    hist: torch.Tensor,
    hlen: torch.Tensor,
    items: torch.Tensor,
    hv: torch.Tensor,
    beta: float,
    alpha: float,
    *,
    A: torch.Tensor | None = None,
    C: torch.Tensor | None = None,
    W: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Scores [B, T] of the same targets ``items`` [T] (Q [T, k], C [T, h]) for every row, with
    the fused kernel; None where it cannot run (the caller falls back to ``attentive_scores``)."""
    mode = 0 if A is not None else 1
    f = lambda t: t.float().contiguous() if t is not None else torch.empty(0)  # noqa: E731
    if A is not None:
        width = A.shape[-1]
    elif W is not None:
        width = W.shape[0]
    else:
        raise ValueError("attentive_scores_shared: give A and C (additive) or W (prod)")
    if not (
        PH.device.type == "cpu"
        and PH.dtype in (torch.float32, torch.bfloat16)
        and PH.shape[-1] % 4 == 0
        and width % 4 == 0
        and fused_available()
    ):
        return None
    L = hist.shape[1]
    block = _block()
    Lp = max(block, -(-L // block) * block)
    side = lambda x: F.pad(x.float().transpose(1, 2), (0, Lp - L)).contiguous()  # noqa: E731
    return attentive_sum_shared_targets_op(
        mode,
        side(PH),
        f(Q),
        F.pad(hist, (0, Lp - L)).contiguous().long(),
        hlen.contiguous().long(),
        items.contiguous().long(),
        side(A) if mode == 0 else torch.empty(0),
        f(C),
        f(W),
        f(bias),
        f(hv),
        float(beta),
        float(alpha),
    )


class _FusedAttentiveSum:
    """The fused path's one call into the op (a seam the tests hook): scores only."""

    @staticmethod
    def apply(*args):
        return attentive_sum_op(*args)[0]


def backend_name(backend: str, device) -> str:
    """The attention implementation ``backend`` resolves to on ``device`` (recorded in model
    artifacts): "fused-op" (mmiris::attentive_sum, the native kernel) or "eager"."""
    dev_type = getattr(device, "type", str(device).split(":")[0])
    if backend == "eager" or dev_type != "cpu" or not fused_available():
        return "eager"
    return "fused-op"


def _fused(mode, PH, QT, hist, hlen, items, A, C, W, bias, hv, beta, alpha):
    B, L = hist.shape
    T = items.shape[1]
    block = _block()
    Lp = max(block, -(-L // block) * block)
    # Few rows (a 512-instance batch is often one user; score_all for one user): cut each row's
    # targets into S slices on S copies of the row, so every core gets work in backward too;
    # autograd sums the copies' history gradients. (Not under torch.compile: the plan reads
    # the history lengths, which a traced graph does not know.)
    S = 1
    if not torch.compiler.is_compiling():
        n = _threads(int(hlen.sum()) * T)
        if B < 2 * n and T >= 64:
            S = max(1, min(-(-4 * n // B), T // 32))
    Ts = -(-T // S)

    def hist_side(x):  # [B, L, w] -> [B·S, w, L'] zero-padded: every kernel loop runs over l in vectors
        x = F.pad(x.transpose(1, 2), (0, Lp - L))
        return (x.repeat_interleave(S, 0) if S > 1 else x).contiguous()

    def target_side(x):  # [B, T, ...] -> [B·S, T/S, ...]
        if S > 1:
            x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, Ts * S - T)).reshape(B * S, Ts, *x.shape[2:])
        return x.contiguous()

    def rows(x):
        return (x.repeat_interleave(S, 0) if S > 1 else x).contiguous().long()

    c = lambda t: t.contiguous() if t is not None else torch.empty(0)  # noqa: E731
    out = _FusedAttentiveSum.apply(
        mode,
        hist_side(PH),
        target_side(QT),
        rows(F.pad(hist, (0, Lp - L))),
        rows(hlen),
        target_side(items).long(),
        hist_side(A) if mode == 0 else torch.empty(0),
        target_side(C) if mode == 0 else torch.empty(0),
        c(W),
        c(bias),
        c(hv),
        float(beta),
        float(alpha),
    )
    return out.reshape(B, Ts * S)[:, :T] if S > 1 else out


def _eager(mode, PH, QT, hist, hlen, items, A, C, W, bias, hv, beta, alpha, want_weights=False):
    """Reference-shaped tensor code for one chunk: [B, T, L] logits, masked smoothed softmax."""
    L = hist.shape[1]
    in_hist = torch.arange(L, device=hist.device)[None, :] < hlen[:, None]
    valid = in_hist[:, None, :] & (hist[:, None, :] != items[:, :, None])  # R_u⁺ \ {j}
    if mode == 0:
        pre = A[:, None, :, :] + C[:, :, None, :]
    else:
        pre = (PH[:, None, :, :] * QT[:, :, None, :]) @ W.t() + bias
    e = (torch.relu(pre) @ hv).masked_fill(~valid, NEG)
    lse = torch.logsumexp(e, dim=-1, keepdim=True)
    a = torch.exp(e - beta * lse) * valid
    if want_weights:
        return a
    pq = QT @ PH.transpose(1, 2)
    s = (a * pq).sum(-1)
    if alpha != 0:
        s = s * valid.sum(-1).clamp_min(1).to(s.dtype).pow(-alpha)
    return s


def _eager_chunked(mode, PH, QT, hist, hlen, items, A, C, W, bias, hv, beta, alpha, want_weights=False):
    B, T = items.shape
    L = max(hist.shape[1], 1)
    width = max(A.shape[-1] if mode == 0 else W.shape[0], PH.shape[-1])
    rows = max(1, min(B, EAGER_CHUNK_ELEMS // (L * width)))
    tgt = max(1, min(T, EAGER_CHUNK_ELEMS // (rows * L * width)))
    use_ckpt = torch.is_grad_enabled() and not want_weights and (rows < B or tgt < T)
    out_rows = []
    for r0 in range(0, B, rows):
        r = slice(r0, r0 + rows)
        cols = []
        for t0 in range(0, T, tgt):
            t = slice(t0, t0 + tgt)
            args = (
                mode,
                PH[r],
                QT[r, t],
                hist[r],
                hlen[r],
                items[r, t],
                A[r] if mode == 0 else None,
                C[r, t] if mode == 0 else None,
                W,
                bias,
                hv,
                beta,
                alpha,
                want_weights,
            )
            cols.append(checkpoint(_eager, *args, use_reentrant=False) if use_ckpt else _eager(*args))
        out_rows.append(torch.cat(cols, dim=1))
    return torch.cat(out_rows, dim=0)


def attentive_scores(
    PH: torch.Tensor,
    QT: torch.Tensor,
    hist: torch.Tensor,
    hlen: torch.Tensor,
    items: torch.Tensor,
    hv: torch.Tensor,
    beta: float,
    alpha: float,
    *,
    A: torch.Tensor | None = None,
    C: torch.Tensor | None = None,
    W: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Scores [B, T] for targets ``items`` [B, T] of users with histories ``hist`` [B, L]
    (first ``hlen[b]`` valid). PH = p of the history [B, L, k], QT = q of the targets [B, T, k].
    Give A [B, L, h] and C [B, T, h] for the additive attention, or W [h, k] and bias [h] for
    NAIS prod. ``backend``: "auto" (fused when possible), "fused" or "eager"."""
    mode = 0 if A is not None else 1
    if mode == 1 and (W is None or bias is None):
        raise ValueError("attentive_scores needs either A and C (additive) or W and bias (prod)")
    # The softmax and the weighted sums stay in fp32 whatever the autocast policy: bf16 inputs
    # (e.g. projections of bf16 towers) are widened; float64 stays float64 (eager path).
    dt = torch.float64 if PH.dtype == torch.float64 else torch.float32
    f = lambda t: t.to(dt) if t is not None and t.is_floating_point() and t.dtype != dt else t  # noqa: E731
    PH, QT, A, C, W, bias, hv = map(f, (PH, QT, A, C, W, bias, hv))
    width = A.shape[-1] if mode == 0 else W.shape[0]
    fused_ok = (
        PH.device.type == "cpu"
        and PH.dtype == torch.float32
        and PH.shape[-1] % 4 == 0
        and width % 4 == 0
        and fused_available()
    )
    if backend == "fused" and not fused_ok:
        raise RuntimeError(
            "fused attention kernel unavailable (needs CPU float32, k and h multiples of 4, a C compiler)"
        )
    with torch.autocast(PH.device.type, enabled=False):
        if backend == "eager" or not fused_ok:
            return _eager_chunked(mode, PH, QT, hist, hlen, items, A, C, W, bias, hv, beta, alpha)
        return _fused(mode, PH, QT, hist, hlen, items, A, C, W, bias, hv, beta, alpha)


@torch.no_grad()
def attention_weights(PH, QT, hist, hlen, items, hv, beta, *, A=None, C=None, W=None, bias=None):
    """a_ij [B, T, L] (0 on padding and on the target itself), for explanations."""
    mode = 0 if A is not None else 1
    f = lambda t: t.float() if t is not None and t.dtype in (torch.bfloat16, torch.float16) else t  # noqa: E731
    PH, QT, A, C, W, bias, hv = map(f, (PH, QT, A, C, W, bias, hv))
    with torch.autocast(PH.device.type, enabled=False):
        return _eager_chunked(mode, PH, QT, hist, hlen, items, A, C, W, bias, hv, beta, 0.0, want_weights=True)
