"""Derivatives of a constrained problem: f, ∇f, c, J = ∂c/∂x and the Lagrangian Hessian, counted.

The Lagrangian is L(x, λ) = f(x) + λᵀc(x) and its Hessian ∇²ₓL = ∇²f + Σᵢ λᵢ∇²cᵢ. By default
both come from autodiff of the batched functions (one reverse-over-reverse pass of f + λᵀc);
the user's ``jac``/``hess``/``hessp`` of f and a constraint's ``jac``/``hess`` (x, v) ↦ Σ vᵢ∇²cᵢ
replace the corresponding pieces. Counters: ``nfev`` objective calls, ``njev`` gradients,
``nhev`` Hessians (or n Hessian-vector products forming one), ``ncev`` constraint calls,
``njcev`` constraint Jacobians. A call on the whole (B, n) batch counts once.

Objective scaling (Ipopt's gradient-based rule, Wächter & Biegler 2006 §3.8): with
``scale_objective`` the solvers see s·f, s = min(1, 100/‖∇f(x₀)‖∞) per member, fixed at the first
gradient; every f, ∇f and ∇²f returned here is the scaled one, so multipliers come out scaled
by s too (the entry point divides them back). Without it, an objective of size 1e6 (HS84)
dwarfs the constraint terms of every merit function and the iterates crawl.
"""
from __future__ import annotations

import torch

from ...core.counters import Counters
from ...derivatives import autodiff
from .spec import BatchFunction, ConstraintSpec


class ConstrainedProblem:
    """f (B, n) → (B,) and the stacked constraints of ``spec``; see the module docstring."""

    def __init__(self, fun: BatchFunction, spec: ConstraintSpec, *, jac: BatchFunction | None = None,
                 hess: BatchFunction | None = None, hessp: BatchFunction | None = None,
                 scale_objective: bool = True):
        self.fun, self.spec = fun, spec
        self.jac, self.hess, self.hessp = jac, hess, hessp
        self.counters = Counters()
        self.ncev = 0
        self.njcev = 0
        self.m = spec.m
        self.scale_objective = scale_objective
        self.scale: torch.Tensor | None = None  # (B,), set by the first gradient

    def _scale(self, g: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            size = g.abs().amax(-1)
            fine = torch.isfinite(size) & (size > 100.0) & self.scale_objective
            self.scale = torch.where(fine, 100.0 / torch.where(fine, size, torch.ones_like(size)),
                                     torch.ones_like(size))
        return self.scale

    # ---- values -------------------------------------------------------------------------
    def constraints(self, x: torch.Tensor) -> torch.Tensor:
        self.ncev += 1
        if not self.spec.blocks:
            return x.new_zeros(x.shape[0], 0)
        return torch.cat([b.fun(x) for b in self.spec.blocks], -1)

    def values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), c(x)), no derivatives."""
        self.counters.nfev += 1
        f = self.fun(x)
        return (f if self.scale is None else self.scale * f), self.constraints(x)

    # ---- first derivatives ----------------------------------------------------------------
    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f, ∇f, c, J) at x: one call of f and of c, reverse-mode derivatives."""
        self.counters.nfev += 1
        self.counters.njev += 1
        self.ncev += 1
        self.njcev += 1
        if self.jac is not None:
            f, g = self.fun(x), self.jac(x)
        else:
            f, g = autodiff.gradient(self.fun, x)
        c, J = self._constraints_and_jacobian(x)
        scale = self._scale(g.detach())
        return scale * f.detach(), scale.unsqueeze(-1) * g.detach(), c, J

    def derivatives(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇f, J) at x where the values are already known (a trial point that passed a cheap test).

        Counted as one gradient and one Jacobian; on the autodiff path the reverse passes re-run
        f and c internally (the user's callables see those calls)."""
        self.counters.njev += 1
        self.njcev += 1
        g = self.jac(x) if self.jac is not None else autodiff.gradient(self.fun, x)[1]
        g = self._scale(g.detach()).unsqueeze(-1) * g.detach()
        if not self.spec.blocks:
            return g, x.new_zeros(x.shape[0], 0, x.shape[-1])
        jacobians = [b.jac(x).reshape(x.shape[0], b.size, x.shape[-1]) if b.jac is not None
                     else autodiff.jacobian(b.fun, x, mode="reverse")[1] for b in self.spec.blocks]
        return g, torch.cat(jacobians, -2)

    def _constraints_and_jacobian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.spec.blocks:
            return x.new_zeros(x.shape[0], 0), x.new_zeros(x.shape[0], 0, x.shape[-1])
        values, jacobians = [], []
        for block in self.spec.blocks:
            if block.jac is not None:
                values.append(block.fun(x).detach())
                jacobians.append(block.jac(x).reshape(x.shape[0], block.size, x.shape[-1]))
            else:
                value, J = autodiff.jacobian(block.fun, x, mode="reverse")
                values.append(value)
                jacobians.append(J)
        return torch.cat(values, -1), torch.cat(jacobians, -2)

    # ---- second derivatives ---------------------------------------------------------------
    def lagrangian_hessian(self, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """∇²ₓL(x, λ) (B, n, n), symmetrized."""
        self.counters.nhev += 1
        scale = self.scale if self.scale is not None else x.new_ones(x.shape[0])
        user_blocks = [b.hess is not None for b in self.spec.blocks]
        if self.hess is None and self.hessp is None and not any(user_blocks):
            def lagrangian(z: torch.Tensor) -> torch.Tensor:
                return scale * self.fun(z) + (lam * self._constraint_values(z)).sum(-1)

            return autodiff.hessian(lagrangian, x)[2]
        H = scale.view(-1, 1, 1) * self._objective_hessian(x) + self._weighted_constraint_hessian(x, lam)
        return 0.5 * (H + H.transpose(-1, -2))

    def _weighted_constraint_hessian(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σᵢ wᵢ∇²cᵢ(x) (B, n, n): a constraint's ``hess`` where given, else autodiff."""
        H = x.new_zeros(x.shape[0], x.shape[-1], x.shape[-1])
        offset = 0
        for block in self.spec.blocks:
            w = weights[:, offset: offset + block.size]
            offset += block.size
            if block.hess is not None:
                H = H + block.hess(x, w).reshape(H.shape)
            else:
                H = H + autodiff.hessian(lambda z, b=block, w=w: (w * b.fun(z)).sum(-1), x)[2]
        return H

    def _constraint_values(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spec.blocks:
            return x.new_zeros(x.shape[0], 0)
        return torch.cat([b.fun(x) for b in self.spec.blocks], -1)

    def _objective_hessian(self, x: torch.Tensor) -> torch.Tensor:
        if self.hess is not None:
            return self.hess(x).reshape(x.shape[0], x.shape[-1], x.shape[-1])
        if self.hessp is not None:
            n = x.shape[-1]
            eye = torch.eye(n, dtype=x.dtype, device=x.device)
            return torch.stack([self.hessp(x, eye[j].expand_as(x)) for j in range(n)], -1)
        return autodiff.hessian(self.fun, x)[2]

    def constraint_curvature(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σᵢ wᵢ∇²cᵢ(x) (B, n, n): zero for affine constraints (used to tell global infeasibility).

        A constraint autodiff cannot see through (computed outside torch) counts as curved (NaN),
        so infeasibility stays "local"."""
        try:
            return self._weighted_constraint_hessian(x, weights)
        except RuntimeError:  # not differentiable by autodiff: no proof of affinity
            return torch.full((x.shape[0], x.shape[-1], x.shape[-1]), float("nan"), dtype=x.dtype, device=x.device)
