"""Parallel scans for linear recurrences ``h_t = A_t h_{t-1} + b_t``.

Every Newton-type step on a nonlinear recurrence reduces to one such linear recurrence. It is the
composition of the affine maps ``h -> A_t h + b_t``, and composition is associative:

    (A_2, b_2) o (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2),

so all prefixes can be computed in O(log T) depth (Blelloch 1990; used for DEER by Lim et al.,
ICLR 2024). Three algorithms are provided:

* ``"associative"``: the odd/even recursive prefix scan, O(T) work and O(log T) depth.
* ``"chunked"``: a two-level scan that suits CPUs. The sequence is cut into chunks of length L;
  a loop of L steps runs the recurrence inside every chunk at once (vectorized across chunks)
  from a zero state while accumulating the chunk's transition product; the chunk-to-chunk carry
  is itself a linear recurrence over T/L chunk summaries (solved by the same scan, recursively);
  a last loop of L steps pushes each chunk's entering state through the chunk and adds it to
  the local states. Python-level depth is about ``2L + T/L`` instead of ``T``.
* ``"native"`` (diagonal, 2x2-block and dense A on the CPU, the default there): a fused C loop
  along time, vectorized across the state and split across threads by sequence or by state
  entries (:mod:`.native`); for dense A it does the loop's O(d^2) per step, not O(d^3). On a
  CPU with a few cores the recurrence is memory bound, and one pass over memory beats any
  parallel-prefix schedule, which makes several; the log-depth scans are for
  devices with thousands of lanes.

``A_t`` is stored in one of three structures: ``"diagonal"`` (shape ``(..., T, d)``),
``"block"`` (``(..., T, d/k, k, k)``, a block-diagonal matrix of k x k blocks acting on
consecutive groups of k coordinates) and ``"dense"`` (``(..., T, d, d)``). Composition costs
O(d), O(d k^2) and O(d^3) per step, so the dense scan does O(T d^3) work where the sequential
loop does O(T d^2): parallelism is bought with arithmetic.

The backward pass is a reverse scan with the transposed, shifted coefficients:
``mu_t = g_t + A_{t+1}^T mu_{t+1}``, ``dL/db_t = mu_t``, ``dL/dA_t = mu_t h_{t-1}^T``,
``dL/dh_0 = A_1^T mu_1``. It is written with the same scan, so it is differentiable again.
Forward mode (``torch.autograd.forward_ad``, ``torch.func.jvp`` / ``jacfwd``) is one more
forward scan: ``hdot_t = A_t hdot_{t-1} + (Adot_t h_{t-1} + bdot_t)``, ``hdot_0 = h0dot``. Under
``torch.func.vmap`` the vmapped dim is folded into the batch of a single scan.

Example::

    >>> A = torch.full((2, 1000, 4), 0.9); b = torch.randn(2, 1000, 4)
    >>> h = linear_scan(A, b, torch.zeros(2, 4))          # (2, 1000, 4)
    >>> torch.allclose(h[:, 1], 0.9 * h[:, 0] + b[:, 1])
    True
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..core.validate import check_method, check_positive, check_same_device, check_tensor
from . import native

STRUCTURES = ("diagonal", "block", "dense")
ALGORITHMS = ("auto", "native", "chunked", "associative", "sequential")

# Blocks up to this size are multiplied with broadcast-and-sum; batched matmul of tiny matrices
# has a large per-matrix overhead on CPU.
_SMALL_BLOCK = 4
# Rows (elements per time step) at least this long are scanned in place, without transposing.
_LONG_ROW = 128


class _Ops:
    """Structure-specific products. Vectors are ``(..., d)`` (diagonal) or ``(..., nb, k)`` (block)."""

    def __init__(self, structure: str, block: int = 1):
        self.diagonal = structure == "diagonal"
        self.block = 1 if self.diagonal else block
        self.small = block <= _SMALL_BLOCK

    def apply(self, A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.diagonal:
            return A * v
        if self.small:
            # sum over j of column j times v_j: k fused multiply-adds, no reduction kernel
            out = A[..., 0] * v[..., :1]
            for j in range(1, A.shape[-1]):
                out = torch.addcmul(out, A[..., j], v[..., j:j + 1])
            return out
        return torch.matmul(A, v.unsqueeze(-1)).squeeze(-1)

    def affine(self, A: torch.Tensor, v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.diagonal:
            return torch.addcmul(b, A, v)
        return self.apply(A, v) + b

    def affine_into(self, A: torch.Tensor, v: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
        """``out = A v + b`` written into ``out``."""
        if self.diagonal:
            torch.addcmul(b, A, v, out=out)
        else:
            torch.add(self.apply(A, v), b, out=out)

    def compose(self, later: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
        if self.diagonal:
            return later * earlier
        if self.small:
            out = later[..., :, :1] * earlier[..., :1, :]
            for j in range(1, later.shape[-1]):
                out = torch.addcmul(out, later[..., :, j:j + 1], earlier[..., j:j + 1, :])
            return out
        return torch.matmul(later, earlier)

    def transpose(self, A: torch.Tensor) -> torch.Tensor:
        return A if self.diagonal else A.transpose(-1, -2)

    def outer(self, mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return mu * v if self.diagonal else mu.unsqueeze(-1) * v.unsqueeze(-2)

    def identity(self, like: torch.Tensor) -> torch.Tensor:
        if self.diagonal:
            return torch.ones_like(like)
        eye = torch.eye(like.shape[-1], dtype=like.dtype, device=like.device)
        return eye.expand_as(like).clone()


def default_chunk_size(T: int) -> int:
    """Chunk length of the two-level scan: short chunks keep the Python loop short, and the
    chunk-to-chunk carry recurses, so total loop depth is about ``L log_L T``."""
    return 64 if T > 64 else max(T, 1)


def _sequential(ops: _Ops, A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Reference loop over time (dim 1)."""
    h, out = h0, []
    for t in range(b.shape[1]):
        h = ops.affine(A[:, t], h, b[:, t])
        out.append(h)
    return torch.stack(out, 1)


def _chunked(ops: _Ops, A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, L: int) -> torch.Tensor:
    T = b.shape[1]
    L = max(L, 2)  # chunks of one would recurse on a problem of the same length
    if T <= L:
        return _sequential(ops, A, b, h0)
    nc = math.ceil(T / L)
    pad = nc * L - T
    if pad:
        # Identity maps with zero offsets at the end leave every real state unchanged.
        A = torch.cat([A, ops.identity(A[:, :1]).expand(-1, pad, *A.shape[2:])], 1)
        b = torch.cat([b, b.new_zeros(b.shape[0], pad, *b.shape[2:])], 1)
    # Position-in-chunk major, (L, B, nc, ...): each of the 2L vectorized steps below then reads
    # and writes contiguous memory. In the natural (B, nc, L, ...) layout every step gathers nc
    # rows L rows apart; for short rows that costs more than the three transposing copies.
    A = A.reshape(A.shape[0], nc, L, *A.shape[2:]).movedim(2, 0)
    out = b.reshape(b.shape[0], nc, L, *b.shape[2:]).movedim(2, 0)
    if b[0, 0].numel() < _LONG_ROW:
        A, out = A.contiguous(), out.contiguous()
    else:
        out = out.clone()
    # Pass 1: every chunk from a zero state, vectorized across chunks, in place, and each
    # chunk's transition product.
    P = A[0]
    for j in range(1, L):
        ops.affine_into(A[j], out[j - 1], out[j], out[j])
        P = ops.compose(A[j], P)
    # Pass 2: the state entering each chunk obeys a linear recurrence over the chunk summaries.
    ends = _chunked(ops, P, out[-1], h0, L)
    carry = torch.cat([h0.unsqueeze(1), ends[:, :-1]], 1)
    # Pass 3: h_{c,j} = s_{c,j} + A_{c,j} ... A_{c,1} h_in(c): push the entering state through the
    # chunk, a matrix-vector product per step (no stored prefix products).
    for j in range(L):
        carry = ops.apply(A[j], carry)
        out[j].add_(carry)
    return out.movedim(0, 2).reshape(out.shape[1], nc * L, *out.shape[3:])[:, :T]


def _associative(ops: _Ops, A: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive prefix composition along dim 1 by odd/even recursion (Blelloch-style)."""
    T = b.shape[1]
    if T < 2:
        return A, b
    A_first, b_first = A[:, 0:-1:2], b[:, 0:-1:2]
    A_second, b_second = A[:, 1::2], b[:, 1::2]
    A_odd, b_odd = _associative(ops, ops.compose(A_second, A_first), ops.affine(A_second, b_first, b_second))
    # Even positions 2, 4, ... extend the prefix that ends just before them by one element.
    n_even = (T + 1) // 2 - 1
    A_even = ops.compose(A[:, 2::2], A_odd[:, :n_even])
    b_even = ops.affine(A[:, 2::2], b_odd[:, :n_even], b[:, 2::2])
    A_out, b_out = torch.empty_like(A), torch.empty_like(b)
    A_out[:, 0], b_out[:, 0] = A[:, 0], b[:, 0]
    A_out[:, 1::2], b_out[:, 1::2] = A_odd, b_odd
    A_out[:, 2::2], b_out[:, 2::2] = A_even, b_even
    return A_out, b_out


def _forward_scan(ops: _Ops, A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, algorithm: str,
                  chunk: int | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The states; written into ``out`` (which may be ``b``) only on the native path."""
    if algorithm in ("auto", "native"):
        H = native.scan(A, b, h0, ops.block, out)
        if H is not None:
            return H
        if algorithm == "native":
            raise ValueError("algorithm='native' needs float32/float64 CPU tensors, a diagonal, 2x2-block or "
                             "dense structure and a C compiler (see torchnewton.recurrence.native)")
    if algorithm == "sequential":
        return _sequential(ops, A, b, h0)
    if algorithm == "associative" or (algorithm == "auto" and native.batched(A, b, h0)):
        # a vmapped backward (``is_grads_batched``) cannot take the in-place chunked scan
        # Fold h0 into the first offset so the prefix offsets are the states themselves.
        b = torch.cat([ops.affine(A[:, :1], h0.unsqueeze(1), b[:, :1]), b[:, 1:]], 1)
        return _associative(ops, A, b)[1]
    return _chunked(ops, A, b, h0, chunk or default_chunk_size(b.shape[1]))


class _LinearScan(torch.autograd.Function):
    """Forward scan with the adjoint (reverse) scan as backward and the tangent scan as forward-mode
    rule. Batch is flattened to dim 0.

    The tangent of ``h_t = A_t h_{t-1} + b_t`` in a direction (Ȧ, ḃ, ḣ_0) is itself a linear
    recurrence with the same coefficients, ``ḣ_t = A_t ḣ_{t-1} + (Ȧ_t h_{t-1} + ḃ_t)``, so a
    Jacobian-vector product costs one more scan (``torch.autograd.forward_ad``, ``torch.func.jvp``).
    """

    @staticmethod
    def forward(A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, ops: _Ops, algorithm: str,
                chunk: int | None) -> torch.Tensor:
        return _forward_scan(ops, A, b, h0, algorithm, chunk)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        A, _, h0, ops, algorithm, chunk = inputs
        ctx.save_for_backward(A, h0, output)
        ctx.save_for_forward(A, h0, output)
        ctx.config = (ops, algorithm, chunk)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor,
             ops: _Ops, algorithm: str, chunk: int | None) -> tuple[torch.Tensor, int]:
        """A vmapped scan is one scan over the product of the vmapped and the batch dim."""
        V = info.batch_size

        def stacked(x: torch.Tensor, dim: int | None) -> torch.Tensor:
            x = x.unsqueeze(0).expand(V, *x.shape) if dim is None else x.movedim(dim, 0)
            return x.reshape(V * x.shape[1], *x.shape[2:])

        A, b, h0 = (stacked(x, dim) for x, dim in zip((A, b, h0), in_dims))
        H = _LinearScan.apply(A, b, h0, ops, algorithm, chunk)
        return H.reshape(V, -1, *H.shape[1:]), 0

    @staticmethod
    def jvp(ctx: Any, dA: torch.Tensor | None, db: torch.Tensor | None, dh0: torch.Tensor | None,
            *_: Any) -> torch.Tensor:
        A, h0, H = ctx.saved_tensors
        ops, algorithm, chunk = ctx.config
        offsets = torch.zeros_like(H) if db is None else db
        if dA is not None:
            # the states entering each step: h_0, h_1, ..., h_{T-1}
            offsets = offsets + ops.apply(dA, torch.cat([h0.unsqueeze(1), H[:, :-1]], 1))
        start = torch.zeros_like(h0) if dh0 is None else dh0
        return _LinearScan.apply(A, offsets, start, ops, algorithm, chunk)

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        A, h0, H = ctx.saved_tensors
        ops, algorithm, chunk = ctx.config
        # mu_t = G_t + A_{t+1}^T mu_{t+1}: a reverse scan whose coefficients are shifted by one.
        A_next = torch.cat([ops.transpose(A[:, 1:]), torch.zeros_like(A[:, :1])], 1)
        mu = _LinearScan.apply(A_next.flip(1), G.flip(1), torch.zeros_like(h0), ops, algorithm, chunk).flip(1)
        H_prev = torch.cat([h0.unsqueeze(1), H[:, :-1]], 1)
        grad_A = ops.outer(mu, H_prev) if ctx.needs_input_grad[0] else None
        grad_h0 = ops.apply(ops.transpose(A[:, 0]), mu[:, 0]) if ctx.needs_input_grad[2] else None
        return grad_A, mu, grad_h0, None, None, None


def scan_batched(A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, structure: str, *,
                 reverse: bool = False, algorithm: str = "auto", chunk: int | None = None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`linear_scan` without argument checks, for one leading batch dim.

    Shapes: ``b`` (B, T, d); ``h0`` (B, d); ``A`` (B, T, d), (B, T, d/k, k, k) or (B, T, d, d).
    With ``out`` (B, T, d), which may be ``b`` itself, the states are written there and nothing
    is recorded for autograd: the Newton iteration's scratch buffers are reused instead of
    allocating sequence-sized memory (whose first touch costs more than the scan) every step.
    """
    B, T, d = b.shape
    if structure == "dense":
        A = A.unsqueeze(2)  # one block of size d
    k = 1 if structure == "diagonal" else A.shape[-1]
    ops = _Ops(structure, k)
    if structure != "diagonal":
        b = b.reshape(B, T, d // k, k)
        h0 = h0.reshape(B, d // k, k)
    if out is not None:
        if reverse:
            raise ValueError("scan_batched: out is not supported with reverse=True")
        with torch.no_grad():
            H = _forward_scan(ops, A, b, h0, algorithm, chunk, out.view(b.shape))
            if H.data_ptr() != out.data_ptr():  # a torch scan allocated its own
                out.view(b.shape).copy_(H)
        return out
    if reverse:
        A, b = A.flip(1), b.flip(1)
    H = _LinearScan.apply(A, b, h0, ops, algorithm, chunk)
    if reverse:
        H = H.flip(1)
    return H.reshape(B, T, d)


def linear_scan(A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, *,
                structure: str = "diagonal", reverse: bool = False, algorithm: str = "auto",
                chunk_size: int | None = None) -> torch.Tensor:
    """Solve ``h_t = A_t h_{t-1} + b_t`` for t = 1..T (all states at once).

    With ``reverse=True`` the recurrence runs backwards: ``h_t = A_t h_{t+1} + b_t`` for
    t = T..1 with ``h_{T+1} = h0``.

    Args:
        A: transition coefficients; ``(..., T, d)`` for ``structure="diagonal"``,
            ``(..., T, d/k, k, k)`` for ``"block"`` (k x k blocks on consecutive coordinates),
            ``(..., T, d, d)`` for ``"dense"``.
        b: offsets ``(..., T, d)``.
        h0: initial state ``(..., d)``; zeros when ``None``. Leading batch dims of ``A``, ``b``
            and ``h0`` broadcast.
        structure: ``"diagonal"``, ``"block"`` or ``"dense"``.
        reverse: run from t = T down to 1.
        algorithm: ``"auto"`` (``"native"`` where it applies, else ``"chunked"``), ``"native"``
            (fused C loop along time, vectorized across the state, split across threads: float32 /
            float64 CPU tensors, diagonal, 2x2-block or dense structure; see :mod:`.native`),
            ``"chunked"`` (two-level), ``"associative"`` (log-depth odd/even scan) or
            ``"sequential"`` (reference loop of torch ops).
        chunk_size: chunk length of the chunked scan (default :func:`default_chunk_size`).

    Returns:
        The states ``(..., T, d)``, differentiable with respect to ``A``, ``b`` and ``h0``.

    Example::

        >>> A = torch.rand(16, 3, 2, 2) * 0.5          # 3 blocks of 2x2, T = 16
        >>> h = linear_scan(A, torch.randn(16, 6), structure="block")
        >>> h.shape
        torch.Size([16, 6])
    """
    structure = check_method(structure, STRUCTURES, "structure")
    algorithm = check_method(algorithm, ALGORITHMS, "algorithm")
    if chunk_size is not None:
        check_positive(chunk_size, "chunk_size", integer=True)
    check_tensor(A, "A", finite=False)
    check_tensor(b, "b", finite=False)
    if b.dim() < 2:
        raise ValueError(f"b must have shape (..., T, d), got {tuple(b.shape)}")
    T, d = b.shape[-2:]
    if h0 is None:
        h0 = b.new_zeros(d)
    check_tensor(h0, "h0", finite=False)
    check_same_device([("A", A), ("b", b), ("h0", h0)])
    for name, value in (("A", A), ("h0", h0)):
        if value.dtype != b.dtype:
            raise TypeError(f"{name} has dtype {value.dtype} but b has {b.dtype}; use one dtype")
    if h0.dim() < 1 or h0.shape[-1] != d:
        raise ValueError(f"h0 must have shape (..., {d}) to match b {tuple(b.shape)}, got {tuple(h0.shape)}")
    if structure == "diagonal":
        mat, ok = 1, A.dim() >= 2 and tuple(A.shape[-2:]) == (T, d)
        expected = f"(..., {T}, {d})"
    elif structure == "dense":
        mat, ok = 2, A.dim() >= 3 and tuple(A.shape[-3:]) == (T, d, d)
        expected = f"(..., {T}, {d}, {d})"
    else:
        mat = 3
        ok = (A.dim() >= 4 and A.shape[-4] == T and A.shape[-1] == A.shape[-2]
              and A.shape[-3] * A.shape[-1] == d)
        expected = f"(..., {T}, d/k, k, k) with (d/k) * k = {d}"
    if not ok:
        raise ValueError(f"A must have shape {expected} for structure={structure!r} and b of shape "
                         f"{tuple(b.shape)}, got {tuple(A.shape)}")
    try:
        batch = torch.broadcast_shapes(A.shape[:A.dim() - mat - 1], b.shape[:-2], h0.shape[:-1])
    except RuntimeError as err:
        raise ValueError(f"batch dims of A {tuple(A.shape)}, b {tuple(b.shape)} and h0 "
                         f"{tuple(h0.shape)} do not broadcast") from err
    mat_shape = A.shape[A.dim() - mat - 1:]
    A = A.expand(*batch, *mat_shape).reshape(-1, *mat_shape)
    b_flat = b.expand(*batch, T, d).reshape(-1, T, d)
    h0 = h0.expand(*batch, d).reshape(-1, d)
    if T == 0:
        return b_flat.reshape(*batch, T, d)
    H = scan_batched(A, b_flat, h0, structure, reverse=reverse, algorithm=algorithm, chunk=chunk_size)
    return H.reshape(*batch, T, d)
