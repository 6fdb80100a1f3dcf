"""Homotopy continuation for F(x) = 0: follow the curve H(z, λ) = 0 from (z₀, 0) to λ = 1.

Each iteration of the shared loop is one pseudo-arclength predictor–corrector step (Allgower &
Georg, "Introduction to Numerical Continuation Methods", SIAM 2003, ch. 2 and 6; Keller,
"Numerical solution of bifurcation and nonlinear eigenvalue problems", 1977):

1. **predictor**: y = (z, λ) moves a length h along the unit tangent t (the null vector of
   A = [∂H/∂z, ∂H/∂λ], oriented by continuity, see :mod:`.homotopy_maps`);
2. **corrector**: Newton's method on the augmented square system

       H(y) = 0,   tᵀ (y − y_pred) = 0          i.e.   [A; tᵀ] Δy = −[H; 0],

   which stays on the hyperplane through the prediction orthogonal to t, so it is regular at
   turning points of λ, where ∂H/∂z alone is singular;
3. **step control**: a correction is accepted when ‖H‖∞ reaches the tracking tolerance
   ``corrector_tol``·(1 + ‖F(z₀)‖∞) within ``max_corrector`` iterations, the first correction
   is at most half the step and each later one at most half the previous (else the prediction
   may have jumped to another branch); h doubles after a correction that took at most two
   iterations and halves after a rejected one.

When a predictor would cross λ = 1 the hyperplane tᵀ(y − y_pred) = 0 is replaced by λ = 1
(Allgower & Georg §9.2): since H(z, 1) = F(z) for both homotopies the corrector is then
Newton's method on F itself, run to the caller's tolerance — the final polish. Success is
decided by the same test as every root method, ‖F(x)‖∞ ≤ tol on the returned x.

A tracking correction that carries λ across 1 is not accepted: the end game restarts from the
point of its chord at λ = 1, since the first crossing is the root the curve leads to. In the
end game any root will do, so its corrections need not contract, only keep ‖F‖ below ten times
its predicted value, within 3·``max_corrector`` iterations (Newton converges only linearly to
a singular root).

Honest failures: a step shrunk below 1e-10·(1 + ‖y‖) ends ``STALLED`` (``NONFINITE`` where the
last trial points were NaN/Inf); so does a curve that leaves λ ≥ ``min_lambda`` or runs off to
‖z‖∞ > 1e12·(1 + ‖z₀‖∞) — it is lost, as for x² + 1 = 0, whose Newton homotopy turns back
at λ = ½ and goes to λ → −∞ — and a curve that passes through (z₀, 0) again: it is a closed
loop (MGH's trigonometric function from 10·x₀ is one). A curve still being followed at
``max_iter`` ends ``MAX_ITER``.

Members of a batch carry their own λ, tangent and step; a member that has accepted its
correction waits (unchanged) while the others finish correcting. One problem on the CPU runs the
same steps with its scalars (λ, h, the step tests, the tangent's orientation) on Python floats,
skips the vectors a masked branch would discard (the landing point, the loop test, the tangent,
cost and gradient of a rejected step) and solves the corrector's systems by LU without
:func:`solve_dense`'s batch bookkeeping (falling back to it on a singular system).

Example:
    >>> import torch, torchnewton
    >>> f = lambda x: x**3 - 3 * x + 18  # ½F² is stationary at x = 1 (F' = 0), between x₀ and the root
    >>> res = torchnewton.root(f, torch.tensor([2.0], dtype=torch.float64), method="homotopy")
    >>> round(float(res.x), 12), res.success
    (-3.0, True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ...core.status import Status
from ...globalize.members import ops_for
from ...linear import solve_dense
from ...linear.batched import rmatvec
from ...linear.direct import lu_solve_one
from .homotopy_maps import HOMOTOPIES, homotopy_map, tangent
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from .termination import Termination


_MIN_STEP = 1e-10  # relative to 1 + ‖y‖: below it the curve cannot be followed in floating point
_MAX_GROWTH = 1e12  # ‖z‖∞ beyond this times 1 + ‖z₀‖∞: the curve has run off to infinity


@dataclass
class HomotopyState(ResidualState):
    lam: torch.Tensor  # (B,) homotopy parameter λ of the current point of the curve
    tangent: torch.Tensor  # (B, n + 1) unit tangent at (x, λ), oriented along the curve
    arc_step: torch.Tensor  # (B,) next predictor length h
    z0: torch.Tensor  # (B, n) start of the curve
    F0: torch.Tensor  # (B, n) F(z₀)
    path_tol: torch.Tensor  # (B,) ‖H‖∞ that a tracking correction must reach
    landing: torch.Tensor  # (B, n + 1) where the next end game starts, for members whose last step overshot λ = 1
    land: torch.Tensor  # (B,) bool: the next step is that end game
    J: torch.Tensor  # (B, n, n) Jacobian of F at x


@dataclass
class Homotopy:
    """Pseudo-arclength continuation of a Newton (default) or fixed-point homotopy."""

    termination: Termination
    tol: float
    homotopy: str = "newton"
    initial_step: float = 0.05
    max_corrector: int = 6
    # tight: a point left with ‖H‖ well above rounding needs a first correction of its own, which
    # the step test then blames on the predictor, shrinking h to nothing on strongly scaled curves
    corrector_tol: float = 1e-9
    min_lambda: float = -10.0

    def __post_init__(self) -> None:
        if self.homotopy not in HOMOTOPIES:
            raise ValueError(f"options['homotopy'] must be one of {HOMOTOPIES}, got {self.homotopy!r}")
        for name in ("initial_step", "corrector_tol"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"options['{name}'] must be positive, got {getattr(self, name)!r}")
        if int(self.max_corrector) < 1:
            raise ValueError(f"options['max_corrector'] must be a positive integer, got {self.max_corrector!r}")
        if not float(self.min_lambda) < 0:
            raise ValueError(f"options['min_lambda'] must be negative, got {self.min_lambda!r}")

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> HomotopyState:
        F0, J0 = problem.linearize(x0)
        lam = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        _, A = homotopy_map(self.homotopy, x0, lam, F0, J0, x0, F0)
        t = tangent(A)
        problem.counters.nlinsolve += 1
        # the first prediction advances λ by about initial_step
        h = (self.initial_step / t[:, -1].abs().clamp(min=1e-12)).clamp(max=1 + x0.norm(dim=-1))
        path_tol = torch.clamp(self.corrector_tol * (1 + F0.abs().amax(-1)), min=self.tol)
        return HomotopyState(**initial_state(x0, F0, rmatvec(J0, F0)), lam=lam, tangent=t, arc_step=h, z0=x0,
                             F0=F0, path_tol=path_tol, landing=torch.zeros_like(t),
                             land=torch.zeros_like(lam, dtype=torch.bool), J=J0)

    def step(self, problem: ResidualProblem, state: HomotopyState, running: torch.Tensor) -> HomotopyState:
        # per-member scalars through ``o``: (B,) tensors, or Python floats for one problem (lean
        # path), where the vectors a branch would discard are not computed at all
        o = ops_for(state.x)
        y = torch.cat([state.x, state.lam.unsqueeze(-1)], dim=-1)
        t, land = state.tangent, o.value(state.land)
        # one read-back for the float scalars of the lean path
        h, lam, t_lam, path_tol = o.values(state.arc_step, state.lam, t[:, -1], state.path_tol)
        # the end game: a predictor that would cross λ = 1 is cut there and corrected at λ = 1
        crossing = (t_lam != 0) & ((lam - 1) * (lam + h * t_lam - 1) <= 0)
        length = o.where(crossing, (1 - lam) / o.where(t_lam != 0, t_lam, 1.0), h)
        y_pred = y + o.column(length) * t
        if o.batched:
            y_pred[:, -1] = torch.where(crossing, torch.ones_like(lam), y_pred[:, -1])
        elif crossing:
            y_pred[:, -1] = 1.0
        # ...and so is the chord of a step whose correction landed beyond λ = 1
        crossing = crossing | land
        if o.batched or land:
            y_pred = o.where(land, state.landing, y_pred)
            length = o.where(land, o.norm(state.landing - y), length)
        if o.batched or crossing:
            e_lam = torch.zeros_like(t)
            e_lam[:, -1] = 1
        normal = o.where(crossing, e_lam, t) if o.batched or crossing else t
        target = o.where(crossing, o.full(lam, self.tol), path_tol)
        budget = o.where(crossing, 3 * self.max_corrector, self.max_corrector)
        out = self._correct(problem, state, y_pred, normal, target, budget, length, running, crossing, o)
        accepted, y_new, F_new, J_new, A_new, iterations, nonfinite = out

        n = state.x.shape[-1]
        x_new = y_new[:, :n]
        if o.batched:
            lam_new, step_norm = y_new[:, -1], o.norm(y_new - y)
        else:  # one read-back of both points; the difference on floats is the tensor's in float64
            new, old = y_new.tolist()[0], y.tolist()[0]
            lam_new, step_norm = new[-1], math.sqrt(sum((a - b) * (a - b) for a, b in zip(new, old)))
        # a tracking step whose corrector carried λ across 1 is redone as an end game from the
        # point of its chord at λ = 1: the first crossing of λ = 1 is the root
        overshot = accepted & o.not_(crossing) & ((lam - 1) * (lam_new - 1) < 0)
        landing = state.landing
        if o.batched or overshot:
            fraction = o.column((1 - lam) / o.where(overshot, lam_new - lam, 1.0))
            landing = y + fraction * (y_new - y)
            landing[:, -1] = 1
        accepted = accepted & o.not_(overshot)
        if o.batched:
            t_new = tangent(torch.where(accepted.view(-1, 1, 1), A_new, 0), previous=t)
        else:
            t_new = tangent(A_new, previous=t) if accepted else t
        problem.counters.nlinsolve += 1
        easy = iterations <= 2
        h_new = o.where(accepted, o.where(easy & o.not_(crossing), 2 * h, h), 0.5 * o.minimum(h, abs(length)))
        h_new = o.where(overshot, h, h_new)
        x_next, lam_next = o.where(accepted, x_new, state.x), o.where(accepted, lam_new, lam)
        F_next, J_next = o.where(accepted, F_new, state.F), o.where(accepted, J_new, state.J)

        # J(z₀) regular makes the curve through (z₀, 0) locally unique: passing there again means
        # it is a closed loop that never reaches λ = 1
        through_zero = accepted & (lam * lam_next < 0)
        loop = through_zero
        if o.batched or through_zero:
            at_zero = state.x + o.column(lam / o.where(through_zero, lam - lam_next, 1.0)) * (x_next - state.x)
            near = 0.1 * step_norm + _MIN_STEP * (1 + o.norm(state.z0))
            loop = through_zero & (o.norm(at_zero - state.z0) <= near)
        too_short = h_new < _MIN_STEP * (1 + o.norm(y))
        lost = accepted & ((lam_next < self.min_lambda)
                           | (o.max_abs(x_next) > _MAX_GROWTH * (1 + o.max_abs(state.z0))))
        ended = too_short | lost | loop
        failure = state.failure  # the lean path packs only a failure that happened
        if o.batched or ended:
            failure = o.where(ended, int(Status.STALLED), o.value(state.failure))
            failure = o.pack(o.where(too_short & nonfinite & o.not_(accepted), int(Status.NONFINITE), failure),
                             state.failure)
        if o.batched or accepted:
            cost, grad = 0.5 * (F_next * F_next).sum(-1), rmatvec(J_next, F_next)
        else:  # a rejected step of one problem keeps x, F and J, hence their cost and gradient
            cost, grad = state.cost, state.grad
        return replace(state, x=x_next, F=F_next, cost=cost, grad=grad,
                       step_norm=o.pack(o.where(accepted, step_norm, float("inf")), state.step_norm),
                       failure=failure, lam=o.pack(lam_next, state.lam) if o.batched or accepted else state.lam,
                       tangent=o.where(accepted, t_new, t), arc_step=o.pack(h_new, state.arc_step), J=J_next,
                       landing=o.where(overshot, landing, state.landing),
                       land=o.pack(overshot, state.land) if o.batched or overshot != land else state.land)

    def _correct(self, problem: ResidualProblem, state: HomotopyState, y_pred: torch.Tensor, normal: torch.Tensor,
                 target, budget, length, running: torch.Tensor, end_game, o):
        """Newton on [H(y); normalᵀ(y − y_pred)] = 0 from y_pred, for every running member at once.

        Tracking corrections must contract at once (else the prediction may sit in the basin of
        another branch); at λ = 1 any root will do, so the end game only has to keep ‖F‖ below
        ten times its predicted value — which lets it converge, linearly, to singular roots too.
        The per-member scalars (``target``, ``budget``, ``length``, ``end_game``) are (B,)
        tensors or one problem's floats (``o``). Returns (accepted, y, F(z), J(z), A(y),
        corrections used, last trial non-finite); the derivative fields hold the values at the
        accepted point where ``accepted``.
        """
        n = state.x.shape[-1]
        y = y_pred
        active, accepted, nonfinite = (running, o.full(running, False), o.full(running, False)) if o.batched \
            else (True, False, False)
        used = o.full(budget, 0)
        previous = o.full(length, float("inf"))
        slack = torch.finfo(y.dtype).eps ** 0.5 * (1 + o.norm(y_pred))
        kept, first, zero = None, None, None
        border = normal.unsqueeze(-2)  # the last row of the augmented matrix, fixed while correcting
        for k in range(3 * self.max_corrector + 1):
            z, lam = y[:, :n], y[:, n:]
            F, J = problem.linearize(z)
            H, A = homotopy_map(self.homotopy, z, lam, F, J, state.z0, state.F0)
            size_H = o.max_abs(H)  # NaN/Inf exactly where H is not finite
            finite = o.isfinite(size_H) & o.all_finite(A.flatten(1))
            first = size_H if first is None else first
            done = active & finite & (size_H <= target)
            if kept is None or (not o.batched and done):
                kept = [y, F, J, A]
            elif o.batched:
                kept = [torch.where(done.view(-1, *[1] * (new.dim() - 1)), new, old)
                        for old, new in zip(kept, (y, F, J, A))]
            nonfinite = o.where(active, o.not_(finite), nonfinite)
            accepted = accepted | done
            active = active & finite & o.not_(done) & (used < budget)
            if not o.any(active):
                break
            zero = torch.zeros_like(H[:, :1]) if zero is None else zero
            system = torch.cat([A, border], dim=-2)
            rhs = torch.cat([-H, zero], dim=-1)
            delta, regular = lu_solve_one(system, rhs.unsqueeze(-1)) if not o.batched else (None, False)
            if not regular:  # a batch, or a singular system: solve_dense's checks and fallback
                delta = solve_dense(system, rhs).x
            problem.counters.nlinsolve += 1
            size = o.norm(delta)
            # Newton must contract at once, or the prediction is outside its basin (another branch)
            bound = o.where(used == 0, 0.5 * abs(length) + slack, 0.5 * previous)
            contracting = o.where(end_game, size_H <= 10 * first, size <= bound)
            active = active & o.isfinite(size) & contracting
            y = o.where(active, y + delta, y) if o.batched else (y + delta if active else y)
            used = used + (active.long() if o.batched else int(active))
            previous = size
        y_acc, F_acc, J_acc, A_acc = kept
        return accepted, y_acc, F_acc, J_acc, A_acc, used, nonfinite

    def terminate(self, problem: ResidualProblem, state: HomotopyState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: HomotopyState) -> dict:
        return {**record(state), "lam": state.lam.detach().clone()}
