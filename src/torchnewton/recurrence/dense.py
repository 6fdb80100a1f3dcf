"""Newton steps for cells with dense Jacobians, blocked along time (no sequence-sized Jacobian).

For a generic cell ``f(h, x)`` on d state entries a Newton step on the recurrence system needs
``J_t = df/dh(h_{t-1}, x_t)`` at every t and the linear recurrence

    delta_t = J_t delta_{t-1} + (f(h_{t-1}, x_t) - h_t),    delta_0 = 0.

Stored whole, the Jacobians take ``T d^2`` numbers (147 MB at T = 64k, d = 24 in float32): writing
and reading them costs more than computing them, and a parallel prefix scan over them does
``O(T d^3)`` work. On a CPU neither is needed: the step here walks the sequence in blocks of
consecutive time steps, and for each block

1. gets ``f`` and all ``J_t`` of the block from one forward pass and d reverse passes with the
   cotangents ``e_i`` (product i is row i of every ``J_t`` of the block at once);
2. runs the block's linear recurrence from the carry of the previous block, in a compiled loop
   along time (:func:`.native.scan_dense`, ``O(d^2)`` per step, the sequential loop's arithmetic
   without its per-step interpreter cost; the torch chunked scan where no compiler is found).

A block's Jacobians are d products of the block's size, read by the scan where autograd wrote
them. The sequential dependence of step 2 is no loss on a CPU: the scan is memory bound and a
fraction of step 1, which is parallel over all rows. (Off the CPU each block's recurrence is the
parallel chunked scan of :mod:`.scan`.)

Reference: Lim et al., "Parallelizing non-linear sequential models over the sequence length"
(DEER, ICLR 2024), whose Newton step this is.

Example::

    >>> W = 0.5 * torch.randn(3, 3)
    >>> lin = DenseLinearization(lambda h, x: torch.tanh(h @ W.T + x))
    >>> out, rows = lin.rows(torch.zeros(5, 3), torch.zeros(5, 3))   # rows[i][n] = e_i^T J_n
    >>> torch.allclose(torch.stack(rows, 1)[0], W)                    # J = diag(1 - tanh^2) W = W at 0
    True
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ..derivatives import rowwise
from . import native
from .scan import scan_batched

if TYPE_CHECKING:
    from .problem import RecurrenceProblem

Transition = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DenseLinearization:
    """The per-row state Jacobians of ``transition`` as d reverse-mode products
    (:func:`..derivatives.rowwise.dense_jacobian_rows`): ``rows(h, u)`` returns ``f(h, u)`` (N, d)
    and the products ``R[i]`` (N, d), ``R[i][n] = e_i^T J_n``, which the blocked step scans where
    autograd wrote them. Why d plain products: a batched reverse pass (``is_grads_batched``) runs
    ops without a batching rule (``tanh_backward``) as a loop plus a concatenation and measured
    1.2-2x slower on the bench's Elman cell (T = 64k, d = 24, one thread); ``torch.func`` and
    forward-mode AD import ``torch._dynamo``. With blocks of ``_DENSE_BLOCK_ELEMENTS`` entries (see
    :mod:`.problem`) the per-call overhead of the d products is amortized."""

    def __init__(self, transition: Transition):
        self.transition = transition

    def rows(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out, rows = rowwise.dense_jacobian_rows(self.transition, h, u)
        return out, [r.contiguous() for r in rows]  # the compiled scan reads them as flat buffers

    def jacobian(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f(h, u)`` and the Jacobians (N, d, d)."""
        return rowwise.dense_jacobian(self.transition, h, u)


def newton_step(problem: "RecurrenceProblem", lin: DenseLinearization, h: torch.Tensor, out: torch.Tensor,
                block_elements: int) -> torch.Tensor:
    """The Newton step ``delta`` (B, T, d) at states ``h`` (B, T, d), written into ``out``.

    ``block_elements`` bounds rows x d per block (the Jacobians of a block are d times that)."""
    B, T, d = h.shape
    steps = max(1, block_elements // (B * d))
    carry = h.new_zeros(B, d)
    for t0 in range(0, T, steps):
        t1 = min(T, t0 + steps)
        n = t1 - t0
        prev = h[:, t0 - 1:t1 - 1] if t0 else torch.cat([problem.h0.unsqueeze(1), h[:, :t1 - 1]], 1)
        f, rows = lin.rows(prev.reshape(B * n, d), problem.us[:, t0:t1].reshape(B * n, -1))
        block = out[:, t0:t1]
        torch.sub(f.reshape(B, n, d), h[:, t0:t1], out=block)
        if not native.scan_dense(rows, block, carry, block):
            A = torch.stack(rows, 1).view(B, n, d, d)  # A[b, t, i] = rows[i][b n + t]
            block.copy_(scan_batched(A, block.contiguous(), carry, "dense"))
        carry = block[:, -1].contiguous()
    problem.counters.nfev += 1
    problem.counters.njev += 1
    return out
