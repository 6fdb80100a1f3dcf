"""Successive over-relaxation (SOR) as a solver, and Young's optimal ω.

SOR splits A = D + L + U and iterates x ← x + (D/ω + L)⁻¹ (b − A x): Gauss–Seidel for ω = 1,
over-relaxed for 1 < ω < 2 (convergent for SPD A and every ω in (0, 2)). For consistently
ordered matrices (the 5-point Laplacian in natural order) Young's theorem gives the optimum
ω* = 2 / (1 + √(1 − ρ_J²)) from the spectral radius ρ_J of the Jacobi iteration matrix
(Young, "Iterative Solution of Large Linear Systems", 1971; Saad, §4.2).

Example:
    >>> import scipy.sparse as sp
    >>> A = sp.diags([[-1.0] * 19, [2.0] * 20, [-1.0] * 19], [-1, 0, 1]).tocsr()
    >>> b = torch.ones(20, dtype=torch.float64)
    >>> sor(A, b, omega=1.7, rtol=1e-8).nit < sor(A, b, omega=1.0, rtol=1e-8).nit
    True
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..core.status import Status
from .iterative.common import KrylovResult, call_back, finish, prepare
from .preconditioners import triangular_parts, triangular_solve


def young_optimal_omega(jacobi_spectral_radius: float) -> float:
    """ω* = 2/(1 + √(1 − ρ_J²)) for a consistently ordered matrix with Jacobi radius ρ_J < 1."""
    if not 0 <= jacobi_spectral_radius < 1:
        raise ValueError(f"the Jacobi spectral radius must be in [0, 1), got {jacobi_spectral_radius}")
    return 2.0 / (1.0 + math.sqrt(1.0 - jacobi_spectral_radius**2))


def sor(A: Any, b: torch.Tensor, x0: torch.Tensor | None = None, *, omega: float = 1.0, rtol: float = 1e-5,
        atol: float = 0.0, maxiter: int | None = None,
        callback: Callable[[torch.Tensor], Any] | None = None) -> KrylovResult:
    """Solve A x = b by SOR sweeps until ‖b − Ax‖ ≤ max(rtol‖b‖, atol). One product with A and
    one triangular solve per iteration; a diverging or non-finite iterate ends with
    ``Status.NONFINITE``, the iteration limit with ``Status.MAX_ITER``."""
    if isinstance(omega, bool) or not isinstance(omega, (int, float)) or not 0 < omega < 2:
        raise ValueError(f"omega must be a number in (0, 2), got {omega!r}")
    problem = prepare(A, b, x0, rtol, atol, maxiter, None, callback, lambda n: 100 * n)
    ops, bb, x = problem.ops, problem.b, problem.x.clone()
    lower, _, _ = triangular_parts(ops.op, float(omega))
    batch = bb.shape[0]
    long = dict(dtype=torch.long, device=bb.device)
    status = torch.full((batch,), int(Status.MAX_ITER), **long)
    nit = torch.zeros(batch, **long)
    r = bb - ops.A(x) if problem.x0_given else bb.clone()
    for _ in range(problem.maxiter):
        rnorm = r.norm(dim=-1)
        status.masked_fill_(~torch.isfinite(rnorm), int(Status.NONFINITE))
        status.masked_fill_(torch.isfinite(rnorm) & (rnorm <= problem.tol), int(Status.SUCCESS))
        active = status == int(Status.MAX_ITER)
        if not bool(active.any()):
            break
        step = triangular_solve(lower, r, upper=False)
        x = x + step * active.unsqueeze(-1)
        nit += active.long()
        r = bb - ops.A(x)
        if call_back(problem, x):
            status.masked_fill_(status == int(Status.MAX_ITER), int(Status.CALLBACK_STOP))
            break
    else:
        rnorm = r.norm(dim=-1)
        status.masked_fill_(torch.isfinite(rnorm) & (rnorm <= problem.tol), int(Status.SUCCESS))
    return finish(problem, x, status, nit, r.norm(dim=-1))
