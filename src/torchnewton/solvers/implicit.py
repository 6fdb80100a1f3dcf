"""Gradients of a solution x*(θ) of G(x, θ) = 0 by the implicit function theorem.

dx*/dθ = −(∂G/∂x)⁻¹ ∂G/∂θ, so a vector-Jacobian product needs one adjoint solve
(∂G/∂x)ᵀ w = v and one VJP of G in θ: θ̄ = −(∂G/∂θ)ᵀ w. The Newton iterations are never
differentiated (Blondel et al. 2022, "Efficient and Modular Implicit Differentiation").
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..core.status import Status
from ..derivatives import autodiff
from ..linear import solve_dense

Condition = Callable[..., torch.Tensor]  # G(x, *params) -> (B, n)


class _ImplicitSolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, condition: Condition, x_star: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.condition = condition
        ctx.save_for_backward(x_star, *params)
        return x_star.clone()

    @staticmethod
    def backward(ctx, grad_x: torch.Tensor):
        x_star, *params = ctx.saved_tensors
        condition = ctx.condition
        detached = [p.detach() for p in params]
        with torch.no_grad():
            _, J = autodiff.jacobian(lambda x: condition(x, *detached), x_star.detach())
            adjoint = solve_dense(J.transpose(-1, -2), grad_x)
        if bool((adjoint.status != int(Status.SUCCESS)).any()):
            # a singular ∂G/∂x means x* is not locally a function of θ: no honest gradient exists
            raise RuntimeError("implicit differentiation: ∂G/∂x is singular at the solution")
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(p.requires_grad) for p in params]
            G = condition(x_star.detach(), *leaves)
            needs = [leaf for leaf in leaves if leaf.requires_grad]
            grads = iter(torch.autograd.grad(G, needs, grad_outputs=-adjoint.x, allow_unused=True)) if needs else iter(())
        return (None, None, *[next(grads) if leaf.requires_grad else None for leaf in leaves])


def implicit_solution(condition: Condition, x_star: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Return ``x_star`` (B, n) carrying gradients to ``params`` through G(x*, θ) = 0."""
    return _ImplicitSolution.apply(condition, x_star, *params)


def differentiable_args(args: tuple) -> list[int]:
    """Positions of tensors in ``args`` that require gradients (under an enabled grad mode)."""
    if not torch.is_grad_enabled():
        return []
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]


def differentiate_solution(x_star: torch.Tensor, fun: Callable[..., torch.Tensor], args: tuple, batch: bool,
                           *, condition: str) -> torch.Tensor:
    """``x_star`` carrying gradients to the tensors of ``args`` that require grad.

    ``condition`` names what the solution satisfies: ``"residual"`` F(x*, θ) = 0 (root finding),
    ``"least-squares"`` ∇ₓ½‖F(x*, θ)‖² = 0, ``"stationary"`` ∇ₓf(x*, θ) = 0 (minimization).
    """
    positions = differentiable_args(args)
    if not positions:
        return x_star
    function = substitute_args(fun, args, positions, batch, scalar=condition == "stationary")
    if condition == "residual":
        G = function
    elif condition == "least-squares":
        G = lambda y, *params: autodiff.gradient(lambda z: 0.5 * (function(z, *params) ** 2).sum(-1), y)[1]
    else:
        G = lambda y, *params: autodiff.gradient(lambda z: function(z, *params), y)[1]
    return implicit_solution(G, x_star, [args[i] for i in positions])


def substitute_args(fun: Callable[..., torch.Tensor], args: tuple, positions: list[int], batch: bool,
                    *, scalar: bool = False) -> Callable[..., torch.Tensor]:
    """G(x, *θ): the batched function with the differentiable args replaced by θ."""
    def condition(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        full = list(args)
        for i, p in zip(positions, params):
            full[i] = p
        if batch:
            return fun(x, *full)
        out = fun(x[0], *full)
        return out.reshape(1) if scalar else out.reshape(1, -1)

    return condition
