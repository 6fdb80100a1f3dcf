"""Inverse curvature–vector products (A + λI)⁻¹v, the core of influence functions.

The influence of a training point z on a test loss is −∇L_testᵀ (H + λI)⁻¹ ∇ℓ_z (Koh & Liang
2017, "Understanding black-box predictions via influence functions"); the damping λ ≥ 0 makes
the system positive definite where H is not. Solved matrix-free by the project's CG (SPD systems;
it stops with NEGATIVE_CURVATURE if it meets pᵀ(H + λI)p ≤ 0) or MINRES (indefinite ones).

Example:
    >>> from torchnewton.curvature import GaussNewtonOperator
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> X, y = torch.randn(64, 3), torch.randn(64, 1)
    >>> G = GaussNewtonOperator(model, torch.nn.MSELoss(), (X, y))
    >>> result = inverse_hvp(G, [torch.ones_like(p) for p in model.parameters()], damping=1e-3)
    >>> result.success, [tuple(t.shape) for t in result.x]   # a list shaped like the parameters, as v was
    (True, [(8, 3), (8,), (1, 8), (1,)])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..core.status import Status
from ..core.validate import check_method
from ..linear.krylov import cg, minres
from .blocks import as_square_operator
from .params import flatten, unflatten


@dataclass
class InverseResult:
    """``x`` in the format of v (vector (n,), block (B, n) or list of parameter-shaped tensors);
    per right-hand side: ``status`` (Status codes), ``iterations``, ``residual_norm`` ‖b − (A + λI)x‖."""

    x: torch.Tensor | list[torch.Tensor]
    status: torch.Tensor
    iterations: torch.Tensor
    residual_norm: torch.Tensor

    @property
    def success(self) -> bool:
        return bool((self.status == int(Status.SUCCESS)).all())


def inverse_hvp(op: Any, v: torch.Tensor | Sequence[torch.Tensor], *, damping: float = 0.0,
                method: str = "cg", rtol: float = 1e-6, atol: float = 0.0, max_iter: int | None = None,
                preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None) -> InverseResult:
    """Solve (A + damping·I) x = v by CG or MINRES; v is (n,), (B, n) or, for a curvature
    operator, a list of tensors shaped like its parameters."""
    op = as_square_operator(op)
    method = check_method(method, ("cg", "minres"))
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not math.isfinite(damping) or damping < 0:
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
    n = op.shape[-1]
    as_list = isinstance(v, (list, tuple))
    if as_list:
        params = getattr(op, "params", None)
        if params is None:
            raise TypeError("v may be a list of tensors only for a curvature operator; pass a tensor (n,) or (B, n)")
        if len(v) != len(params) or any(t.shape != p.shape for t, p in zip(v, params)):
            raise ValueError(f"v must be shaped like the parameters {[tuple(p.shape) for p in params]}")
        rhs = flatten(v).unsqueeze(0)
    elif isinstance(v, torch.Tensor):
        if v.dim() not in (1, 2) or v.shape[-1] != n:
            raise ValueError(f"v must have shape ({n},) or (B, {n}), got {tuple(v.shape)}")
        rhs = v.unsqueeze(0) if v.dim() == 1 else v
    else:
        raise TypeError(f"v must be a tensor or a list of tensors, got {type(v).__name__}")
    if rhs.dtype != op.dtype:
        raise TypeError(f"v has dtype {rhs.dtype}, the operator {op.dtype}")
    if not bool(torch.isfinite(rhs).all()):
        raise ValueError("v contains non-finite values (NaN or Inf)")
    system = op.shifted(damping) if damping > 0 else op
    solver = cg if method == "cg" else minres
    solution = solver(system, rhs, rtol=rtol, atol=atol, max_iter=max_iter, preconditioner=preconditioner)
    x: torch.Tensor | list[torch.Tensor] = solution.x
    if as_list:
        x = unflatten(solution.x[0], params)
    elif v.dim() == 1:
        x = solution.x[0]
    return InverseResult(x=x, status=solution.status, iterations=solution.iterations,
                         residual_norm=solution.residual_norm)
