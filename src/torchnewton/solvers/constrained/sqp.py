"""SQP for equality constraints: Lagrange–Newton steps globalized on the exact augmented Lagrangian.

Each iteration at (x, λ), with c the constraint residual c(x) − c_target, J = ∂c/∂x, H = ∇²ₓL:

1. solve the KKT system [[H + δI, Jᵀ], [J, 0]] [Δx; Δλ] = −[∇ₓL; c] (:mod:`.kkt`), δ ≥ 0 the
   inertia correction that makes H + δI positive definite on the null space of J; the iterative
   solvers run to the adaptive accuracy ‖r‖ ≤ θ_k‖(∇ₓL, c)‖ with θ_k = min(θ₀, ‖(∇ₓL, c)‖^β):
   β = 0 keeps θ fixed (linear local convergence), β > 0 sharpens it as the iterates converge
   (superlinear, order 1 + β) — the accuracy rule of Hong, Na, Mahoney & Kolar (ICML 2023);
2. lower ν and raise μ of the merit L_μ,ν (:mod:`.merit`, both per member) until (Δx, Δλ) is a
   sufficient-descent direction; if no penalty can (an inexact step), tighten θ tenfold and solve
   again; if still not, fall back to −∇L_μ,ν;
3. line search on L_μ,ν over (x + αΔx, λ + αΔλ): α = 1, else — where the full step raised ‖c‖,
   the Maratos effect (Nocedal & Wright §15.6; Ipopt's rule, Wächter & Biegler 2006 §2.4) — the
   second-order correction x + Δx − J⁺c(x + Δx), else Armijo backtracking from α = ½.

Evaluations: a trial point costs one batched call of f and of c; ∇f and J follow only where the
lower bound f + λᵀc + (μ/2)‖c‖² ≤ L_μ,ν does not already reject it, and the accepted trial's
(f, ∇f, c, J) are the next iterate's, and x0's f and c are those of the entry point's input checks
(:meth:`.ConstrainedProblem.remember`) — nothing is evaluated twice at one point. So an iteration
whose full step is accepted costs f, ∇f, c, J once and one Lagrangian Hessian. Every member has its
own μ, ν, δ, θ and step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.status import Status
from ...globalize.linesearch import armijo
from ...linear.batched import matvec, rmatvec
from .kkt import KKTSolver
from .merit import augmented_lagrangian, merit_gradient, slope_parts, update_penalty
from .problem import ConstrainedProblem
from .termination import KKTFields, KKTTermination, infeasibility_measure, multiplier_scale, track_progress


@dataclass
class SQPState(KKTFields):
    lam: torch.Tensor  # (B, m)
    g: torch.Tensor  # ∇f (B, n)
    c: torch.Tensor  # c(x) − target (B, m)
    J: torch.Tensor  # (B, m, n)
    grad_lagrangian: torch.Tensor  # ∇f + Jᵀλ (B, n)
    mu: torch.Tensor  # merit penalty μ on ‖c‖² (B,)
    nu: torch.Tensor  # merit weight ν on ‖∇ₓL‖² (B,)
    delta: torch.Tensor  # last inertia correction (B,)
    step_norm: torch.Tensor
    inner_iterations: torch.Tensor  # iterative KKT solver iterations, summed (B,)


@dataclass
class SQP:
    termination: KKTTermination
    kkt: KKTSolver
    target: torch.Tensor  # (B, m) right-hand sides of the equalities
    nu: float = 0.1
    mu0: float = 1.0
    accuracy: float = 0.1
    sharpen: float = 1.0
    c1: float = 1e-4
    max_backtracks: int = 30
    second_order_correction: bool = True

    def init(self, problem: ConstrainedProblem, x0: torch.Tensor) -> SQPState:
        f, g, c, J = problem.evaluate(x0)
        c = c - self.target
        # least-squares multipliers: min ‖∇f + Jᵀλ‖
        lam = -matvec(torch.linalg.pinv(J.transpose(-1, -2)), g) if problem.m else g.new_zeros(g.shape[0], 0)
        batch = x0.shape[0]
        zeros = x0.new_zeros(batch)
        long = torch.zeros(batch, dtype=torch.long, device=x0.device)
        return self._fields(problem, x0, f, g, c, J, lam, mu=torch.full_like(zeros, self.mu0),
                            nu=torch.full_like(zeros, self.nu), delta=zeros,
                            step_norm=torch.full_like(zeros, float("inf")), inner=long, count=long, failure=long,
                            best=torch.full_like(zeros, float("inf")), stall=long)

    def _fields(self, problem, x, f, g, c, J, lam, *, mu, nu, delta, step_norm, inner, count, failure, best,
                stall) -> SQPState:
        grad_lagrangian = g + rmatvec(J, lam)
        violation = c.abs().amax(-1) if c.shape[-1] else x.new_zeros(x.shape[0])
        stationary = (violation > self.termination.tol) & \
            (infeasibility_measure(J, c) <= self.termination.infeasibility_tol)
        optimality = grad_lagrangian.abs().amax(-1)
        scale = multiplier_scale(lam)
        best, stall = track_progress(best, stall, torch.maximum(optimality / scale, violation), x, step_norm)
        return SQPState(x=x, f=f, optimality=optimality, violation=violation,
                        complementarity=torch.zeros_like(f), multiplier_scale=scale,
                        infeasible_count=torch.where(stationary, count + 1, torch.zeros_like(count)),
                        failure=failure, best_error=best, stall_count=stall, lam=lam, g=g, c=c, J=J,
                        grad_lagrangian=grad_lagrangian, mu=mu, nu=nu, delta=delta, step_norm=step_norm,
                        inner_iterations=inner)

    def step(self, problem: ConstrainedProblem, state: SQPState, running: torch.Tensor) -> SQPState:
        x, lam, c, J, gl = state.x, state.lam, state.c, state.J, state.grad_lagrangian
        n, m = x.shape[-1], c.shape[-1]
        H = problem.lagrangian_hessian(x, lam)
        kkt_norm = torch.cat([gl, c], -1).norm(dim=-1)
        theta = torch.clamp(kkt_norm ** self.sharpen, max=self.accuracy) if self.sharpen > 0 else \
            torch.full_like(kkt_norm, self.accuracy)
        solve = self.kkt.solve(H, J, -gl, -c, state.delta, theta)
        grad_sq = (gl * gl).sum(-1)
        a, b, q = slope_parts(gl, c, J, H, solve.dx, solve.dlam)
        mu, nu, descent = update_penalty(state.mu, state.nu, a, b, q, grad_sq)
        inner = state.inner_iterations + solve.iterations
        if self.kkt.kind != "direct" and bool((running & ~descent).any()):
            # adaptive accuracy: an inexact step that no penalty can make a descent step is solved tighter
            tighter = self.kkt.solve(H, J, -gl, -c, state.delta, theta / 10)
            redo = ~descent
            solve.dx = torch.where(redo.unsqueeze(-1), tighter.dx, solve.dx)
            solve.dlam = torch.where(redo.unsqueeze(-1), tighter.dlam, solve.dlam)
            solve.delta = torch.where(redo, tighter.delta, solve.delta)
            inner = inner + torch.where(redo, tighter.iterations, torch.zeros_like(inner))
            a, b, q = slope_parts(gl, c, J, H, solve.dx, solve.dlam)
            mu, nu, descent = update_penalty(state.mu, state.nu, a, b, q, grad_sq)
        dx, dlam = solve.dx, solve.dlam
        slope = a + nu * b - mu * q
        gx, glam = merit_gradient(gl, c, J, H, mu, nu)
        fallback = ~descent | ~(slope < 0) | ~torch.isfinite(slope)
        dx = torch.where(fallback.unsqueeze(-1), -gx, dx)
        dlam = torch.where(fallback.unsqueeze(-1), -glam, dlam)
        slope = torch.where(fallback, -(gx * gx).sum(-1) - (glam * glam).sum(-1), slope)

        phi0 = augmented_lagrangian(state.f, c, gl, lam, mu, nu)
        phi0 = phi0 + 10 * torch.finfo(x.dtype).eps * phi0.abs().clamp(min=1.0)
        active = running & (slope < 0)

        def trial(x_new: torch.Tensor, lam_new: torch.Tensor, threshold: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
            """(merit, packed (f, ∇f, c, J)): the accepted trial's values become the next iterate's.

            L_μ,ν ≥ f + λᵀc + (μ/2)‖c‖², so where that bound alone exceeds the Armijo threshold
            the trial is rejected from f and c, without ∇f and J (the bound is its value)."""
            f, cv = problem.values(x_new)
            cv = cv - self.target
            bound = augmented_lagrangian(f, cv, torch.zeros_like(x_new), lam_new, mu, nu)
            needed = torch.isfinite(bound) & (bound <= threshold)
            if not bool(needed.any()):
                unknown = x_new.new_full((x_new.shape[0], n), float("nan"))
                return bound, torch.cat([f.unsqueeze(-1), unknown, cv, unknown.new_full((x_new.shape[0], m * n),
                                                                                          float("nan"))], -1)
            g, Jn = problem.derivatives(x_new)
            merit = augmented_lagrangian(f, cv, g + rmatvec(Jn, lam_new), lam_new, mu, nu)
            return torch.where(needed, merit, bound), torch.cat([f.unsqueeze(-1), g, cv, Jn.flatten(1)], -1)

        threshold = phi0 + self.c1 * slope
        phi1, packed = trial(x + dx, lam + dlam, threshold)
        accept_full = active & torch.isfinite(phi1) & (phi1 <= threshold)
        x_new = torch.where(accept_full.unsqueeze(-1), x + dx, x)
        lam_new = torch.where(accept_full.unsqueeze(-1), lam + dlam, lam)
        moved = accept_full
        pending = active & ~accept_full
        c_full = packed[:, 1 + n: 1 + n + m]
        # the correction is for the Maratos effect, a full step rejected because the curvature of c
        # raised ‖c‖ (Wächter & Biegler 2006, §2.4); where ‖c‖ fell it would only cost a trial
        corrigible = pending & ~fallback & ~((c_full * c_full).sum(-1) < (c * c).sum(-1))
        if self.second_order_correction and problem.m and bool(corrigible.any()):
            correction = -matvec(torch.linalg.pinv(J), torch.nan_to_num(c_full))
            x_soc = x + dx + correction
            phi_soc, packed_soc = trial(x_soc, lam + dlam, threshold)
            ok = corrigible & torch.isfinite(phi_soc) & (phi_soc <= threshold)
            x_new = torch.where(ok.unsqueeze(-1), x_soc, x_new)
            lam_new = torch.where(ok.unsqueeze(-1), lam + dlam, lam_new)
            packed = torch.where(ok.unsqueeze(-1), packed_soc, packed)
            moved = moved | ok
            pending = pending & ~ok
        failure = state.failure
        if bool(pending.any()):
            search = armijo(lambda t: trial(x + t.unsqueeze(-1) * dx, lam + t.unsqueeze(-1) * dlam,
                                           phi0 + self.c1 * t * slope),
                            phi0, slope, alpha0=0.5, c1=self.c1, max_steps=self.max_backtracks, active=pending,
                            aux0=torch.zeros_like(packed))
            alpha = search.alpha.unsqueeze(-1)
            ok = pending & search.success
            x_new = torch.where(ok.unsqueeze(-1), x + alpha * dx, x_new)
            lam_new = torch.where(ok.unsqueeze(-1), lam + alpha * dlam, lam_new)
            packed = torch.where(ok.unsqueeze(-1), search.aux, packed)
            moved = moved | ok
            failed = pending & ~search.success
            failure = torch.where(failed, int(Status.LINESEARCH_FAILED), failure)
        failure = torch.where(running & (solve.status == int(Status.SINGULAR)) & ~moved, int(Status.SINGULAR),
                              failure)
        f, g, cv, Jn = packed.split([1, n, m, m * n], -1)
        keep = ~moved
        f = torch.where(keep, state.f, f.squeeze(-1))
        g = torch.where(keep.unsqueeze(-1), state.g, g)
        cv = torch.where(keep.unsqueeze(-1), c, cv)
        Jn = torch.where(keep.view(-1, 1, 1), J, Jn.reshape(J.shape))
        return self._fields(problem, x_new, f, g, cv, Jn, lam_new, mu=mu, nu=nu, delta=solve.delta,
                            step_norm=(x_new - x).norm(dim=-1), inner=inner, count=state.infeasible_count,
                            failure=failure, best=state.best_error, stall=state.stall_count)

    def terminate(self, problem: ConstrainedProblem, state: SQPState):
        return self.termination(problem, state)

    def multipliers(self, state: SQPState) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ (B, m), z (B, n)): SQP has no bounds, so z = 0."""
        return state.lam, torch.zeros_like(state.x)

    def violation(self, problem: ConstrainedProblem, state: SQPState) -> torch.Tensor:
        return state.violation

    def jacobian(self, state: SQPState) -> torch.Tensor:
        return state.J

    def record(self, problem: ConstrainedProblem, state: SQPState) -> dict:
        return {"fun": state.f.clone(), "optimality": state.optimality.clone(), "violation": state.violation.clone(),
                "penalty": state.mu.clone(), "nu": state.nu.clone(), "step_norm": state.step_norm.clone(),
                "inner_iterations": state.inner_iterations.clone()}
