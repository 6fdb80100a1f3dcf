"""Gradients of a fixed point z*(θ) = T(z*(θ), θ) by the adjoint fixed point, never by unrolling.

Differentiating z* = T(z*, θ) gives (I − J) dz* = ∂T/∂θ dθ with J = ∂T/∂z at z*, so a
vector-Jacobian product v ↦ v dz*/dθ needs w = (I − J)⁻ᵀ v, which is itself a fixed point,

    w = v + Jᵀ w,

solved with the same fixed-point method as the forward problem (its linear map has the
spectrum of J, which the forward iteration has just shown to be contractive enough), one VJP of T
per iteration; then θ̄ = wᵀ ∂T/∂θ by one more VJP (Bai, Kolter & Koltun 2019, "Deep
Equilibrium Models"; Blondel et al. 2022 for the general implicit form in
:mod:`torchnewton.solvers.implicit`, which forms the Jacobian densely instead).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch

from ...core.status import Status
from .problem import FixedPointProblem
from .termination import FixedPointTermination
from ..loop import LoopOutput, iterate

Product = Callable[[torch.Tensor], torch.Tensor]  # w (B, n) ↦ Jᵀ w (B, n)
MethodFactory = Callable[[FixedPointTermination], Any]  # termination ↦ a fixed-point step object


def solve_adjoint(product: Product, v: torch.Tensor, make_method: MethodFactory, *, tol: float, norm: str,
                  max_iter: int, patience: int | None = None) -> tuple[torch.Tensor, LoopOutput, FixedPointProblem]:
    """The solution w of w = v + Jᵀ w (B, n), started from v (one Picard step from 0).

    The tolerance is relative to the size of v per member (a gradient's scale is the loss's):
    the solve stops when ‖v + Jᵀw − w‖ ≤ tol·‖v‖.
    """
    problem = FixedPointProblem(lambda w: v + product(w), norm)
    termination = FixedPointTermination(tol * problem.size(v), patience)
    with torch.no_grad():
        loop = iterate(make_method(termination), problem, v, max_iter=max_iter)
    return loop.state.best_x, loop, problem


def vector_jacobian(out: torch.Tensor, inputs: torch.Tensor) -> Product:
    """w ↦ wᵀ ∂out/∂inputs through a recorded graph (kept for repeated products)."""
    def product(w: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(out, inputs, w, retain_graph=True, allow_unused=True)
        return torch.zeros_like(w) if grad is None else grad
    return product


class _AdjointFixedPoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, function: Callable[..., torch.Tensor], adjoint: dict, x_star: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        ctx.function, ctx.adjoint = function, adjoint
        ctx.save_for_backward(x_star, *params)
        return x_star.clone()

    @staticmethod
    def backward(ctx, grad_x: torch.Tensor):
        x_star, *params = ctx.saved_tensors
        with torch.enable_grad():
            z = x_star.detach().requires_grad_(True)
            leaves = [p.detach().requires_grad_(p.requires_grad) for p in params]
            out = ctx.function(z, *leaves)
            w, loop, _ = solve_adjoint(vector_jacobian(out, z), grad_x, **ctx.adjoint)
            failed = loop.status != int(Status.SUCCESS)
            if bool(failed.any()):
                warnings.warn(f"fixed_point: the adjoint fixed point w = v + Jᵀw did not converge for "
                              f"{int(failed.sum())} of {failed.numel()} members (best residual "
                              f"{float(loop.state.best_residual.max()):.3g}); their gradients are approximate",
                              RuntimeWarning, stacklevel=2)
            needs = [leaf for leaf in leaves if leaf.requires_grad]
            grads = iter(torch.autograd.grad(out, needs, w, allow_unused=True)) if needs else iter(())
        return (None, None, None, *[next(grads) if leaf.requires_grad else None for leaf in leaves])


def adjoint_fixed_point_solution(function: Callable[..., torch.Tensor], x_star: torch.Tensor,
                                 params: Sequence[torch.Tensor], *, make_method: MethodFactory, tol: float,
                                 norm: str, max_iter: int, patience: int | None) -> torch.Tensor:
    """``x_star`` (B, n) carrying gradients to ``params`` through z* = T(z*, θ), T = ``function``;
    the adjoint is solved by ``make_method(termination)`` to relative tolerance ``tol``."""
    adjoint = {"make_method": make_method, "tol": tol, "norm": norm, "max_iter": max_iter, "patience": patience}
    return _AdjointFixedPoint.apply(function, adjoint, x_star, *params)
