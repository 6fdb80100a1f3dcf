"""How gradients reach a deep-equilibrium layer's parameters without unrolling its forward solve.

Given z* = f(z*, x) (found without a graph), each rule returns a tensor equal to z* (up to the
forward tolerance) whose graph carries an approximation of dz*/d(x, θ):

* implicit (Bai, Kolter & Koltun 2019): one call y = f(z*, x) with a graph, whose incoming
  gradient g is replaced by the adjoint fixed point w = g + Jᵀw, J = ∂f/∂z at z*, so that
  backpropagating w through f gives the exact gradient (I − J)⁻ᵀ. The adjoint reuses the
  forward's fixed-point method (:func:`torchnewton.solvers.fixed_point.adjoint.solve_adjoint`).
  Optionally, samples whose forward or adjoint residual is far above its tolerance fall back
  to JFB's w = g.
* phantom (Geng et al. 2021, "On Training Implicit Models"): k damped steps
  z ← (1 − τ) z + τ f(z, x) from z*, differentiated as they are; z* is their fixed point.
* jfb (Fung et al. 2022, "JFB: Jacobian-Free Backpropagation for Implicit Networks"): one step
  y = f(z*, x), i.e. (I − J)⁻¹ replaced by I.

:func:`jacobian_frobenius` is the Hutchinson estimate of ‖∂f/∂z‖_F² used to regularize the
layer (Bai, Koltun & Kolter 2021, "Stabilizing Equilibrium Models by Jacobian Regularization").
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..solvers.fixed_point.adjoint import solve_adjoint, vector_jacobian

Cell = Callable[[torch.Tensor, Any], torch.Tensor]


class _ImplicitAdjoint(torch.autograd.Function):
    """Identity on y = f(z*, x) forward; backward solves w = g + Jᵀw and sends w into f's graph.

    ``y`` and ``z`` (the leaf z* that f was called on) are inputs, so the saved graph holds no
    reference cycle; the products Jᵀw are re-entrant backward passes through that graph.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, z: torch.Tensor, adjoint: dict) -> torch.Tensor:
        ctx.adjoint = adjoint
        ctx.save_for_backward(y, z)
        return y.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y, z = ctx.saved_tensors
        adjoint = dict(ctx.adjoint)
        record, trusted, factor = adjoint.pop("record"), adjoint.pop("trusted"), adjoint.pop("fallback")
        shape, batch = grad.shape, grad.shape[0]
        product = vector_jacobian(y, z)
        flat = lambda w: product(w.view(shape)).reshape(batch, -1)
        g = grad.reshape(batch, -1)
        w, loop, problem = solve_adjoint(flat, g, **adjoint)
        fallback = None
        if trusted is not None:
            # (I − J)⁻ᵀ at a point far from a fixed point, or an adjoint far from solved, can be
            # arbitrarily wrong (I − J nearly singular there): such samples get JFB's w = g
            solved = loop.state.best_residual <= factor * adjoint["tol"] * problem.size(g)
            fallback = ~(trusted & solved)
            w = torch.where(fallback.unsqueeze(-1), g, w)
        record(loop, problem, fallback)
        return w.view(shape), None, None


def implicit(cell: Cell, z_star: torch.Tensor, x: Any, adjoint: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, f(z*, x) with its graph, the leaf z*) for implicit differentiation. ``adjoint``
    holds the keyword arguments of ``solve_adjoint`` plus ``record(loop, problem, fallback)``,
    ``trusted``: None, or a (B,) mask of the samples whose forward residual is within ``fallback``
    times the tolerance, and ``fallback``: the others, and those whose adjoint residual exceeds
    ``fallback`` times its tolerance, get the Jacobian-free w = g instead."""
    z = z_star.detach().requires_grad_(True)
    y = cell(z, x)
    return _ImplicitAdjoint.apply(y, z, adjoint), y, z


def phantom(cell: Cell, z_star: torch.Tensor, x: Any, steps: int, damping: float) -> torch.Tensor:
    z = z_star.detach()
    for _ in range(steps):
        z = torch.lerp(z, cell(z, x), damping)
    return z


def jacobian_frobenius(y: torch.Tensor, z: torch.Tensor, samples: int) -> torch.Tensor:
    """Batch mean of the Hutchinson estimate of ‖∂y/∂z‖_F² per member, differentiable.

    E‖εᵀJ‖² = tr(J Jᵀ) = ‖J‖_F² for ε ~ N(0, I); each sample is one VJP with a graph.
    """
    total = y.new_zeros(())
    for _ in range(samples):
        eps = torch.randn_like(y)
        (vjp,) = torch.autograd.grad(y, z, eps, create_graph=True, retain_graph=True)
        total = total + vjp.pow(2).sum()
    return total / (samples * y.shape[0])
