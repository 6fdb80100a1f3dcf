"""Derivatives of an entropic OT solution: envelope theorem for the value, implicit function theorem
for the plan.

Value. reg_cost(C, a, b) = max_{f,g} ⟨f, a⟩ + ⟨g, b⟩ − ε Σ exp((f_i + g_j − C_ij)/ε). By the envelope
theorem its derivatives are the partial derivatives at the optimal potentials:
∂/∂C = P, ∂/∂a = f, ∂/∂b = g — no solve needed.

Plan. The optimal (f, g) satisfy P1 = a, Pᵀ1 = b with P = exp((f ⊕ g − C)/ε). Differentiating,
H [df; dg] = ε [da; db] + [(P∘dC)1; (P∘dC)ᵀ1] with H = [[diag(P1), P], [Pᵀ, diag(Pᵀ1)]]. For an
upstream gradient G = ∂L/∂P, the adjoint λ = (λ_f, λ_g) solves H λ = (1/ε)[(G∘P)1; (G∘P)ᵀ1]
(the right-hand side is orthogonal to the gauge direction (1, −1), so the gauge-fixed system of
:mod:`torchnewton.ot.hessian` is consistent), and

    ∂L/∂C = P∘(λ_f ⊕ λ_g) − G∘P/ε,   ∂L/∂a = ε λ_f,   ∂L/∂b = ε λ_g.

The adjoint system is solved with the same operator and Jacobi-preconditioned CG as a sparse
Newton step, with the exact dense P. Gradients for a and b are defined up to adding (t, −t),
which does not change a derivative along any mass-preserving direction (Σda = Σdb). Zero-mass
entries get zero gradient from the plan. The cost ⟨C, P⟩ is differentiated as ⟨C, P⟩ with this
implicit plan, which is exact (the envelope theorem holds for the regularized value only).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch

from ..core.status import Status
from ..linear.krylov import cg
from ..linear.precond import jacobi
from .dual import weighted_sum
from .hessian import dense_products, dual_hessian


class RegularizedCost(torch.autograd.Function):
    """reg_cost (B,) from the converged (f, g, P), differentiable in C, a, b by the envelope theorem."""

    @staticmethod
    def forward(ctx: Any, C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, f: torch.Tensor,
                g: torch.Tensor, plan: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f, g, plan)
        return weighted_sum(f, a.detach()) + weighted_sum(g, b.detach()) - reg * plan.sum(dim=(-1, -2))

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        f, g, plan = ctx.saved_tensors
        return (grad_out.view(-1, 1, 1) * plan, grad_out.unsqueeze(-1) * f, grad_out.unsqueeze(-1) * g,
                None, None, None, None)


class ImplicitPlan(torch.autograd.Function):
    """The converged plan (B, n, m), differentiable in C, a, b by implicit differentiation."""

    @staticmethod
    def forward(ctx: Any, C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, plan: torch.Tensor,
                reg: torch.Tensor, free: torch.Tensor, rtol: float) -> torch.Tensor:
        ctx.save_for_backward(plan, reg, free)
        ctx.rtol = rtol
        return plan.clone()

    @staticmethod
    def backward(ctx: Any, grad_plan: torch.Tensor):
        plan, reg, free = ctx.saved_tensors
        n = plan.shape[-2]
        weight = free.to(plan.dtype)
        weighted = grad_plan * plan
        rhs = weight * torch.cat([weighted.sum(-1), weighted.sum(-2)], dim=-1) / reg.unsqueeze(-1)
        operator = dual_hessian(plan.sum(-1), plan.sum(-2), *dense_products(plan), free)
        solution = cg(operator, rhs, preconditioner=jacobi(operator), rtol=ctx.rtol,
                      max_iter=10 * rhs.shape[-1])
        if bool((solution.status != int(Status.SUCCESS)).any()):
            warnings.warn("torchnewton.ot: the adjoint CG solve for the plan's gradient did not reach its "
                          "tolerance; the gradient is approximate", RuntimeWarning, stacklevel=2)
        adjoint = weight * solution.x
        lam_f, lam_g = adjoint[:, :n], adjoint[:, n:]
        grad_C = plan * (lam_f.unsqueeze(-1) + lam_g.unsqueeze(-2)) - weighted / reg.view(-1, 1, 1)
        return (grad_C, reg.unsqueeze(-1) * lam_f, reg.unsqueeze(-1) * lam_g, None, None, None, None)
