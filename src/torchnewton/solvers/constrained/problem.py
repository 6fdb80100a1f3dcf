"""Derivatives of a constrained problem: f, ∇f, c, J = ∂c/∂x and the Lagrangian Hessian, counted.

The Lagrangian is L(x, λ) = f(x) + λᵀc(x) and its Hessian ∇²ₓL = ∇²f + Σᵢ λᵢ∇²cᵢ. By default
both come from autodiff of the batched functions (one reverse-over-reverse pass of f + λᵀc);
the user's ``jac``/``hess``/``hessp`` of f and a constraint's ``jac``/``hess`` (x, v) ↦ Σ vᵢ∇²cᵢ
replace the corresponding pieces. Counters: ``nfev`` objective calls, ``njev`` gradients,
``nhev`` Hessians (or n Hessian-vector products forming one), ``ncev`` constraint calls,
``njcev`` constraint Jacobians. A call on the whole (B, n) batch counts once.
"""
from __future__ import annotations

import torch

from ...core.counters import Counters
from ...derivatives import autodiff
from ...linear.batched import matvec, rmatvec
from .spec import BatchFunction, ConstraintSpec


class ConstrainedProblem:
    """f (B, n) → (B,) and the stacked constraints of ``spec``; see the module docstring."""

    def __init__(self, fun: BatchFunction, spec: ConstraintSpec, *, jac: BatchFunction | None = None,
                 hess: BatchFunction | None = None, hessp: BatchFunction | None = None):
        self.fun, self.spec = fun, spec
        self.jac, self.hess, self.hessp = jac, hess, hessp
        self.counters = Counters()
        self.ncev = 0
        self.njcev = 0
        self.m = spec.m
        self._autodiff_jacobian = all(b.jac is None for b in spec.blocks)

    # ---- values -------------------------------------------------------------------------
    def constraints(self, x: torch.Tensor) -> torch.Tensor:
        self.ncev += 1
        if not self.spec.blocks:
            return x.new_zeros(x.shape[0], 0)
        return torch.cat([b.fun(x) for b in self.spec.blocks], -1)

    def values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), c(x)), no derivatives."""
        self.counters.nfev += 1
        return self.fun(x), self.constraints(x)

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
        return f.detach(), g.detach(), c, J

    def derivatives(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇f, J) at x where the values are already known (a trial point that passed a cheap test).

        Counted as one gradient and one Jacobian; on the autodiff path the reverse passes re-run
        f and c internally (the user's callables see those calls)."""
        self.counters.njev += 1
        self.njcev += 1
        g = self.jac(x) if self.jac is not None else autodiff.gradient(self.fun, x)[1]
        if not self.spec.blocks:
            return g.detach(), x.new_zeros(x.shape[0], 0, x.shape[-1])
        jacobians = [b.jac(x).reshape(x.shape[0], b.size, x.shape[-1]) if b.jac is not None
                     else autodiff.jacobian(b.fun, x, mode="reverse")[1] for b in self.spec.blocks]
        return g.detach(), torch.cat(jacobians, -2)

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

    def lagrangian_gradient(self, x: torch.Tensor, lam: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f, c, ∇ₓL(x, λ)) with one call of f and c and one reverse pass (line-search trials)."""
        self.counters.nfev += 1
        self.counters.njev += 1
        self.ncev += 1
        if self.jac is not None or not self._autodiff_jacobian:
            f, g, c, J = self.evaluate(x)
            self.counters.nfev -= 1
            self.counters.njev -= 1
            self.ncev -= 1
            return f, c, g + rmatvec(J, lam)
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            f = self.fun(z)
            c = torch.cat([b.fun(z) for b in self.spec.blocks], -1) if self.spec.blocks else z.new_zeros(z.shape[0], 0)
            (grad,) = torch.autograd.grad((f + (lam * c).sum(-1)).sum(), z, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad
        return f.detach(), c.detach(), grad

    # ---- second derivatives ---------------------------------------------------------------
    def lagrangian_hessian(self, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """∇²ₓL(x, λ) (B, n, n), symmetrized."""
        self.counters.nhev += 1
        user_blocks = [b.hess is not None for b in self.spec.blocks]
        if self.hess is None and self.hessp is None and not any(user_blocks):
            def lagrangian(z: torch.Tensor) -> torch.Tensor:
                return self.fun(z) + (lam * self._constraint_values(z)).sum(-1)

            return autodiff.hessian(lagrangian, x)[2]
        H = self._objective_hessian(x)
        offset = 0
        for block in self.spec.blocks:
            weights = lam[:, offset: offset + block.size]
            offset += block.size
            if block.hess is not None:
                H = H + block.hess(x, weights).reshape(H.shape)
            else:
                H = H + autodiff.hessian(lambda z, b=block, w=weights: (w * b.fun(z)).sum(-1), x)[2]
        return 0.5 * (H + H.transpose(-1, -2))

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
        """Σᵢ wᵢ∇²cᵢ(x) (B, n, n): zero for affine constraints (used to tell global infeasibility)."""
        if not self.spec.blocks:
            return x.new_zeros(x.shape[0], x.shape[-1], x.shape[-1])
        return autodiff.hessian(lambda z: (weights * self._constraint_values(z)).sum(-1), x)[2]

    def jacobian_product(self, J: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return matvec(J, v)
