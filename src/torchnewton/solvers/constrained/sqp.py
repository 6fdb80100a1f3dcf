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

Composable parts (options of ``method="sqp"``):

* ``merit="augmented-lagrangian"`` (default, the paper's method) or ``"l1"``: the ℓ₁ penalty
  f + μ‖c‖₁ (:mod:`.l1_merit`), whose trial points cost f and c only — derivatives are evaluated
  at the accepted point alone; x and λ move together, λ + αΔλ. With ``nu=0`` the augmented
  Lagrangian is f + λᵀc + (μ/2)‖c‖², which needs no derivative at a trial point either.
* ``hessian="exact"`` (default) or ``"bfgs"``: Powell's damped BFGS approximation of ∇²ₓL
  (:mod:`.quasi_newton`), positive definite, so an iteration costs f, c, ∇f and J only. The ν-term of
  the augmented Lagrangian needs the true ∇²ₓL, so with ``"bfgs"`` ν = 0.
* ``matrix_free`` (default True exactly for ``kkt_solver="sketch"``, ``sketch="projected-cg"`` and
  ``hessian="exact"``): ∇²ₓL is never formed. The KKT solve runs on the
  :class:`~torchnewton.linear.sketch.KKTOperator` of the product V ↦ ∇²ₓLV
  (:meth:`.ConstrainedProblem.lagrangian_hessp`, one autodiff recording per iteration), and the
  other uses of ∇²ₓL are products too: ∇²ₓL∇ₓL for the ν-term of the slope and of ∇L_μ,ν, (∇²ₓL + δI)Δx
  for the ℓ₁ penalty and the curvature test. An iteration then costs a few Hessian-vector products
  (projected CG: one per CG step and three per KKT solve, one for ∇²ₓL∇ₓL) instead of forming
  ∇²ₓL (n of them): on the logistic regression of ``torchnewton bench constrained`` (N samples)
  O(Nn) per product instead of O(Nn²) per iteration. The iterates are those of the dense path to
  rounding (the same iteration counts on the Hock–Schittkowski equality problems).

The arithmetic between the KKT solve, the function calls and the host decisions lives in
:mod:`.sqp_arithmetic` as pure functions of tensors, called through the problem's
:class:`~torchnewton.core.fusion.Fusion` (fused kernels with ``options={"compile": True}``).

Example:
    >>> import torch
    >>> from torchnewton.solvers.constrained.entry import minimize_constrained
    >>> f = lambda x: x[0] ** 2 + x[1] ** 2
    >>> res = minimize_constrained(f, torch.tensor([2.0, 0.0], dtype=torch.float64), method="sqp",
    ...                            constraints={"type": "eq", "fun": lambda x: x[0] * x[1] - 1},
    ...                            options={"merit": "l1", "hessian": "bfgs"})
    >>> res.success, round(float(res.fun), 8)
    (True, 2.0)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.status import Status
from ...globalize.linesearch import armijo
from ...linear.batched import matvec, rmatvec
from .lean import finite
from .kkt import KKTSolver
from .l1_merit import l1_slope
from .least_norm import pseudo_solve, transposed_pseudo_solve
from .merit import merit_gradient
from .problem import ConstrainedProblem
from .quasi_newton import damped_bfgs_update
from .sqp_arithmetic import accept, finish, line_start, measures, penalty, prepare, trial_bound, trial_exact
from .termination import KKTFields, KKTTermination


MERITS = ("augmented-lagrangian", "l1")
HESSIANS = ("exact", "bfgs")


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
    B: torch.Tensor | None = None  # damped BFGS model of ∇²ₓL (B, n, n), hessian="bfgs" only


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
    merit: str = "augmented-lagrangian"
    hessian: str = "exact"
    matrix_free: bool | None = None

    def __post_init__(self) -> None:
        if self.merit not in MERITS:
            raise ValueError(f"options['merit']={self.merit!r}; valid choices: {', '.join(MERITS)}")
        if self.hessian not in HESSIANS:
            raise ValueError(f"options['hessian']={self.hessian!r}; valid choices: {', '.join(HESSIANS)}")
        if self.matrix_free is None:
            self.matrix_free = self.hessian == "exact" and self.kkt.kind == "sketch" and \
                self.kkt.sketch == "projected-cg"
        elif self.matrix_free not in (True, False):
            raise TypeError(f"options['matrix_free'] must be a bool; got {self.matrix_free!r}")
        if self.matrix_free and (self.hessian != "exact" or self.kkt.kind != "sketch"):
            raise ValueError("options['matrix_free']=True needs hessian='exact' and kkt_solver='sketch'; got "
                             f"hessian={self.hessian!r}, kkt_solver={self.kkt.kind!r}")
        if self.hessian == "bfgs":
            self.nu = 0.0  # the ν-term of L_μ,ν needs the true ∇²ₓL
        # c − 0 is c bit for bit: a zero target (the usual form c(x) = 0) costs no operation per trial
        self._target = self.target if bool(self.target.any()) else None

    def init(self, problem: ConstrainedProblem, x0: torch.Tensor) -> SQPState:
        f, g, c, J = problem.evaluate(x0)
        c = c - self.target
        # least-squares multipliers: min ‖∇f + Jᵀλ‖
        lam = -transposed_pseudo_solve(J, g) if problem.m else g.new_zeros(g.shape[0], 0)
        batch = x0.shape[0]
        zeros = x0.new_zeros(batch)
        long = torch.zeros(batch, dtype=torch.long, device=x0.device)
        state = self._fields(problem, x0, f, g, c, J, lam, mu=torch.full_like(zeros, self.mu0),
                             nu=torch.full_like(zeros, self.nu), delta=zeros,
                             step_norm=torch.full_like(zeros, float("inf")), inner=long, count=long, failure=long,
                             best=torch.full_like(zeros, float("inf")), stall=long)
        if self.hessian == "bfgs":
            n = x0.shape[-1]
            state.B = torch.eye(n, dtype=x0.dtype, device=x0.device).expand(batch, n, n).clone()
        return state

    def _fields(self, problem, x, f, g, c, J, lam, *, mu, nu, delta, step_norm, inner, count, failure, best,
                stall, complementarity: torch.Tensor | None = None) -> SQPState:
        """The state at (x, λ) with its KKT measures (:func:`.sqp_arithmetic.measures`); ``complementarity``:
        the last state's (zero for SQP): kept as the same tensor, the loop does not mask it."""
        grad_lagrangian, optimality, violation, scale, count, best, stall = measures(
            x, g, c, J, lam, step_norm, count, best, stall, self.termination.tol, self.termination.infeasibility_tol)
        return SQPState(x=x, f=f, optimality=optimality, violation=violation,
                        complementarity=torch.zeros_like(f) if complementarity is None else complementarity,
                        multiplier_scale=scale, infeasible_count=count,
                        failure=failure, best_error=best, stall_count=stall, lam=lam, g=g, c=c, J=J,
                        grad_lagrangian=grad_lagrangian, mu=mu, nu=nu, delta=delta, step_norm=step_norm,
                        inner_iterations=inner)

    def step(self, problem: ConstrainedProblem, state: SQPState, running: torch.Tensor) -> SQPState:
        fuse = problem.fusion
        x, lam, c, J, gl = state.x, state.lam, state.c, state.J, state.grad_lagrangian
        n, m = x.shape[-1], c.shape[-1]
        augmented = self.merit != "l1"
        if self.matrix_free:
            H = problem.lagrangian_hessp(x, lam)  # ∇²ₓL never formed: every use below is a product

            def hess_times(v: torch.Tensor) -> torch.Tensor:
                return H(v.unsqueeze(-1)).squeeze(-1)

            def shifted_times(v: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:  # (∇²ₓL + δI)v
                return hess_times(v) + shift.unsqueeze(-1) * v
            kkt_norm = torch.cat([gl, c], -1).norm(dim=-1)
            theta = torch.clamp(kkt_norm ** self.sharpen, max=self.accuracy) if self.sharpen > 0 else \
                torch.full_like(kkt_norm, self.accuracy)
            minus_gl, minus_c, hess_grad = -gl, -c, None
        else:
            H = problem.lagrangian_hessian(x, lam) if state.B is None else state.B

            def hess_times(v: torch.Tensor) -> torch.Tensor:
                return matvec(H, v)

            def shifted_times(v: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
                return matvec(H + shift.view(-1, 1, 1) * torch.eye(n, dtype=x.dtype, device=x.device), v)
            kkt_norm, theta, minus_gl, minus_c, hess_grad = fuse(prepare, gl, c, H, self.sharpen, self.accuracy,
                                                                 augmented)
        solve = self.kkt.solve(H, J, minus_gl, minus_c, state.delta, theta)
        # a direct solve has no inner iterations: the field stays the same tensor, which the loop need not mask
        inner = state.inner_iterations if self.kkt.kind == "direct" else state.inner_iterations + solve.iterations
        if not augmented:
            nu = state.nu

            def l1_penalty_and_slope():
                W_dx = shifted_times(solve.dx, solve.delta)
                return l1_slope(state.g, c, J, W_dx, solve.dx, lam + solve.dlam, state.mu)

            mu, slope = l1_penalty_and_slope()
            if self.kkt.kind != "direct" and bool((running & ~(slope < 0)).any()):
                # an inexact step that is no descent direction of φ_μ is solved tighter
                tighter = self.kkt.solve(H, J, -gl, -c, state.delta, theta / 10)
                redo = ~(slope < 0)
                solve.dx = torch.where(redo.unsqueeze(-1), tighter.dx, solve.dx)
                solve.dlam = torch.where(redo.unsqueeze(-1), tighter.dlam, solve.dlam)
                solve.delta = torch.where(redo, tighter.delta, solve.delta)
                inner = inner + torch.where(redo, tighter.iterations, torch.zeros_like(inner))
                mu, slope = l1_penalty_and_slope()
            dx, dlam = solve.dx, solve.dlam
            fallback = torch.zeros_like(running)
        else:
            if hess_grad is None:
                hess_grad = hess_times(gl)  # ∇²ₓL∇ₓL: the ν-term of the slope and of ∇L_μ,ν
            mu, nu, inner, slope, fallback = self._penalty(fuse, state, H, hess_grad, solve, theta, running, inner)
            dx, dlam = solve.dx, solve.dlam
            if bool(fallback.any()):  # ∇L_μ,ν only where some member needs it (one read-back)
                gx, glam = merit_gradient(gl, c, J, hess_grad, mu, nu)
                dx = torch.where(fallback.unsqueeze(-1), -gx, dx)
                dlam = torch.where(fallback.unsqueeze(-1), -glam, dlam)
                slope = torch.where(fallback, -(gx * gx).sum(-1) - (glam * glam).sum(-1), slope)
        phi0, active, threshold, x_full, lam_full, weights = fuse(line_start, self.merit, state.f, c, gl, lam, x, dx,
                                                                  dlam, mu, nu, slope, running, self.c1)

        def trial(x_new: torch.Tensor, lam_new: torch.Tensor, threshold: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
            """(merit, packed (f, ∇f, c, J)): the accepted trial's values become the next iterate's.

            The merit's part from f and c alone decides first; ∇f and J are evaluated only where
            it does not already reject the trial (for the ℓ₁ merit, only where it accepts it)."""
            f, cv = problem.values(x_new)
            cv, bound, needed = fuse(trial_bound, self.merit, f, cv, self._target, lam_new, threshold, *weights)
            if not bool(needed.any()):
                unknown = x_new.new_full((x_new.shape[0], n), float("nan"))
                return bound, torch.cat([f.unsqueeze(-1), unknown, cv, unknown.new_full((x_new.shape[0], m * n),
                                                                                          float("nan"))], -1)
            g, Jn = problem.derivatives(x_new)
            return fuse(trial_exact, self.merit, f, cv, g, Jn, lam_new, bound, needed, *weights)

        phi1, packed = trial(x_full, lam_full, threshold)
        x_new, lam_new, moved, pending, corrigible = fuse(accept, phi1, threshold, active, x_full, lam_full, x, lam,
                                                          packed, c, fallback)
        # the correction is for the Maratos effect, a full step rejected because the curvature of c
        # raised ‖c‖ (Wächter & Biegler 2006, §2.4); where ‖c‖ fell it would only cost a trial
        if self.second_order_correction and problem.m and bool(corrigible.any()):
            c_full = packed[:, 1 + n: 1 + n + m]
            correction = -pseudo_solve(J, torch.nan_to_num(c_full))
            x_soc = x_full + correction
            phi_soc, packed_soc = trial(x_soc, lam_full, threshold)
            ok = corrigible & finite(phi_soc) & (phi_soc <= threshold)
            x_new = torch.where(ok.unsqueeze(-1), x_soc, x_new)
            lam_new = torch.where(ok.unsqueeze(-1), lam_full, lam_new)
            packed = torch.where(ok.unsqueeze(-1), packed_soc, packed)
            moved = moved | ok
            pending = pending & ~ok
        failure = state.failure
        if bool(pending.any()):
            def backtrack(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                column = t.unsqueeze(-1)
                return trial(x + column * dx, lam + column * dlam, phi0 + self.c1 * t * slope)

            search = armijo(backtrack, phi0, slope, alpha0=0.5, c1=self.c1, max_steps=self.max_backtracks,
                            active=pending, aux0=torch.zeros_like(packed))
            alpha = search.alpha.unsqueeze(-1)
            ok = pending & search.success
            x_new = torch.where(ok.unsqueeze(-1), x + alpha * dx, x_new)
            lam_new = torch.where(ok.unsqueeze(-1), lam + alpha * dlam, lam_new)
            packed = torch.where(ok.unsqueeze(-1), search.aux, packed)
            moved = moved | ok
            failed = pending & ~search.success
            failure = torch.where(failed, int(Status.LINESEARCH_FAILED), failure)
        f, g, cv, Jn, failure, step_norm, gl_new, optimality, violation, scale, count, best, stall = fuse(
            finish, x, x_new, lam_new, packed, moved, state.f, state.g, c, J, running, solve.status, failure,
            state.infeasible_count, state.best_error, state.stall_count, self.termination.tol,
            self.termination.infeasibility_tol)
        new = SQPState(x=x_new, f=f, optimality=optimality, violation=violation,
                       complementarity=state.complementarity, multiplier_scale=scale, infeasible_count=count,
                       failure=failure, best_error=best, stall_count=stall, lam=lam_new, g=g, c=cv, J=Jn,
                       grad_lagrangian=gl_new, mu=mu, nu=nu, delta=solve.delta, step_norm=step_norm,
                       inner_iterations=inner)
        if state.B is not None:
            # y from ∇ₓL at both points with the new multipliers (Powell 1978)
            y = g - state.g + rmatvec(Jn - J, lam_new)
            new.B = damped_bfgs_update(state.B, x_new - x, y, moved)
        return new

    def _penalty(self, fuse, state, H, hess_grad, solve, theta, running, inner):
        """(μ, ν, inner, slope, fallback) of the augmented-Lagrangian merit along the final step
        (:func:`.sqp_arithmetic.penalty`); an inexact step that no penalty makes a descent step is
        solved tighter (``solve`` is updated in place). ``H`` dense ∇²ₓL or its product,
        ``hess_grad`` = ∇²ₓL∇ₓL."""
        gl, c, J = state.grad_lagrangian, state.c, state.J
        mu, nu, descent, slope, fallback = fuse(penalty, gl, c, J, hess_grad, solve.dx, solve.dlam, state.mu, state.nu)
        if self.kkt.kind != "direct" and bool((running & ~descent).any()):
            tighter = self.kkt.solve(H, J, -gl, -c, state.delta, theta / 10)
            redo = ~descent
            solve.dx = torch.where(redo.unsqueeze(-1), tighter.dx, solve.dx)
            solve.dlam = torch.where(redo.unsqueeze(-1), tighter.dlam, solve.dlam)
            solve.delta = torch.where(redo, tighter.delta, solve.delta)
            inner = inner + torch.where(redo, tighter.iterations, torch.zeros_like(inner))
            mu, nu, descent, slope, fallback = fuse(penalty, gl, c, J, hess_grad, solve.dx, solve.dlam, state.mu,
                                                    state.nu)
        return mu, nu, inner, slope, fallback

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
