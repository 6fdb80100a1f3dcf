"""Primal-dual interior point for equalities, inequalities and bounds (Ipopt's formulation).

Every inequality row c_l ≤ cᵢ(x) ≤ c_u gets a slack: cᵢ(x) − sᵢ = 0 with c_l ≤ sᵢ ≤ c_u, so with
y = (x, s) the problem is  min f(x) s.t. h(y) = 0, L ≤ y ≤ U.  For a barrier parameter μ > 0,
Newton's method on the perturbed KKT conditions

    ∇f + J_hᵀλ − z_L + z_U = 0,   h(y) = 0,   (y − L)z_L = μ,   (U − y)z_U = μ

reduces, after eliminating Δz, to the same KKT system as SQP with W + Σ,
Σ = z_L/(y − L) + z_U/(U − y) (:mod:`.kkt`, with inertia correction). The step then takes
(Wächter & Biegler 2006, "On the implementation of an interior-point filter line-search
algorithm"; Nocedal & Wright ch. 19):

* fraction to the boundary: y + αΔy ≥ L + (1 − τ)(y − L) (and for U, z), τ = max(0.99, 1 − μ);
* where the longest step is rejected and raised ‖h‖, one second-order correction
  −J_y⁺h(y + α_maxΔy) of it (against the Maratos effect of curved constraints: HS59 took steps
  of α ≈ 1e-3 without it; where ‖h‖ fell the correction only costs a trial, Ipopt's rule);
* a backtracking line search on the ℓ₂ merit φ_μ(y) + π‖h(y)‖, π raised so that the step is a
  descent direction (Nocedal & Wright (18.36)) and above 1.1‖λ⁺‖₂ (exactness of the penalty);
* z kept within [μ/(κ(y − L)), κμ/(y − L)], κ = 1e10 (Ipopt's safeguard);
* μ ← max(tol/10, min(0.2μ, μ^1.5)) once the barrier problem is solved to 10μ (``"monotone"``,
  Fiacco–McCormick), or μ = σ·(mean complementarity) with the LOQO centering
  σ = 0.1·min(0.05(1 − ξ)/ξ, 2)³, ξ = min/mean complementarity (``"adaptive"``, Vanderbei &
  Shanno 1999).

A trial point costs one batched call of f and of c; ∇f and J are evaluated once, at the accepted
point, whose values come from the search. Without user derivatives the next step's ∇²ₓL(x, λ⁺)
comes with them from the same autodiff pass (:meth:`ConstrainedProblem.derivatives_and_hessian`),
so the Hessian at the final iterate is evaluated too (``nhev`` = accepted steps + 1). After a step
shorter than 1e-2 a one-sided slack is reset to c(x) where that lowers both barrier and violation
(:meth:`InteriorPoint._reset_slacks`).

The iterate starts pushed inside its bounds by ``bound_push``·max(1, |bound|) (Ipopt's κ₁).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.status import Status
from ...globalize.linesearch import armijo
from .lean import constant, finite, matvec, rmatvec
from .kkt import KKTSolver
from .least_norm import pseudo_solve, transposed_pseudo_solve
from .problem import ConstrainedProblem
from .spec import ConstraintSpec
from .termination import KKTFields, KKTTermination, multiplier_scale, track_progress

BARRIER_RULES = ("monotone", "adaptive")
_KAPPA_SIGMA = 1e10


@dataclass
class InteriorPointState(KKTFields):
    s: torch.Tensor  # slacks of the inequality rows (B, p)
    lam: torch.Tensor  # (B, m)
    z_lower: torch.Tensor  # (B, n + p), zero where the bound is infinite
    z_upper: torch.Tensor
    g: torch.Tensor
    c: torch.Tensor  # c(x) (B, m)
    J: torch.Tensor
    barrier: torch.Tensor  # μ (B,)
    penalty: torch.Tensor  # π (B,)
    delta: torch.Tensor
    step_norm: torch.Tensor
    inner_iterations: torch.Tensor
    H: torch.Tensor | None = None  # ∇²ₓL(x, λ) where it came with ∇f and J in one autodiff pass


class InteriorPoint:
    def __init__(self, termination: KKTTermination, kkt: KKTSolver, spec: ConstraintSpec, *,
                 barrier: str = "monotone", barrier_init: float = 0.1, bound_push: float = 1e-2,
                 accuracy: float = 0.1, sharpen: float = 1.0, c1: float = 1e-4, max_backtracks: int = 40):
        self.termination, self.kkt, self.spec = termination, kkt, spec
        self.rule, self.mu0, self.push = barrier, barrier_init, bound_push
        self.accuracy, self.sharpen, self.c1, self.max_backtracks = accuracy, sharpen, c1, max_backtracks
        equality = spec.lower == spec.upper
        mixed = equality.any(0) & ~equality.all(0)
        if bool(mixed.any()):
            raise ValueError(f"constraint rows {mixed.nonzero().flatten().tolist()} are equalities for some "
                             "members of the batch and inequalities for others; keep each row one kind")
        self.equality = equality.all(0)  # (m,)
        self.rows = (~self.equality).nonzero().flatten()  # inequality rows, one slack each
        self.equality_rows = self.equality.nonzero().flatten()
        m, p = spec.m, self.rows.numel()
        self.selector = spec.lower.new_zeros(m, p)
        self.selector[self.rows, torch.arange(p)] = 1.0
        self.minus_selector = -self.selector
        self.minus_selector_t = self.minus_selector.T.contiguous()
        # the inequality rows as a slice where they are consecutive (one view, not an index gather)
        first = int(self.rows[0]) if p else 0
        consecutive = torch.equal(self.rows, torch.arange(first, first + p, device=self.rows.device))
        self.row_slice = slice(first, first + p) if consecutive else None
        self.target = torch.where(self.equality, spec.lower, torch.zeros_like(spec.lower))
        self.target_zero = not bool(self.target.any())  # c − 0 is c: no subtraction then
        self.L = torch.cat([spec.x_lower, spec.lower[:, self.rows]], -1)
        self.U = torch.cat([spec.x_upper, spec.upper[:, self.rows]], -1)
        self.has_L, self.has_U = torch.isfinite(self.L), torch.isfinite(self.U)
        self.has_LU = torch.cat([self.has_L, self.has_U], -1)
        self.all_L, self.all_U = bool(self.has_L.all()), bool(self.has_U.all())
        self.mask_LU = self.has_LU.to(self.L.dtype)
        self.one = torch.ones((), dtype=self.L.dtype, device=self.L.device)  # a tensor: torch.where wraps a float
        self.zero = torch.zeros((), dtype=self.L.dtype, device=self.L.device)
        self.infinity = torch.full((), torch.inf, dtype=self.L.dtype, device=self.L.device)
        # x within 1e-6·max(1, |bound|) of a bound counts as at it (the infeasibility test); -inf/+inf never
        n = spec.x_lower.shape[-1]
        self.near_L = torch.where(self.has_L[:, :n], spec.x_lower + 1e-6 * torch.clamp(spec.x_lower.abs(), min=1.0),
                                  -torch.inf)
        self.near_U = torch.where(self.has_U[:, :n], spec.x_upper - 1e-6 * torch.clamp(spec.x_upper.abs(), min=1.0),
                                  torch.inf)

    # ---- pieces ---------------------------------------------------------------------------
    def _h(self, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """c − target − (s placed in the inequality rows): one ``addmm`` adding s·(−selectorᵀ), whose
        entries are exactly −sᵢ or zero, so the value is that of the two subtractions."""
        return torch.addmm(c if self.target_zero else c - self.target, s, self.minus_selector_t)

    def _on_L(self, t: torch.Tensor) -> torch.Tensor:
        """t where y has a lower bound, zero elsewhere (t itself where every component has one)."""
        return t if self.all_L else torch.where(self.has_L, t, self.zero)

    def _on_U(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.all_U else torch.where(self.has_U, t, self.zero)

    def _inequality(self, t: torch.Tensor) -> torch.Tensor:
        """The columns of the inequality rows of t (B, m)."""
        return t[:, self.row_slice] if self.row_slice is not None else t.index_select(-1, self.rows)

    def _jacobian_y(self, J: torch.Tensor) -> torch.Tensor:
        return torch.cat([J, self.minus_selector.expand(J.shape[0], -1, -1)], -1)

    def _gaps(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y − L, U − y), 1 where the bound is missing (no mask where every bound of that side is finite)."""
        lower = y - self.L if self.all_L else torch.where(self.has_L, y - self.L, self.one)
        upper = self.U - y if self.all_U else torch.where(self.has_U, self.U - y, self.one)
        return lower, upper

    def _barrier_value(self, f: torch.Tensor, y: torch.Tensor, mu: torch.Tensor,
                       gaps: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """f − μ Σ log(gaps): a missing bound's gap is 1 (no term); outside the bounds a gap ≤ 0
        makes the value NaN or +inf, which every test here reads as a rejected point (μ > 0).
        ``gaps``: :meth:`_gaps` of y where known (the same values)."""
        both = torch.where(self.has_LU, torch.cat([y - self.L, self.U - y], -1), self.one) if gaps is None else \
            torch.cat(gaps, -1)
        return f - mu * torch.log(both).sum(-1)

    def _push(self, y: torch.Tensor) -> torch.Tensor:
        """Move y strictly inside [L, U] (Ipopt's bound_push and bound_frac rules)."""
        width = torch.where(self.has_L & self.has_U, self.U - self.L, torch.full_like(y, float("inf")))
        push_L = torch.minimum(self.push * torch.clamp(self.L.abs(), min=1.0), self.push * width)
        push_U = torch.minimum(self.push * torch.clamp(self.U.abs(), min=1.0), self.push * width)
        y = torch.where(self.has_L, torch.maximum(y, self.L + push_L), y)
        return torch.where(self.has_U, torch.minimum(y, self.U - push_U), y)

    # ---- protocol -------------------------------------------------------------------------
    def init(self, problem: ConstrainedProblem, x0: torch.Tensor) -> InteriorPointState:
        n = x0.shape[-1]
        _, c0 = problem.values(x0)
        y = self._push(torch.cat([x0, c0[:, self.rows]], -1))
        x = y[:, :n]
        f, g, c, J = problem.evaluate(x)
        batch = x.shape[0]
        zl = self.has_L.to(x.dtype)
        zu = self.has_U.to(x.dtype)
        Jy = self._jacobian_y(J)
        grad_y = torch.cat([g, g.new_zeros(batch, self.rows.numel())], -1) - zl + zu
        lam = -transposed_pseudo_solve(Jy, grad_y) if problem.m else g.new_zeros(batch, 0)
        if problem.m:  # Ipopt discards a least-squares estimate this large
            lam = torch.where(lam.abs().amax(-1, keepdim=True) > 1e3, torch.zeros_like(lam), lam)
        zeros = x.new_zeros(batch)
        long = torch.zeros(batch, dtype=torch.long, device=x.device)
        state = self._fields(x, y[:, n:], lam, zl, zu, f, g, c, J, torch.full_like(zeros, self.mu0),
                             torch.ones_like(zeros), zeros, torch.full_like(zeros, float("inf")), long, long, long,
                             torch.full_like(zeros, float("inf")), long)
        if problem.fuses_hessian():  # later Hessians come with the derivatives at each accepted point
            state.H = problem.lagrangian_hessian(x, lam)
        return state

    def _fields(self, x, s, lam, zl, zu, f, g, c, J, mu, penalty, delta, step_norm, inner, count, failure,
                best, stall, *, gaps=None, shared: dict | None = None):
        """The state at (x, s, λ, z) with its KKT measures; ``gaps``: (y − L, U − y) where known;
        ``shared``: a dict to receive the complementarity products and max(optimality/s_d, violation),
        which :meth:`_next_barrier` reuses."""
        # ∇f + J_yᵀλ − z_L + z_U with J_y = [J, −selector]: the slack part of J_yᵀλ is −λ of the inequality rows
        dual = torch.cat([g + rmatvec(J, lam), -self._inequality(lam)], -1) - zl + zu
        h = self._h(c, s)
        lower, upper = self._gaps(torch.cat([x, s], -1)) if gaps is None else gaps
        # z is kept zero where a bound is missing (and that gap is 1), so no mask is needed
        products = torch.cat([lower * zl, upper * zu], -1)
        complementarity = products.abs().amax(-1)
        violation = h.abs().amax(-1) if h.shape[-1] else torch.zeros_like(f)
        stationary = self._stationary(x, c, J)
        optimality, scale = dual.abs().amax(-1), multiplier_scale(lam, zl, zu)
        primal_dual = torch.maximum(optimality / scale, violation)
        error = torch.maximum(primal_dual, complementarity)
        if shared is not None:
            shared.update(products=products, primal_dual=primal_dual)
        best, stall = track_progress(best, stall, error, x, step_norm)
        return InteriorPointState(
            x=x, f=f, optimality=optimality, violation=violation, complementarity=complementarity,
            multiplier_scale=scale, infeasible_count=torch.where(stationary, count + 1, torch.zeros_like(count)),
            failure=failure, best_error=best, stall_count=stall,
            s=s, lam=lam, z_lower=zl, z_upper=zu, g=g, c=c, J=J, barrier=mu, penalty=penalty, delta=delta,
            step_norm=step_norm, inner_iterations=inner)

    def _true_violation(self, c: torch.Tensor) -> torch.Tensor:
        return c - torch.minimum(torch.maximum(c, self.spec.lower), self.spec.upper)

    def _stationary(self, x: torch.Tensor, c: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
        """Members at a stationary point of the violation v: ‖v‖∞ > tol and
        ‖P(Jᵀv)‖∞ ≤ infeasibility_tol·‖v‖∞, P dropping components that push x out through an active bound."""
        if c.shape[-1] == 0:
            return torch.zeros_like(x[:, 0], dtype=torch.bool)
        v = self._true_violation(c)
        size = v.abs().amax(-1)
        infeasible = size > self.termination.tol
        if not bool(infeasible.any()):  # every member within tol of feasible: no test to run (one host read)
            return infeasible
        grad = rmatvec(J, v)
        grad = torch.where(((x <= self.near_L) & (grad > 0)) | ((x >= self.near_U) & (grad < 0)), self.zero, grad)
        measure = grad.abs().amax(-1) / size.clamp(min=torch.finfo(size.dtype).tiny)
        return infeasible & (measure <= self.termination.infeasibility_tol)

    def step(self, problem: ConstrainedProblem, state: InteriorPointState, running: torch.Tensor) -> InteriorPointState:
        x, s, lam, zl, zu, mu = state.x, state.s, state.lam, state.z_lower, state.z_upper, state.barrier
        batch, n = x.shape
        p = s.shape[-1]
        y = torch.cat([x, s], -1)
        lower, upper = self._gaps(y)
        H = problem.lagrangian_hessian(x, lam) if state.H is None else state.H
        sigma_L, sigma_U = zl / lower, zu / upper  # z is zero where a bound is missing
        sigma = sigma_L + sigma_U
        Jy = self._jacobian_y(state.J)
        h = self._h(state.c, s)
        mu_col = mu.unsqueeze(-1)
        grad_y = torch.cat([state.g, state.g.new_zeros(batch, p)], -1)
        # μ/(y − L) and μ/(U − y), zero where the bound is missing (formed once, used twice)
        mu_L, mu_U = self._on_L(mu_col / lower), self._on_U(mu_col / upper)
        grad_barrier = grad_y - mu_L + mu_U
        r_x = grad_barrier + torch.cat([rmatvec(state.J, lam), -self._inequality(lam)], -1)  # + J_yᵀλ
        kkt_norm = torch.cat([r_x, h], -1).norm(dim=-1)
        theta = torch.clamp(kkt_norm ** self.sharpen, max=self.accuracy) if self.sharpen > 0 else \
            torch.full_like(kkt_norm, self.accuracy)
        solve, dy, dlam = self._newton_step(H, sigma, state.J, Jy, r_x, h, state.delta, theta)
        dzl = self._on_L(mu_L - zl - sigma_L * dy)
        dzu = self._on_U(mu_U - zu + sigma_U * dy)
        tau = torch.clamp(1 - mu, min=0.99)
        # one call for both sides (a missing bound has an infinite gap, no limit)
        alpha_max = self._fraction_to_boundary(torch.where(self.has_LU, torch.cat([lower, upper], -1), self.infinity),
                                               torch.cat([dy, -dy], -1), tau)
        z, dz = torch.cat([zl, zu], -1), torch.cat([dzl, dzu], -1)
        # dz is zero where a bound is missing, so that z sets no limit
        alpha_z = self._fraction_to_boundary(z, dz, tau)
        # ℓ₂ merit φ_μ + π‖h‖ and its penalty (Nocedal & Wright (18.36), ρ = 0.1)
        h_norm = h.norm(dim=-1)
        linear = (grad_barrier * dy).sum(-1)
        dx = dy[:, :n]
        curvature = torch.clamp((dx * matvec(H, dx)).sum(-1) + (sigma * dy * dy).sum(-1), min=0.0)
        needed = (linear + 0.5 * curvature) / (0.9 * h_norm).clamp(min=torch.finfo(x.dtype).tiny)
        # exactness: a minimizer of φ_μ + π‖h‖ is feasible only if π > ‖λ‖₂ (the dual norm); below it
        # the line search trades violation for objective step after step (HS59)
        needed = torch.maximum(needed, 1.1 * (lam + dlam).norm(dim=-1))
        penalty = torch.where((h_norm > 0) & (needed > state.penalty), torch.maximum(needed + 1.0, 2 * state.penalty),
                              state.penalty)
        penalty_h = penalty * h_norm
        slope = linear - penalty_h
        phi0 = self._barrier_value(state.f, y, mu, (lower, upper)) + penalty_h
        phi0 = phi0 + 10 * torch.finfo(x.dtype).eps * phi0.abs().clamp(min=1.0)
        active = running & (slope < 0) & finite(slope)

        def evaluate(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            """(merit, packed (f, c), the trial point, ‖h‖ there): the accepted trial's values become
            the next iterate's."""
            trial = y + alpha.unsqueeze(-1) * dy
            f_t, c_t = problem.values(trial[:, :n])
            h_t = self._h(c_t, trial[:, n:]).norm(dim=-1)
            value = self._barrier_value(f_t, trial, mu) + penalty * h_t
            return value, torch.cat([f_t.unsqueeze(-1), c_t], -1), trial, h_t

        def phi(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return evaluate(alpha)[:2]

        packed0 = torch.cat([state.f.unsqueeze(-1), state.c], -1)
        threshold = phi0 + self.c1 * alpha_max * slope
        phi_full, packed_full, y_full, h_full_norm = evaluate(alpha_max)
        moved = active & finite(phi_full) & (phi_full <= threshold)
        alpha = torch.where(moved, alpha_max, self.zero)
        packed = torch.where(moved.unsqueeze(-1), packed_full, packed0)
        shift = None  # the second-order correction's, where one is taken
        pending = active & ~moved
        # second-order correction (Wächter & Biegler 2006 §2.4): y + α_max·Δy − J_y⁺h(y + α_max·Δy), only
        # where the rejected step raised ‖h‖ (the Maratos effect it is for; elsewhere it only costs a trial)
        # and kept only if it respects the fraction to the boundary
        corrigible = pending & ~(h_full_norm < h_norm)
        if problem.m and bool(corrigible.any()):
            h_full = self._h(packed_full[:, 1:], y_full[:, n:])
            correction = -pseudo_solve(Jy, torch.nan_to_num(h_full))
            y_soc = y_full + correction
            lower_soc, upper_soc = self._gaps(y_soc)
            kept = (1 - tau).unsqueeze(-1)
            inside = (~self.has_L | (lower_soc >= kept * lower)).all(-1) & \
                (~self.has_U | (upper_soc >= kept * upper)).all(-1)
            f_s, c_s = problem.values(y_soc[:, :n])
            phi_soc = self._barrier_value(f_s, y_soc, mu) + penalty * self._h(c_s, y_soc[:, n:]).norm(dim=-1)
            ok = corrigible & inside & finite(phi_soc) & (phi_soc <= threshold)
            alpha = torch.where(ok, alpha_max, alpha)
            shift = torch.where(ok.unsqueeze(-1), correction, self.zero)
            packed = torch.where(ok.unsqueeze(-1), torch.cat([f_s.unsqueeze(-1), c_s], -1), packed)
            moved, pending = moved | ok, pending & ~ok
        failure = torch.where(running & ~active, constant(int(Status.STALLED), state.failure), state.failure)
        if bool(pending.any()):
            search = armijo(phi, phi0, slope, alpha0=0.5 * alpha_max, c1=self.c1, max_steps=self.max_backtracks,
                            active=pending, aux0=packed0)
            ok = pending & search.success
            alpha = torch.where(ok, search.alpha, alpha)
            packed = torch.where(ok.unsqueeze(-1), search.aux, packed)
            failure = torch.where(pending & ~search.success, constant(int(Status.LINESEARCH_FAILED), failure), failure)
            moved = moved | ok
        alpha = alpha.unsqueeze(-1)
        y_new = y + alpha * dy if shift is None else y + alpha * dy + shift
        lam_new = lam + alpha * dlam
        az = torch.where(moved, alpha_z, self.zero).unsqueeze(-1)
        gaps_new = self._gaps(y_new)
        both = torch.cat(gaps_new, -1)  # the lower and upper sides in one tensor: one op each for both
        z_new = torch.where(self.has_LU, torch.clamp(torch.minimum(z + az * dz, _KAPPA_SIGMA * mu_col / both),
                                                     min=0.0).maximum(mu_col / (_KAPPA_SIGMA * both)), self.zero)
        zl_new, zu_new = z_new[:, :n + p], z_new[:, n + p:]
        x_new = y_new[:, :n]
        f, c = packed[:, 0], packed[:, 1:]
        g, J, H_new = state.g, state.J, state.H
        if bool(moved.any()):  # derivatives at the accepted point only; its values come from the search
            if H_new is None:
                g_new, J_new = problem.derivatives(x_new)
            else:  # where a member did not move, x_new = x and λ_new = λ: its H is unchanged
                g_new, J_new, H_new = problem.derivatives_and_hessian(x_new, lam_new)
            g = torch.where(moved.unsqueeze(-1), g_new, g)
            J = torch.where(moved.view(-1, 1, 1), J_new, J)
        # only members still running count: the loop discards the others' new state
        jammed = running & (alpha.squeeze(-1) < 1e-2)
        if p and bool(jammed.any()):
            y_new = torch.cat([x_new, torch.where(jammed.unsqueeze(-1), self._reset_slacks(y_new[:, n:], c),
                                                  y_new[:, n:])], -1)
            gaps_new = self._gaps(y_new)
        # a direct solve has no inner iterations: the field stays the same tensor, which the loop need not mask
        inner = state.inner_iterations if self.kkt.kind == "direct" else state.inner_iterations + solve.iterations
        shared: dict = {}
        new = self._fields(x_new, y_new[:, n:], lam_new, zl_new, zu_new, f, g, c, J, mu, penalty, solve.delta,
                           alpha.squeeze(-1) * dy.norm(dim=-1), inner,
                           state.infeasible_count, failure, state.best_error, state.stall_count, gaps=gaps_new,
                           shared=shared)
        new.barrier = self._next_barrier(new, gaps_new, shared)
        new.H = H_new
        return new

    def _newton_step(self, H: torch.Tensor, sigma: torch.Tensor, J: torch.Tensor, Jy: torch.Tensor, r: torch.Tensor,
                     h: torch.Tensor, delta_last: torch.Tensor, theta: torch.Tensor):
        """(KKT solve, Δy, Δλ) of [[H + Σ, J_yᵀ], [J_y, 0]] [Δy; Δλ] = −[r; h] (``Jy``: :meth:`_jacobian_y`
        of J), with the slacks eliminated.

        With Σ_s ≻ 0 the slack block gives Δs = J_IΔx + h_I and Δλ_I = Σ_sΔs + r_s, leaving the
        system in (Δx, Δλ_E) of size n + m_E with W = H + Σ_x + J_IᵀΣ_sJ_I (its inertia (n, m_E, 0)
        iff the full one is (n + p, m_E + p, 0)): with many inequalities (SIPOW1: m = 2000, n = 2)
        the dense factorization is of size n + m_E instead of n + 2m. Used where the slacks
        outnumber n + m_E; otherwise the full system is solved."""
        n = H.shape[-1]
        eq, rows = self.equality_rows, self.rows
        if rows.numel() <= n + eq.numel():
            # few slacks: the full system, whose pseudo-inverse fallback (kkt.py) on a nearly singular
            # K is what carries a locally infeasible iterate to the least-violation point
            W = torch.diag_embed(sigma)
            W[:, :n, :n] += H
            solve = self.kkt.solve(W, Jy, -r, -h, delta_last, theta)
            return solve, solve.dx, solve.dlam
        J_E, J_I = J[:, eq], J[:, rows]
        sigma_x, sigma_s = sigma[:, :n], sigma[:, n:]
        r_x, r_s = r[:, :n], r[:, n:]
        h_E, h_I = h[:, eq], h[:, rows]
        W = H + torch.diag_embed(sigma_x) + J_I.transpose(-1, -2) @ (sigma_s.unsqueeze(-1) * J_I)
        solve = self.kkt.solve(W, J_E, -r_x - rmatvec(J_I, sigma_s * h_I + r_s), -h_E, delta_last, theta)
        ds = matvec(J_I, solve.dx) + h_I
        dlam = h.new_zeros(h.shape)
        dlam[:, eq] = solve.dlam
        dlam[:, rows] = sigma_s * ds + r_s
        return solve, torch.cat([solve.dx, ds], -1), dlam

    def _reset_slacks(self, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Move a one-sided slack to c(x) where that lowers both the barrier and ‖h‖ (after a short step).

        A slack sᵢ ≥ L with cᵢ(x) > sᵢ gains barrier and loses violation by sᵢ ← cᵢ(x) (likewise
        below an upper limit); without this, the fraction-to-the-boundary rule can pin a slack
        that the linearization drives toward its bound, and the steps shrink to nothing (HS64). Only after a
        step shorter than 1e-2: at full steps h = 0 exactly would make the nonsmooth ‖h‖ term of the merit
        reject every later step (a Maratos effect).
        """
        n = self.spec.x_lower.shape[-1]
        rows = self._inequality(c)
        lower, upper = self.has_L[:, n:], self.has_U[:, n:]
        s = torch.where(lower & ~upper & (rows > s), rows, s)
        return torch.where(upper & ~lower & (rows < s), rows, s)

    @staticmethod
    def _fraction_to_boundary(gap: torch.Tensor, direction: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Largest α ≤ 1 with gap + α·direction ≥ (1 − τ)·gap for every component."""
        if not gap.shape[-1]:
            return gap.new_ones(gap.shape[0])
        # τ·min over the components that move toward their boundary of gap/|direction|
        limits = torch.where(direction < 0, gap / direction.neg(), constant(torch.inf, gap))
        return torch.clamp(tau * limits.amin(-1), max=1.0)

    def _next_barrier(self, state: InteriorPointState, gaps: tuple[torch.Tensor, torch.Tensor],
                      shared: dict) -> torch.Tensor:
        """μ for the next iteration at ``state``, whose (y − L, U − y) are ``gaps``; ``shared``: what
        :meth:`_fields` computed there already (the products (y − L)z_L, (U − y)z_U and
        max(optimality/s_d, violation))."""
        mu = state.barrier
        floor = self.termination.tol / 10
        lower, upper = gaps
        if self.rule == "monotone":
            # z is zero and the gap one where a bound is missing: the mask zeroes those deviations
            products, primal_dual = shared["products"], shared["primal_dual"]
            deviation = torch.nan_to_num(((products - mu.unsqueeze(-1)) * self.mask_LU).abs()).amax(-1)
            error = torch.maximum(primal_dual, deviation)
            solved = error <= 10 * mu
            return torch.where(solved, torch.clamp(torch.minimum(0.2 * mu, mu ** 1.5), min=floor), mu)
        products = torch.cat([torch.where(self.has_L, lower * state.z_lower, float("nan")),
                              torch.where(self.has_U, upper * state.z_upper, float("nan"))], -1)
        count = (~torch.isnan(products)).sum(-1)
        mean = torch.nan_to_num(products).sum(-1) / count.clamp(min=1)
        smallest = torch.nan_to_num(products, nan=float("inf")).amin(-1)
        xi = (smallest / mean.clamp(min=torch.finfo(mu.dtype).tiny)).clamp(max=1.0)
        centering = 0.1 * torch.clamp(0.05 * (1 - xi) / xi.clamp(min=1e-12), max=2.0) ** 3
        new = torch.clamp(centering * mean, min=floor)
        return torch.where(count > 0, new, torch.full_like(mu, floor))

    def terminate(self, problem: ConstrainedProblem, state: InteriorPointState):
        return self.termination(problem, state)

    def multipliers(self, state: InteriorPointState) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ (B, m), z (B, n)) in the convention ∇f + Jᵀλ + z = 0."""
        n = state.x.shape[-1]
        return state.lam, state.z_upper[:, :n] - state.z_lower[:, :n]

    def violation(self, problem: ConstrainedProblem, state: InteriorPointState) -> torch.Tensor:
        v = self._true_violation(state.c)
        return v.abs().amax(-1) if v.shape[-1] else torch.zeros_like(state.f)

    def jacobian(self, state: InteriorPointState) -> torch.Tensor:
        return state.J

    def record(self, problem: ConstrainedProblem, state: InteriorPointState) -> dict:
        return {"fun": state.f.clone(), "optimality": state.optimality.clone(), "violation": state.violation.clone(),
                "complementarity": state.complementarity.clone(), "barrier": state.barrier.clone(),
                "step_norm": state.step_norm.clone()}
