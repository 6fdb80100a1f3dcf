"""Derivatives of a constrained problem: f, ∇f, c, J = ∂c/∂x and the Lagrangian Hessian, counted.

The Lagrangian is L(x, λ) = f(x) + λᵀc(x) and its Hessian ∇²ₓL = ∇²f + Σᵢ λᵢ∇²cᵢ. By default
both come from autodiff of the batched functions (one reverse-over-reverse pass of f + λᵀc);
the user's ``jac``/``hess``/``hessp`` of f and a constraint's ``jac``/``hess`` (x, v) ↦ Σ vᵢ∇²cᵢ
replace the corresponding pieces. Counters: ``nfev`` objective calls, ``njev`` gradients,
``nhev`` Hessians (or n Hessian-vector products forming one), ``ncev`` constraint calls,
``njcev`` constraint Jacobians, ``nhvp`` products of the matrix-free V ↦ ∇²ₓL V
(:meth:`ConstrainedProblem.lagrangian_hessp`, one per column). A call on the whole (B, n) batch counts once; the entry point's
input checks of f and c at x0 count too, and their values are the solver's first ones
(:meth:`ConstrainedProblem.remember`). Without user derivatives, ∇f and every constraint's
Jacobian come from one recorded evaluation and two reverse passes; where the next
iteration needs ∇²ₓL at the same point, :meth:`ConstrainedProblem.derivatives_and_hessian` gives
all three from one recording (the interior point method's accepted points).

Objective scaling (Ipopt's gradient-based rule, Wächter & Biegler 2006 §3.8): with
``scale_objective`` the solvers see s·f, s = min(1, 100/‖∇f(x₀)‖∞) per member, fixed at the first
gradient; every f, ∇f and ∇²f returned here is the scaled one, so multipliers come out scaled
by s too (the entry point divides them back). Without it, an objective of size 1e6 (HS84)
dwarfs the constraint terms of every merit function and the iterates crawl.

Compiled (``options={"compile": True}``, a :class:`~torchnewton.core.fusion.Fusion` passed as
``fusion``): the same computations — the values (f, c) of a trial point, (f, ∇f, c, J), (∇f, J),
(∇f, J, ∇²ₓL) and ∇²ₓL, by autodiff or from the user's derivatives — are traced once into one
graph each and fused by Inductor, keyed by ``form`` (the user's callables and ``args``, by
identity) and the shapes: a second solve of the same functions and shapes compiles nothing.
The counters count the same calls. The matrix-free products and the curvature test stay eager.
"""
from __future__ import annotations

from typing import Callable

import torch

from ...core.counters import Counters
from ...core.fusion import Fusion, Same
from ...derivatives import autodiff
from .spec import BatchFunction, ConstraintSpec


class ConstrainedProblem:
    """f (B, n) → (B,) and the stacked constraints of ``spec``; see the module docstring."""

    def __init__(self, fun: BatchFunction, spec: ConstraintSpec, *, jac: BatchFunction | None = None,
                 hess: BatchFunction | None = None, hessp: BatchFunction | None = None,
                 scale_objective: bool = True, fusion: Fusion | None = None, owner: object = None,
                 form: tuple | None = None):
        self.fun, self.spec = fun, spec
        self.fusion = fusion if fusion is not None else Fusion(enabled=False)
        # what identifies fun, c and their derivatives across solves (the compiled graphs' key, kept
        # with ``owner``, the user's objective); None: never compiled
        self.owner = owner
        self.form = form + tuple(b.source if b.source is not None else Same(b) for b in spec.blocks) \
            if form is not None and self.fusion.enabled else None
        self.jac, self.hess, self.hessp = jac, hess, hessp
        self.counters = Counters()
        self.ncev = 0
        self.njcev = 0
        self.nhvp = 0  # Lagrangian Hessian-vector products (:meth:`lagrangian_hessp`)
        self.m = spec.m
        self.scale_objective = scale_objective
        self.scale: torch.Tensor | None = None  # (B,), set by the first gradient
        self._known: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def remember(self, x: torch.Tensor, f: torch.Tensor, c: torch.Tensor) -> None:
        """Keep (f(x), c(x)) computed (and counted) elsewhere — the entry point's checks at x0 —
        so that the first :meth:`values` or :meth:`evaluate` at that x calls neither again."""
        self._known = (x, f.detach(), c.detach())

    def _recall(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The remembered (unscaled f, c) if x is the remembered point, once."""
        known, self._known = self._known, None
        if known is None or known[0].shape != x.shape or not (known[0] is x or torch.equal(known[0], x)):
            return None
        return known[1], known[2]

    def _scale(self, g: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            size = g.abs().amax(-1)
            fine = torch.isfinite(size) & (size > 100.0) & self.scale_objective
            self.scale = torch.where(fine, 100.0 / torch.where(fine, size, torch.ones_like(size)),
                                     torch.ones_like(size))
        return self.scale

    def _fused(self, name: str, fn: Callable[..., object], *tensors: torch.Tensor):
        """``fn(*tensors)``, run as its compiled graph where compiling is on (see the module docstring)."""
        if self.form is None:
            return fn(*tensors)
        return self.fusion(fn, *tensors, key=(name, self.form), owner=self.owner)

    # ---- values -------------------------------------------------------------------------
    def constraints(self, x: torch.Tensor) -> torch.Tensor:
        self.ncev += 1
        if not self.spec.blocks:
            return x.new_zeros(x.shape[0], 0)
        return torch.cat([b.fun(x) for b in self.spec.blocks], -1)

    def values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), c(x)), no derivatives."""
        known = self._recall(x)
        if known is not None:
            f, c = known
            self._known = (x, f, c)  # still known to a following :meth:`evaluate` at x
        else:
            self.counters.nfev += 1
            self.ncev += 1
            f, c = self._fused("values", self._values, x)
        return (f if self.scale is None else self.scale * f), c

    def _values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fun(x), self._constraint_values(x)

    # ---- first derivatives ----------------------------------------------------------------
    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f, ∇f, c, J) at x: one call of f and of c (none where :meth:`remember` knows them),
        reverse-mode derivatives."""
        known = self._recall(x)
        if known is not None:
            g, J = self.derivatives(x)
            return self.scale * known[0], g, known[1], J
        self.counters.nfev += 1
        self.counters.njev += 1
        self.ncev += 1
        self.njcev += 1
        f, g, c, J = self._fused("first_order", self._first_order, x)
        scale = self._scale(g.detach())
        return scale * f.detach(), scale.unsqueeze(-1) * g.detach(), c, J

    def _first_order(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f, ∇f, c, J) at x, unscaled (the computation of :meth:`evaluate`)."""
        if self._all_autodiff():
            return self._autodiff_first_order(x)
        if self.jac is not None:
            f, g = self.fun(x), self.jac(x)
        else:
            f, g = autodiff.gradient(self.fun, x)
        c, J = self._constraints_and_jacobian(x)
        return f, g, c, J

    def derivatives(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇f, J) at x where the values are already known (a trial point that passed a cheap test).

        Counted as one gradient and one Jacobian; on the autodiff path the reverse passes re-run
        f and c internally (the user's callables see those calls)."""
        self.counters.njev += 1
        self.njcev += 1
        g, J = self._fused("derivatives", self._derivatives, x)
        return self._scale(g).unsqueeze(-1) * g, J

    def _derivatives(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇f unscaled, J) at x (the computation of :meth:`derivatives`)."""
        if self._all_autodiff():
            _, g, _, J = self._autodiff_first_order(x)
            return g, J
        g = self.jac(x) if self.jac is not None else autodiff.gradient(self.fun, x)[1]
        g = g.detach()
        if not self.spec.blocks:
            return g, x.new_zeros(x.shape[0], 0, x.shape[-1])
        jacobians = [b.jac(x).reshape(x.shape[0], b.size, x.shape[-1]) if b.jac is not None
                     else autodiff.jacobian(b.fun, x, mode="reverse")[1] for b in self.spec.blocks]
        return g, torch.cat(jacobians, -2)

    def _all_autodiff(self) -> bool:
        """No user derivative of f or c, and no outer graph or torch.func transform to serve."""
        return self.jac is None and all(b.jac is None for b in self.spec.blocks) and \
            not torch.is_grad_enabled() and torch._C._functorch.peek_interpreter_stack() is None

    def _autodiff_first_order(self, x: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f, ∇f, c, J) from one recorded evaluation of f and c (instead of one graph for f and one
        per constraint block): ∇f by one reverse pass through f's graph, J by one batched reverse
        pass over the m constraint outputs. Batching f's row with them would pull m + 1 cotangents
        through f's graph: on the logistic regression of ``torchnewton bench constrained`` (n = 1000,
        m = 11) that batched pass took 20 ms against 1.5 ms for ∇f alone."""
        batch, n = x.shape
        m = self.m
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            f = self.fun(z)
            c = torch.cat([b.fun(z) for b in self.spec.blocks], -1) if self.spec.blocks else z.new_zeros(batch, 0)
            g = J = None
            if f.requires_grad:
                g = autodiff._pull(f, z, torch.ones_like(f))
            if m and c.requires_grad:
                (J,) = torch.autograd.grad(c, z, grad_outputs=autodiff.batched_basis(m, x),
                                           is_grads_batched=True, allow_unused=True)
        g = x.new_zeros(batch, n) if g is None else g
        J = x.new_zeros(batch, m, n) if J is None else J.transpose(0, 1)
        return f.detach(), g, c.detach(), J

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

    # ---- first and second derivatives in one pass -------------------------------------------
    def fuses_hessian(self) -> bool:
        """Whether :meth:`derivatives_and_hessian` is one autodiff pass (no user derivative anywhere)."""
        return self.hess is None and self.hessp is None and all(b.hess is None for b in self.spec.blocks) and \
            self._all_autodiff()

    def derivatives_and_hessian(self, x: torch.Tensor, lam: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(∇f, J, ∇²ₓL(x, λ)) at x where the values are known; counted as one gradient, one Jacobian
        and one Hessian.

        On the autodiff path one recording of L = s·f + λᵀc with λ a leaf too: the reverse pass
        gives ∇ₓL with its graph, and one batched reverse pass of ∇ₓL along the n basis vectors
        gives both ∂∇ₓL/∂x = ∇²ₓL and ∂∇ₓL/∂λ = Jᵀ; the scaled gradient s∇f = ∇ₓL − Jᵀλ (what
        :meth:`derivatives` returns) follows without the separate first-order recording and
        reverse pass that :meth:`derivatives` then :meth:`lagrangian_hessian` take. Its rounding
        error is about eps·‖Jᵀλ‖, far below any KKT tolerance unless λ is huge.
        """
        if not self.fuses_hessian() or self.scale is None:
            g, J = self.derivatives(x)
            return g, J, self.lagrangian_hessian(x, lam)
        self.counters.njev += 1
        self.counters.nhev += 1
        self.njcev += 1
        return self._fused("second_order", self._second_order, x, lam, self.scale)

    def _second_order(self, x: torch.Tensor, lam: torch.Tensor, scale: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(s∇f, J, ∇²ₓL) by one recording (the computation of :meth:`derivatives_and_hessian`)."""
        batch, n = x.shape
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            w = lam.detach().requires_grad_(True)
            c = self._constraint_values(z)
            lagrangian = scale * self.fun(z) + (w * c).sum(-1)
            grad = hess = jac_t = None
            if lagrangian.requires_grad:
                (grad,) = torch.autograd.grad(lagrangian.sum(), z, create_graph=True, allow_unused=True)
            if grad is not None and grad.requires_grad:
                hess, jac_t = torch.autograd.grad(grad, (z, w), grad_outputs=autodiff.batched_basis(n, x),
                                                  is_grads_batched=True, allow_unused=True)
        grad = x.new_zeros(batch, n) if grad is None else grad.detach()
        H = x.new_zeros(batch, n, n) if hess is None else hess.transpose(0, 1)
        J = x.new_zeros(batch, self.m, n) if jac_t is None else jac_t.permute(1, 2, 0)
        g = grad - torch.bmm(J.transpose(-1, -2), lam.unsqueeze(-1)).squeeze(-1)
        return g, J, 0.5 * (H + H.transpose(-1, -2))

    # ---- second derivatives ---------------------------------------------------------------
    def lagrangian_hessian(self, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """∇²ₓL(x, λ) (B, n, n), symmetrized."""
        self.counters.nhev += 1
        scale = self.scale if self.scale is not None else x.new_ones(x.shape[0])
        return self._fused("lagrangian_hessian", self._lagrangian_hessian, x, lam, scale)

    def _lagrangian_hessian(self, x: torch.Tensor, lam: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        user_blocks = [b.hess is not None for b in self.spec.blocks]
        if self.hess is None and self.hessp is None and not any(user_blocks):
            def lagrangian(z: torch.Tensor) -> torch.Tensor:
                return scale * self.fun(z) + (lam * self._constraint_values(z)).sum(-1)

            return autodiff.hessian(lagrangian, x)[2]
        H = scale.view(-1, 1, 1) * self._objective_hessian(x) + self._weighted_constraint_hessian(x, lam)
        return 0.5 * (H + H.transpose(-1, -2))

    def lagrangian_hessp(self, x: torch.Tensor, lam: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """V ↦ ∇²ₓL(x, λ)V on blocks V (B, n, q), ∇²ₓL never formed (the matrix-free KKT step).

        The autodiff pieces — s·f where the user gives neither ``hess`` nor ``hessp``, and λᵀc over
        the constraint blocks without a ``hess`` — are recorded once here as one function φ; each
        product is then one backward pass through the recorded ∇φ along V's column (reverse over
        reverse, :func:`.autodiff.hvp_linearized`: no new evaluation of f or c). The user's
        ``hessp`` of f is called once per column; a user ``hess`` of f, or a constraint's
        ``hess``(x, w) = Σ wᵢ∇²cᵢ, is formed once, on the first product, and multiplied. Counted:
        ``nhvp`` per column product; ``nhev`` once where a user Hessian is formed. The product is
        ∇²ₓL V to rounding (not the symmetrized matrix of :meth:`lagrangian_hessian`).

        Example:
            >>> from torchnewton.solvers.constrained.spec import build_spec
            >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
            >>> spec = build_spec({"type": "eq", "fun": lambda z: z[0] * z[1]}, None, x, (), batch=False)
            >>> p = ConstrainedProblem(lambda z: (z ** 2).sum(-1), spec)
            >>> with torch.no_grad():
            ...     p.lagrangian_hessp(x, torch.tensor([[3.0]], dtype=torch.float64))(torch.eye(2).double().unsqueeze(0))
            tensor([[[2., 3.],
                     [3., 2.]]], dtype=torch.float64)
        """
        scale = self.scale if self.scale is not None else x.new_ones(x.shape[0])
        objective_by_autodiff = self.hess is None and self.hessp is None
        autodiff_blocks, offset = [], 0
        dense_blocks = []
        for block in self.spec.blocks:
            w = lam[:, offset: offset + block.size]
            offset += block.size
            (dense_blocks if block.hess is not None else autodiff_blocks).append((block, w))

        def recorded(z: torch.Tensor) -> torch.Tensor:
            value = scale * self.fun(z) if objective_by_autodiff else z.new_zeros(z.shape[0])
            for block, w in autodiff_blocks:
                value = value + (w * block.fun(z)).sum(-1)
            return value

        autodiff_product = autodiff.hvp_linearized(recorded, x) if objective_by_autodiff or autodiff_blocks else None
        formed: list[torch.Tensor] = []  # the user Hessians, formed on the first product

        def dense_part() -> torch.Tensor | None:
            if not formed and (self.hess is not None or dense_blocks):
                self.counters.nhev += 1
                n = x.shape[-1]
                H = x.new_zeros(x.shape[0], n, n)
                if self.hess is not None:
                    H = H + scale.view(-1, 1, 1) * self.hess(x).reshape(H.shape)
                for block, w in dense_blocks:
                    H = H + block.hess(x, w).reshape(H.shape)
                formed.append(H)
            return formed[0] if formed else None

        def product(V: torch.Tensor) -> torch.Tensor:
            columns = []
            for v in V.unbind(-1):
                self.nhvp += 1
                out = autodiff_product(v) if autodiff_product is not None else torch.zeros_like(v)
                if self.hessp is not None and self.hess is None:
                    out = out + scale.unsqueeze(-1) * self.hessp(x, v)
                columns.append(out)
            out = torch.stack(columns, -1)
            H = dense_part()
            return out if H is None else out + H @ V

        return product

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
