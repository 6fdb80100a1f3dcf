"""SOR iteration counts for many systems and many ω at once: the cost table of a bandit study.

Evaluating a relaxation policy against the best fixed ω in hindsight needs the iteration count of
*every* grid ω on *every* system — T·K SOR solves. For the small systems of such studies
(n ≲ 10³) the sweeps x ← x + (D/ω + L)⁻¹(b − A x) of all (system, ω) pairs run together as one
batched dense triangular solve per sweep, and each pair records the first sweep at which
‖b − A x‖ ≤ rtol‖b‖ — the same count as :func:`~torchnewton.linear.sor` (same iterates, same test).

Example:
    >>> A = torch.tensor([[4.0, -1.0], [-1.0, 4.0]], dtype=torch.float64)
    >>> sor_iteration_table(A[None], torch.ones(1, 2, dtype=torch.float64), [1.0, 1.1], rtol=1e-8)
    tensor([[7, 8]])
"""
from __future__ import annotations

from typing import Sequence

import torch


def sor_iteration_table(A: torch.Tensor, b: torch.Tensor, omegas: Sequence[float], *, rtol: float = 1e-8,
                        maxiter: int = 5000, chunk: int = 64) -> torch.Tensor:
    """(T, K) SOR sweep counts from x₀ = 0 for the dense matrices A (T, n, n), right-hand sides
    b (T, n) and the K values ``omegas``; a pair that does not converge within ``maxiter`` (or
    diverges) costs ``maxiter``. ``chunk`` systems are swept together (memory chunk·K·n²)."""
    if A.dim() != 3 or A.shape[1] != A.shape[2] or b.shape != A.shape[:2]:
        raise ValueError(f"A must be (T, n, n) and b (T, n), got {tuple(A.shape)} and {tuple(b.shape)}")
    omega = torch.as_tensor(list(omegas), dtype=A.dtype, device=A.device)
    if omega.dim() != 1 or not bool(((omega > 0) & (omega < 2)).all()):
        raise ValueError(f"every omega must be in (0, 2), got {list(omegas)}")
    diagonal = torch.diagonal(A, dim1=-2, dim2=-1)
    if not bool((diagonal != 0).all()):
        raise ValueError("A has a zero diagonal entry; SOR needs diag(A) invertible")
    rows = []
    for start in range(0, A.shape[0], chunk):
        rows.append(_table_chunk(A[start:start + chunk], b[start:start + chunk], omega, rtol, maxiter))
    return torch.cat(rows)


def _table_chunk(A: torch.Tensor, b: torch.Tensor, omega: torch.Tensor, rtol: float, maxiter: int) -> torch.Tensor:
    T, n, _ = A.shape
    K = omega.shape[0]
    strict = torch.tril(A, -1)
    diagonal = torch.diagonal(A, dim1=-2, dim2=-1)
    # one (system, ω) pair per row: (D/ω + L)⁻¹ explicitly, so that a sweep is two batched
    # matrix-vector products (bmm) instead of T·K small triangular solves
    lower = strict.unsqueeze(1) + torch.diag_embed(diagonal.unsqueeze(1) / omega.view(1, K, 1))
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    inverse = torch.linalg.solve_triangular(lower, eye.expand_as(lower), upper=False).reshape(T * K, n, n)
    system = torch.arange(T, device=A.device).repeat_interleave(K)
    matrix, rhs = A[system], b[system].unsqueeze(-1)
    tol = rtol * b.norm(dim=-1)[system]
    X = torch.zeros(T * K, n, 1, dtype=A.dtype, device=A.device)
    counts = torch.full((T * K,), maxiter, dtype=torch.long, device=A.device)
    alive = torch.arange(T * K, device=A.device)  # pairs still held in the batch
    finished = torch.zeros(T * K, dtype=torch.bool, device=A.device)
    for sweep in range(maxiter + 1):
        R = rhs - torch.bmm(matrix, X)
        norm = R.norm(dim=(1, 2))
        converged = ~finished & (norm <= tol[alive])
        counts[alive[converged]] = sweep
        finished |= converged | ~torch.isfinite(norm)  # a diverged pair keeps the cost maxiter
        if bool(finished.all()) or sweep == maxiter:
            break
        if 4 * int(finished.sum()) > finished.numel():
            # drop finished pairs (a copy of their n×n matrices, so only once a quarter is done)
            keep = ~finished
            alive, matrix, rhs, inverse, X, R = (t[keep] for t in (alive, matrix, rhs, inverse, X, R))
            finished = finished[keep]
        X = X + torch.bmm(inverse, R)  # finished pairs still held move on harmlessly: never read again
    return counts.view(T, K)
