"""SOR iteration counts for many systems and many ω at once: the cost table of a bandit study.

Evaluating a relaxation policy against the best fixed ω in hindsight needs the iteration count of
*every* grid ω on *every* system — T·K SOR solves, 5000·20 in Khodak et al.'s experiments. All
(system, ω) pairs sweep together. One sweep is x ← x + (D/ω + L)⁻¹(b − A x); the forward
substitution y_i = (r_i − Σ_{j<i} a_ij y_j)/(a_ii/ω) runs by *levels* of the sparsity pattern
shared by the systems (rows whose lower neighbours all lie in earlier levels: the anti-diagonals
of a 5-point grid in natural order), each level one vectorized update of every pair. When the
systems differ only on the diagonal (shifted systems A_t = B + D_t, the paper's sequence), the
unknowns are renumbered level by level and each level's rows of B are one small dense block
shared by all pairs (matrix products); otherwise each pair gathers its own row values. A pair
records the first sweep at which ‖b − A x‖ ≤ rtol‖b‖ — the count of :func:`~torchnewton.linear.sor`
(same iterates up to rounding, same test).

Example:
    >>> A = torch.tensor([[4.0, -1.0], [-1.0, 4.0]], dtype=torch.float64)
    >>> sor_iteration_table(A[None], torch.ones(1, 2, dtype=torch.float64), [1.0, 1.1], rtol=1e-8)
    tensor([[8, 9]])
"""
from __future__ import annotations

from typing import Sequence

import torch


def sor_iteration_table(A: torch.Tensor, b: torch.Tensor, omegas: Sequence[float], *, rtol: float = 1e-8,
                        maxiter: int = 5000, chunk: int = 1024) -> torch.Tensor:
    """(T, K) SOR sweep counts from x₀ = 0 for the matrices A (T, n, n) (dense tensors; their
    common sparsity pattern is what is swept), right-hand sides b (T, n) and the K values
    ``omegas``; a pair that does not converge within ``maxiter`` (or diverges) costs ``maxiter``.
    ``chunk`` systems (chunk·K pairs) are swept together."""
    if A.dim() != 3 or A.shape[1] != A.shape[2] or b.shape != A.shape[:2]:
        raise ValueError(f"A must be (T, n, n) and b (T, n), got {tuple(A.shape)} and {tuple(b.shape)}")
    omega = torch.as_tensor(list(omegas), dtype=A.dtype, device=A.device)
    if omega.dim() != 1 or not bool(((omega > 0) & (omega < 2)).all()):
        raise ValueError(f"every omega must be in (0, 2), got {list(omegas)}")
    if maxiter < 1 or chunk < 1:
        raise ValueError(f"maxiter and chunk must be >= 1, got {maxiter}, {chunk}")
    diagonal = torch.diagonal(A, dim1=-2, dim2=-1)
    if not bool((diagonal != 0).all()):
        raise ValueError("A has a zero diagonal entry; SOR needs diag(A) invertible")
    pattern = (A != 0).any(0)
    full_cols = _padded_columns(pattern)
    lower_cols = _padded_columns(torch.tril(pattern, -1))
    levels = _levels(lower_cols, A.shape[1])
    off = A - torch.diag_embed(diagonal)
    if bool((off == off[:1]).all()):  # shifted systems A_t = B + D_t: one B for all
        order = torch.cat(levels)
        bounds = torch.tensor([0] + [len(rows) for rows in levels]).cumsum(0).tolist()
        B = off[0][order][:, order]
        strict = torch.tril(off[0], -1)[order][:, order]
        parts = [_shifted_chunk(B, strict, bounds, diagonal[s:s + chunk, order], b[s:s + chunk, order], omega,
                                rtol, maxiter) for s in range(0, A.shape[0], chunk)]
    else:
        parts = [_table_chunk(A[s:s + chunk], b[s:s + chunk], omega, full_cols, lower_cols, levels, rtol, maxiter)
                 for s in range(0, A.shape[0], chunk)]
    return torch.cat(parts)


def _column_band(rows: torch.Tensor) -> tuple[int, int]:
    """[first, last + 1) of the nonzero columns of a block of rows ((0, 0) when it is all zero)."""
    used = torch.nonzero(rows.ne(0).any(0)).flatten()
    return (int(used[0]), int(used[-1]) + 1) if used.numel() else (0, 0)


def _padded_columns(mask: torch.Tensor) -> torch.Tensor:
    """(n, w) column indices of each row's nonzeros, padded with n (a zero slot)."""
    n = mask.shape[0]
    counts = mask.sum(1)
    width = max(int(counts.max()), 1)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
    return torch.where(torch.arange(width, device=mask.device) < counts[:, None], order, torch.full_like(order, n))


def _levels(lower_cols: torch.Tensor, n: int) -> list[torch.Tensor]:
    """Rows grouped by depth in the forward-substitution dependency graph (row j < i feeds row i)."""
    depth = [0] * (n + 1)
    cols = lower_cols.tolist()
    for i in range(n):
        depth[i] = 1 + max((depth[j] for j in cols[i] if j < n), default=-1)
    by_level = torch.tensor(depth[:n])
    return [torch.nonzero(by_level == d).flatten().to(lower_cols.device) for d in range(int(by_level.max()) + 1)]


def _shifted_chunk(B: torch.Tensor, strict: torch.Tensor, bounds: list[int], diagonal: torch.Tensor, b: torch.Tensor,
                   omega: torch.Tensor, rtol: float, maxiter: int) -> torch.Tensor:
    """Sweeps for A_t = B + diag(d_t), unknowns permuted level by level (``bounds``): B x is one
    matrix product for every pair, and level ℓ of the forward substitution is the product of the
    rows of level ℓ of the strict lower part with the earlier levels — iterates identical to
    natural order, since a row only ever reads rows of earlier levels."""
    T, n = b.shape
    K = omega.shape[0]
    system = torch.arange(T, device=b.device).repeat_interleave(K)  # pairs (system, ω) along columns
    diag = diagonal[system].T.contiguous()
    pivot = diag / omega.repeat(T)
    rhs = b[system].T.contiguous()
    tol = rtol * b.norm(dim=-1)[system]
    X = b.new_zeros(n, T * K)
    counts = torch.full((T * K,), maxiter, dtype=torch.long, device=b.device)
    alive = torch.arange(T * K, device=b.device)
    finished = torch.zeros(T * K, dtype=torch.bool, device=b.device)
    # each level's rows of B and of its strict lower part touch only a band of columns (for a
    # 5-point grid: the neighbouring anti-diagonals), so each product is a small dense block
    spans = [(start, stop, *_column_band(B[start:stop]), _column_band(strict[start:stop, :start])[0])
             for start, stop in zip(bounds[:-1], bounds[1:])]
    for sweep in range(maxiter + 1):
        R = rhs - diag * X
        for start, stop, low, high, _ in spans:
            R[start:stop] -= B[start:stop, low:high] @ X[low:high]
        finished = _settle(R, tol, finished, counts, alive, sweep)
        if bool(finished.all()) or sweep == maxiter:
            break
        keep = _pairs_to_keep(finished)
        if keep is not None:
            alive, tol, finished = alive[keep], tol[keep], finished[keep]
            diag, pivot, rhs, X, R = (t[:, keep] for t in (diag, pivot, rhs, X, R))
        Y = torch.empty_like(X)
        for start, stop, _, _, low in spans:
            Y[start:stop] = (R[start:stop] - strict[start:stop, low:start] @ Y[low:start]) / pivot[start:stop]
        X = X + Y  # finished pairs still held move on harmlessly: never read again
    return counts.view(T, K)


def _table_chunk(A: torch.Tensor, b: torch.Tensor, omega: torch.Tensor, full_cols: torch.Tensor,
                 lower_cols: torch.Tensor, levels: list[torch.Tensor], rtol: float, maxiter: int) -> torch.Tensor:
    T, n, _ = A.shape
    K = omega.shape[0]
    padded = torch.cat([A, A.new_zeros(T, n, 1)], dim=-1)
    row = torch.arange(n, device=A.device)[:, None]
    # pairs (system, ω) along the last axis, unknowns along the first: gathering a neighbour is
    # then a copy of one contiguous row of pair values. Per pair: row values, strict-lower
    # values, pivots a_ii/ω, right-hand side.
    system = torch.arange(T, device=A.device).repeat_interleave(K)
    values = padded[:, row, full_cols][system].permute(1, 2, 0).contiguous()  # (n, w, P)
    lower = padded[:, row, lower_cols][system].permute(1, 2, 0).contiguous()
    pivot = (torch.diagonal(A, dim1=-2, dim2=-1)[:, None, :] / omega.view(1, K, 1)).reshape(T * K, n).T.contiguous()
    rhs = b[system].T.contiguous()
    tol = rtol * b.norm(dim=-1)[system]
    X = A.new_zeros(n + 1, T * K)  # the last row stays 0: the padding column
    counts = torch.full((T * K,), maxiter, dtype=torch.long, device=A.device)
    alive = torch.arange(T * K, device=A.device)
    finished = torch.zeros(T * K, dtype=torch.bool, device=A.device)
    level_cols = [lower_cols[rows] for rows in levels]
    for sweep in range(maxiter + 1):
        R = rhs - (values * X[full_cols]).sum(1)
        finished = _settle(R, tol, finished, counts, alive, sweep)
        if bool(finished.all()) or sweep == maxiter:
            break
        keep = _pairs_to_keep(finished)
        if keep is not None:
            alive, tol, finished = alive[keep], tol[keep], finished[keep]
            values, lower, pivot, rhs, X, R = (t[..., keep] for t in (values, lower, pivot, rhs, X, R))
        Y = torch.zeros_like(X)
        for rows, cols in zip(levels, level_cols):
            Y[rows] = (R[rows] - (lower[rows] * Y[cols]).sum(1)) / pivot[rows]
        X = X + Y  # finished pairs still held move on harmlessly: never read again
    return counts.view(T, K)


def _settle(R: torch.Tensor, tol: torch.Tensor, finished: torch.Tensor, counts: torch.Tensor,
            alive: torch.Tensor, sweep: int) -> torch.Tensor:
    """Record ``sweep`` as the count of the pairs (columns of the residuals R) converging now; the
    new finished mask. A diverged pair finishes too and keeps the cost maxiter."""
    norm = R.square().sum(0).sqrt()  # column norms: a row-wise sum, faster than norm(dim=0)
    converged = ~finished & (norm <= tol)
    counts[alive[converged]] = sweep
    return finished | converged | ~torch.isfinite(norm)


def _pairs_to_keep(finished: torch.Tensor) -> torch.Tensor | None:
    """The pairs still worth carrying: the unfinished ones once a quarter is done, else all (None)."""
    return ~finished if 4 * int(finished.sum()) > finished.numel() else None
