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

The arithmetic between the KKT factorizations, the function calls and the host decisions lives
in :mod:`.ip_arithmetic` as pure functions of tensors, called through the problem's
:class:`~torchnewton.core.fusion.Fusion`: the same operations by default, fused kernels with
``options={"compile": True}``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.status import Status
from ...globalize.linesearch import armijo
from ...core.fusion import Fusion
from .ip_arithmetic import Geometry, direction, judge, measures, prepare, trial_merit, true_violation, update
from ...linear.batched import matvec, rmatvec
from .lean import constant, finite
from .kkt import KKTSolver
from .least_norm import pseudo_solve, transposed_pseudo_solve
from .problem import ConstrainedProblem
from .spec import ConstraintSpec
from .termination import KKTFields, KKTTermination

BARRIER_RULES = ("monotone", "adaptive")
_EAGER = Fusion(enabled=False)


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
        selector = spec.lower.new_zeros(m, p)
        selector[self.rows, torch.arange(p)] = 1.0
        target = torch.where(self.equality, spec.lower, torch.zeros_like(spec.lower))
        L = torch.cat([spec.x_lower, spec.lower[:, self.rows]], -1)
        U = torch.cat([spec.x_upper, spec.upper[:, self.rows]], -1)
        self.geometry = Geometry.of(L, U, selector, target, self.rows)
        self.L, self.U, self.has_L, self.has_U = L, U, self.geometry.has_L, self.geometry.has_U
        self.has_LU = self.geometry.has_LU
        self.mask_LU = self.has_LU.to(L.dtype)
        # x within 1e-6·max(1, |bound|) of a bound counts as at it (the infeasibility test); -inf/+inf never
        n = spec.x_lower.shape[-1]
        self.near_L = torch.where(self.has_L[:, :n], spec.x_lower + 1e-6 * torch.clamp(spec.x_lower.abs(), min=1.0),
                                  -torch.inf)
        self.near_U = torch.where(self.has_U[:, :n], spec.x_upper - 1e-6 * torch.clamp(spec.x_upper.abs(), min=1.0),
                                  torch.inf)
        # what :func:`.ip_arithmetic.measures` takes after the geometry
        self.limits = (spec.lower, spec.upper, self.near_L, self.near_U, self.mask_LU)

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
        x, s = y[:, :n], y[:, n:]
        if problem.fusion.compiled:  # the layout of every later state (see :func:`.ip_arithmetic.update`)
            x, s = x.contiguous(), s.contiguous()
        f, g, c, J = problem.evaluate(x)
        batch = x.shape[0]
        zl = self.has_L.to(x.dtype)
        zu = self.has_U.to(x.dtype)
        Jy = self.geometry.jacobian_y(J)
        grad_y = torch.cat([g, g.new_zeros(batch, self.rows.numel())], -1) - zl + zu
        lam = -transposed_pseudo_solve(Jy, grad_y) if problem.m else g.new_zeros(batch, 0)
        if problem.m:  # Ipopt discards a least-squares estimate this large
            lam = torch.where(lam.abs().amax(-1, keepdim=True) > 1e3, torch.zeros_like(lam), lam)
        zeros = x.new_zeros(batch)
        long = torch.zeros(batch, dtype=torch.long, device=x.device)
        state = self._fields(x, s, lam, zl, zu, f, g, c, J, torch.full_like(zeros, self.mu0),
                             torch.ones_like(zeros), zeros, torch.full_like(zeros, float("inf")), long, long, long,
                             torch.full_like(zeros, float("inf")), long)
        if problem.fuses_hessian():  # later Hessians come with the derivatives at each accepted point
            state.H = problem.lagrangian_hessian(x, lam)
        return state

    def _fields(self, x, s, lam, zl, zu, f, g, c, J, mu, penalty, delta, step_norm, inner, count, failure,
                best, stall, *, gaps=None, derivatives=(None, None, None), advance: bool = False,
                fusion: Fusion | None = None) -> InteriorPointState:
        """The state at (x, s, λ, z) with its KKT measures (:func:`.ip_arithmetic.measures`); ``gaps``:
        (y − L, U − y) where known; ``derivatives``: (∇f, J, moved) at the accepted point where
        evaluated; ``advance``: μ becomes the next iteration's barrier parameter."""
        lower, upper = self.geometry.gaps(torch.cat([x, s], -1)) if gaps is None else gaps
        fusion = fusion if fusion is not None else _EAGER
        g, J, optimality, violation, complementarity, scale, infeasible_count, best, stall, barrier = fusion(
            measures, *self.geometry, *self.limits, x, s, lam, zl, zu, f, g, c, J, *derivatives, mu, step_norm,
            count, best, stall, lower, upper, self.termination.tol, self.termination.infeasibility_tol, self.rule,
            advance, not fusion.compiled)
        return InteriorPointState(
            x=x, f=f, optimality=optimality, violation=violation, complementarity=complementarity,
            multiplier_scale=scale, infeasible_count=infeasible_count, failure=failure, best_error=best,
            stall_count=stall, s=s, lam=lam, z_lower=zl, z_upper=zu, g=g, c=c, J=J, barrier=barrier,
            penalty=penalty, delta=delta, step_norm=step_norm, inner_iterations=inner)

    def step(self, problem: ConstrainedProblem, state: InteriorPointState, running: torch.Tensor) -> InteriorPointState:
        fuse, geo = problem.fusion, self.geometry
        x, s, lam, zl, zu, mu = state.x, state.s, state.lam, state.z_lower, state.z_upper, state.barrier
        n = x.shape[-1]
        H = problem.lagrangian_hessian(x, lam) if state.H is None else state.H
        full = self.rows.numel() <= n + self.equality_rows.numel()
        y, lower, upper, sigma_L, sigma_U, sigma, Jy, h, mu_L, mu_U, grad_barrier, r_x, theta, *blocks = fuse(
            prepare, *geo, x, s, lam, zl, zu, mu, state.g, state.c, state.J, H, full, self.sharpen, self.accuracy)
        solve, dy, dlam = self._newton_step(H, sigma, state.J, Jy, r_x, h, state.delta, theta, blocks)
        tau, alpha_max, z, dz, alpha_z, h_norm, penalty, slope, phi0, active, packed0, threshold, y_full = fuse(
            direction, *geo, y, lower, upper, zl, zu, sigma_L, sigma_U, sigma, mu_L, mu_U, mu, grad_barrier, h, H,
            dy, dlam, lam, state.penalty, state.f, state.c, running, self.c1)

        def phi(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(merit, packed (f, c)) at y + αΔy: the accepted trial's values become the next iterate's."""
            trial = y + alpha.unsqueeze(-1) * dy
            f_t, c_t = problem.values(trial[:, :n])
            return fuse(trial_merit, *geo, f_t, c_t, trial, mu, penalty)[:2]

        f_full, c_full = problem.values(y_full[:, :n])
        phi_full, packed_full, h_full_norm, moved, alpha, packed, pending, corrigible, failure = fuse(
            judge, *geo, f_full, c_full, y_full, mu, penalty, threshold, active, alpha_max, packed0, h_norm, running,
            state.failure)
        shift = None  # the second-order correction's, where one is taken
        # second-order correction (Wächter & Biegler 2006 §2.4): y + α_max·Δy − J_y⁺h(y + α_max·Δy), only
        # where the rejected step raised ‖h‖ (the Maratos effect it is for; elsewhere it only costs a trial)
        # and kept only if it respects the fraction to the boundary
        if problem.m and bool(corrigible.any()):
            h_full = geo.h(packed_full[:, 1:], y_full[:, n:])
            correction = -pseudo_solve(Jy, torch.nan_to_num(h_full))
            y_soc = y_full + correction
            lower_soc, upper_soc = geo.gaps(y_soc)
            kept = (1 - tau).unsqueeze(-1)
            inside = (~self.has_L | (lower_soc >= kept * lower)).all(-1) & \
                (~self.has_U | (upper_soc >= kept * upper)).all(-1)
            f_s, c_s = problem.values(y_soc[:, :n])
            phi_soc = geo.barrier_value(f_s, y_soc, mu) + penalty * geo.h(c_s, y_soc[:, n:]).norm(dim=-1)
            ok = corrigible & inside & finite(phi_soc) & (phi_soc <= threshold)
            alpha = torch.where(ok, alpha_max, alpha)
            shift = torch.where(ok.unsqueeze(-1), correction, constant(0.0, correction))
            packed = torch.where(ok.unsqueeze(-1), torch.cat([f_s.unsqueeze(-1), c_s], -1), packed)
            moved, pending = moved | ok, pending & ~ok
        if bool(pending.any()):
            search = armijo(phi, phi0, slope, alpha0=0.5 * alpha_max, c1=self.c1, max_steps=self.max_backtracks,
                            active=pending, aux0=packed0)
            ok = pending & search.success
            alpha = torch.where(ok, search.alpha, alpha)
            packed = torch.where(ok.unsqueeze(-1), search.aux, packed)
            failure = torch.where(pending & ~search.success, constant(int(Status.LINESEARCH_FAILED), failure), failure)
            moved = moved | ok
        x_new, s_new, lam_new, zl_new, zu_new, gaps_new, f, c, step_norm, jammed = fuse(
            update, *geo, y, alpha, dy, shift, lam, dlam, moved, alpha_z, z, dz, mu, packed, running, fuse.compiled)
        derivatives, H_new = (None, None, None), state.H
        if bool(moved.any()):  # derivatives at the accepted point only; its values come from the search
            if H_new is None:
                g_new, J_new = problem.derivatives(x_new)
            else:  # where a member did not move, x_new = x and λ_new = λ: its H is unchanged
                g_new, J_new, H_new = problem.derivatives_and_hessian(x_new, lam_new)
            derivatives = (g_new, J_new, moved)
        if self.rows.numel() and bool(jammed.any()):
            s_new = torch.where(jammed.unsqueeze(-1), self._reset_slacks(s_new, c), s_new)
            gaps_new = geo.gaps(torch.cat([x_new, s_new], -1))
        # a direct solve has no inner iterations: the field stays the same tensor, which the loop need not mask
        inner = state.inner_iterations if self.kkt.kind == "direct" else state.inner_iterations + solve.iterations
        new = self._fields(x_new, s_new, lam_new, zl_new, zu_new, f, state.g, c, state.J, mu, penalty,
                           solve.delta, step_norm, inner, state.infeasible_count, failure, state.best_error,
                           state.stall_count, gaps=gaps_new, derivatives=derivatives, advance=True, fusion=fuse)
        new.H = H_new
        return new

    def _newton_step(self, H: torch.Tensor, sigma: torch.Tensor, J: torch.Tensor, Jy: torch.Tensor, r: torch.Tensor,
                     h: torch.Tensor, delta_last: torch.Tensor, theta: torch.Tensor, blocks: list):
        """(KKT solve, Δy, Δλ) of [[H + Σ, J_yᵀ], [J_y, 0]] [Δy; Δλ] = −[r; h] (``Jy``: J_y of J;
        ``blocks``: (W = H + Σ, −r, −h) of the full system from :func:`.ip_arithmetic.prepare`, or
        Nones), with the slacks eliminated.

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
            W, minus_r, minus_h = blocks
            solve = self.kkt.solve(W, Jy, minus_r, minus_h, delta_last, theta)
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
        rows = self.geometry.inequality(c)
        lower, upper = self.has_L[:, n:], self.has_U[:, n:]
        s = torch.where(lower & ~upper & (rows > s), rows, s)
        return torch.where(upper & ~lower & (rows < s), rows, s)

    def terminate(self, problem: ConstrainedProblem, state: InteriorPointState):
        return self.termination(problem, state)

    def multipliers(self, state: InteriorPointState) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ (B, m), z (B, n)) in the convention ∇f + Jᵀλ + z = 0."""
        n = state.x.shape[-1]
        return state.lam, state.z_upper[:, :n] - state.z_lower[:, :n]

    def violation(self, problem: ConstrainedProblem, state: InteriorPointState) -> torch.Tensor:
        v = true_violation(state.c, self.spec.lower, self.spec.upper)
        return v.abs().amax(-1) if v.shape[-1] else torch.zeros_like(state.f)

    def jacobian(self, state: InteriorPointState) -> torch.Tensor:
        return state.J

    def record(self, problem: ConstrainedProblem, state: InteriorPointState) -> dict:
        return {"fun": state.f.clone(), "optimality": state.optimality.clone(), "violation": state.violation.clone(),
                "complementarity": state.complementarity.clone(), "barrier": state.barrier.clone(),
                "step_norm": state.step_norm.clone()}
