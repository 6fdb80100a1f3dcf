"""Gradients of a constrained solution x*(θ) through its KKT conditions (implicit differentiation).

With u = (x, λ, z) (z the bound multipliers, sign convention ∇f + Jᵀλ + z = 0) the solution
satisfies the square system

    G(u, θ) = [ ∇ₓf(x, θ) + J(x, θ)ᵀλ + z ;
                cᵢ(x, θ) − bᵢ   for active rows,   λᵢ for inactive rows ;
                xⱼ − ℓⱼ          for active bounds, zⱼ for inactive bounds ] = 0,

where a row is active if it is an equality or its multiplier is nonzero (bᵢ the bound its
multiplier's sign points to). Under strict complementarity and the second-order sufficient
condition ∂G/∂u is nonsingular and x*(θ) is differentiable (Fiacco 1976); the gradient is one
adjoint solve with ∂G/∂u (:func:`~torchnewton.solvers.implicit.implicit_solution`). The active
set is frozen at the solution, so a derivative across a change of active set is the one-sided
derivative of the current active set. Constraint functions are differentiated by autodiff.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..implicit import differentiable_args, implicit_solution
from ..objective.problem import batch_objective
from .spec import ConstraintSpec


def differentiate_constrained(x: torch.Tensor, lam: torch.Tensor, z: torch.Tensor, fun: Callable, spec: ConstraintSpec,
                              args: tuple, batch: bool, *, tol: float) -> torch.Tensor:
    """``x`` (B, n) carrying gradients to the tensors of ``args`` that require grad."""
    positions = differentiable_args(args)
    if not positions:
        return x
    n, m = x.shape[-1], lam.shape[-1]
    threshold = tol * torch.clamp(lam.abs().amax(-1, keepdim=True) if m else x.new_ones(x.shape[0], 1), min=1.0)
    equality = spec.lower == spec.upper
    active_rows = equality | (lam.abs() > threshold)
    row_target = torch.where(lam > 0, spec.upper, spec.lower)
    row_target = torch.where(equality, spec.lower, row_target)
    row_target = torch.where(active_rows, row_target, torch.zeros_like(row_target))
    active_bounds = z.abs() > threshold
    bound_target = torch.where(z > 0, spec.x_upper, spec.x_lower)
    bound_target = torch.where(active_bounds, bound_target, torch.zeros_like(bound_target))

    def condition(u: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        full = list(args)
        for i, p in zip(positions, params):
            full[i] = p
        f = batch_objective(fun, tuple(full), batch)
        blocks = [b.rebind(tuple(full)) for b in spec.blocks]
        y, mult, bound_mult = u[:, :n], u[:, n:n + m], u[:, n + m:]
        with torch.enable_grad():
            y_ = y if y.requires_grad else y.detach().requires_grad_(True)
            c = torch.cat([b(y_) for b in blocks], -1) if blocks else y_.new_zeros(y_.shape[0], 0)
            lagrangian = f(y_) + (mult * c).sum(-1) + (bound_mult * y_).sum(-1)
            (grad,) = torch.autograd.grad(lagrangian.sum(), y_, create_graph=True)
        rows = torch.where(active_rows, c - row_target, mult)
        bounds = torch.where(active_bounds, y - bound_target, bound_mult)
        return torch.cat([grad, rows, bounds], -1)

    u = torch.cat([x, lam, z], -1)
    solution = implicit_solution(condition, u, [args[i] for i in positions])
    return solution[:, :n]
