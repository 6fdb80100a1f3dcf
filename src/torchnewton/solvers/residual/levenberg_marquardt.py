"""Levenberg–Marquardt for least squares and for square systems (as min ½‖F‖²), as MINPACK's lmder.

Moré (1978, "The Levenberg–Marquardt algorithm: implementation and theory", LNM 630), batched:
every member of a batch keeps its own trust radius Δ, damping λ and scaling D.

* Scaling: D = diag(dⱼ), dⱼ the largest norm of column j of J seen so far (1 for a zero column).
* Step: λ = 0 if the Gauss–Newton step has ‖D p‖ ≤ 1.1 Δ, else λ > 0 with ‖D p(λ)‖ ≈ Δ (within
  10 %) by the Moré–Hebden iteration (``globalize.damping.levenberg_marquardt_parameter``).
* Radius: Δ₀ = ``initial_radius``·‖D x₀‖ (``initial_radius`` if x₀ = 0), cut to ‖D p₀‖ until the
  first accepted step. MINPACK's default is 100; 1 (a first step of about the size of x₀) is the
  default here: on the NIST StRD runs it solves BOXBOD and MGH09 from start 1, which 100 does not
  (26/26 runs instead of 24/26), at the price of MGH's biggs_exp6 ending at its other local
  minimum. With the relative reductions actred = 1 − ‖F(x+p)‖²/‖F‖² and
  prered = (‖Jp‖² + 2λ‖Dp‖²)/‖F‖² (the model's decrease, summed without cancellation) and
  ρ = actred/prered: ρ ≤ ¼ shrinks Δ by a factor in [1/10, 1/2] (the minimizer of a quadratic
  interpolating the decrease along p), ρ ≥ ¾ or λ = 0 sets Δ = 2‖D p‖; ρ > 10⁻⁴ accepts the step.
* What the termination rules read (MINPACK's tests, through ``LeastSquaresTermination``):
  ``step_norm`` is Δ after the update, so the step test reads Δ ≤ xtol·‖D' x‖ — the radius, never
  a rejected trial step, which can be tiny only because λ was large. ``scale`` D' is the current
  column norms, not D: D ≥ D' so this bounds the step in the current scaling too, and a column
  that was once large (MGH10: d₁ = 3e7 while ‖J₁‖ = 2) cannot inflate ‖D x‖ until a crawling
  iterate passes the test far from the solution; ``reduction`` is
  max(|actred|, prered) when ρ ≤ 2 (else ∞); ``gradient_cosine`` is
  maxⱼ |Jⱼᵀ F| / (‖Jⱼ‖ ‖F‖), the scaled gradient test.

One problem on the CPU (the loop's lean path) reads the decomposition back as Python floats once
per Jacobian (``ScaledSpectrum``, from the ``.numpy()`` views of the tensors, which are no copies
on the CPU): every λ search, trial step p(λ) and model value ‖J p‖ = ‖diag(σ) w c‖ then costs
microseconds of float arithmetic instead of a dozen small torch calls, and x + p is one addition of
arrays. The same formulas, summed in another order: the iterates agree with the batch's to round-off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ...core.status import Status
from ...globalize.damping import ScaledJacobian, ScaledSpectrum, levenberg_marquardt_parameter
from ...globalize.members import lean, ops_for, ops_of
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from .termination import Termination
from ...linear.batched import matvec, rmatvec



@dataclass
class LevenbergMarquardtState(ResidualState):
    J: torch.Tensor
    scaling: torch.Tensor  # D of the steps: the largest column norms of J so far
    radius: torch.Tensor  # Δ, the bound on ‖D p‖
    damping: torch.Tensor  # λ of the last step (starts the next Moré–Hebden search)
    gradient_cosine: torch.Tensor
    saturated: torch.Tensor  # bool: F still correlates with a column of J that has vanished
    first_step: torch.Tensor  # bool: Δ₀ is still the initial guess, to be cut to ‖D p₀‖
    singular: torch.Tensor  # the decomposition of J D⁻¹ at x (see ScaledJacobian)
    vectors: torch.Tensor
    coefficients: torch.Tensor
    significant: torch.Tensor
    # one problem (lean path): the decomposition and ‖F‖ as floats, so a step reads no tensor back;
    # there Δ, λ and ``first_step`` (which only this method reads) are Python numbers too
    spectrum: ScaledSpectrum | None = None
    residual_norm: float | None = None


@dataclass
class _Linearization:
    """What the method keeps of J at an accepted point: the scaling D (the running maximum of
    the column norms), the column norms themselves (1 for a zero column), the decomposition of
    J D⁻¹, Jᵀ F and the first-order test. For one problem the per-column arithmetic runs on
    Python floats after one read-back (``spectrum`` then holds the decomposition as floats)."""

    scaling: torch.Tensor
    column_norms: torch.Tensor
    decomposition: ScaledJacobian
    grad: torch.Tensor
    cosine: torch.Tensor | float
    saturated: torch.Tensor | bool
    finite: torch.Tensor | bool
    spectrum: ScaledSpectrum | None = None


def _linearize(J: torch.Tensor, F: torch.Tensor, F_norm: torch.Tensor | float,
               previous: torch.Tensor | None, spectrum: ScaledSpectrum | None = None) -> _Linearization:
    """The linearization at (F, J), with D ← max(``previous``, ‖Jⱼ‖) (``previous`` None: the
    first point). ``F_norm`` is ‖F‖ as a tensor (batch) or a float (one problem, whose previous
    D as floats is ``spectrum.scale``)."""
    if not lean(J):
        norms, grad = J.norm(dim=-2), rmatvec(J, F)
        column = _nonzero(norms)
        scaling = column if previous is None else torch.maximum(previous, column)
        decomposition = ScaledJacobian.of(J, F, scaling)
        cosine, saturated = _first_order(norms, F_norm, grad, scaling)
        return _Linearization(scaling, column, decomposition, grad, cosine, saturated, decomposition.finite)
    return _linearize_one(J, F, F_norm, None if previous is None else spectrum.scale)


def _linearize_one(J: torch.Tensor, F: torch.Tensor, F_norm: float, previous: list[float] | None) -> _Linearization:
    """:func:`_linearize` of one problem on the CPU (``previous``: the last D as floats), in about a
    dozen calls instead of thirty: D and the decomposition bitwise as the batch's (the same torch
    reductions and SVD, see :meth:`ScaledJacobian.of_one`), the rest on the ``.numpy()`` views
    (no copies) and Python floats. Jᵀ F is one numpy product, equal to the batch's to round-off: it
    feeds only the first-order test and ``Result.grad``."""
    J_host, F_host = J.detach().numpy()[0], F.detach().numpy()[0]
    norm_list = J.norm(dim=-2).tolist()[0]
    grad_host = F_host @ J_host
    grad = torch.from_numpy(grad_host[None])
    column_list = [v if v > 0 else 1.0 for v in norm_list]  # _nonzero (a NaN norm gives 1 there too)
    scaling_list = column_list if previous is None else [a if a >= b else b for a, b in zip(previous, column_list)]
    column = torch.from_numpy(np.array([column_list], dtype=J_host.dtype))
    # a column norm is finite exactly when the column is (short of overflowing the norm itself)
    if not (math.isfinite(F_norm) and all(map(math.isfinite, norm_list))):
        scaling = J.new_tensor([scaling_list])
        decomposition = ScaledJacobian.of(J, F, scaling, finite=False)
        return _Linearization(scaling, column, decomposition, grad, math.nan, False, False)
    decomposition, spectrum = ScaledJacobian.of_one(J, F, scaling_list)
    cosine, saturated = _first_order_floats(norm_list, F_norm, grad_host.tolist(), scaling_list,
                                            torch.finfo(J.dtype).eps)
    return _Linearization(decomposition.scale, column, decomposition, grad, cosine, saturated, True, spectrum)


@dataclass
class LevenbergMarquardt:
    termination: Termination
    initial_radius: float = 1.0
    accept_ratio: float = 1e-4

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> LevenbergMarquardtState:
        F, J = problem.linearize(x0)
        o = ops_for(x0)
        F_norm = F.norm(dim=-1) if o.batched else o.norm(F)
        point = _linearize(J, F, F_norm, None)
        fields = initial_state(x0, F, point.grad)
        fields["scale"] = point.column_norms
        if o.batched:
            x_norm = (point.scaling * x0).norm(dim=-1)
            radius = self.initial_radius * torch.where(x_norm > 0, x_norm, torch.ones_like(x_norm))
            own = dict(radius=radius, damping=torch.zeros_like(radius),
                       first_step=torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device))
        else:  # Δ, λ and first_step of one problem are Python numbers
            x_norm = _scaled_norm_one(point.spectrum.scale if point.finite else point.scaling.tolist()[0], x0)
            own = dict(radius=self.initial_radius * (x_norm if x_norm > 0 else 1.0), damping=0.0, first_step=True)
        if o.batched or not point.finite:
            fields["failure"] = o.pack(o.where(point.finite, o.value(fields["failure"]), int(Status.NONFINITE)),
                                       fields["failure"])
        decomposition = point.decomposition
        return LevenbergMarquardtState(
            **fields, J=J, scaling=point.scaling, **own,
            gradient_cosine=o.pack(point.cosine, fields["cost"]),
            saturated=o.pack(point.saturated, fields["regularized"]),
            singular=decomposition.singular, vectors=decomposition.vectors,
            coefficients=decomposition.coefficients, significant=decomposition.significant, spectrum=point.spectrum,
            residual_norm=None if o.batched else F_norm)

    def step(self, problem: ResidualProblem, state: LevenbergMarquardtState, running: torch.Tensor) -> LevenbergMarquardtState:
        # per-member scalars through ``o``: (B,) tensors, or Python floats for one problem (lean path),
        # where the λ search, the step and the model run on the decomposition read back as floats
        o = ops_for(state.x)
        own = o.value if o.batched else lambda v: v  # Δ, λ, first_step: Python numbers for one problem
        x, F, J, scale = state.x, state.F, state.J, state.scaling
        tiny, eps = torch.finfo(x.dtype).tiny, torch.finfo(x.dtype).eps
        decomposition = ScaledJacobian(state.singular, state.vectors, state.coefficients, scale, state.significant)
        spectrum = decomposition if o.batched else state.spectrum
        damping = levenberg_marquardt_parameter(spectrum, own(state.radius), own(state.damping),
                                                dtype=x.dtype)
        if o.batched:
            p, p_norm = decomposition.step(damping)
            x_trial = x + p
        else:  # x + p on the arrays: the same IEEE additions in x's dtype, two calls fewer
            p, p_norm = spectrum.step(damping)
            x_host = x.detach().numpy()
            x_trial = torch.from_numpy(x_host + np.array([p], dtype=x_host.dtype))
        problem.counters.nlinsolve += 1
        first_step = own(state.first_step)
        radius = o.where(first_step, o.minimum(own(state.radius), p_norm), own(state.radius))
        F_trial = problem.residual(x_trial)
        if o.batched:
            F_norm, trial_norm = F.norm(dim=-1), F_trial.norm(dim=-1)
        else:
            F_norm, trial_norm = state.residual_norm, o.norm(F_trial)
        safe_norm = o.clamp(F_norm, min=tiny)
        finite = o.isfinite(trial_norm)
        # a trial ten times worse (or non-finite) counts as actred = −1, as in MINPACK: no overflow
        relative = trial_norm / safe_norm
        actual = o.where(finite & (0.1 * trial_norm < F_norm), 1 - relative * relative, -1.0)
        model = (matvec(J, p).norm(dim=-1) if o.batched else spectrum.model_norm(damping)) / safe_norm
        step_ratio = p_norm / safe_norm
        model_term, damping_term = model * model, damping * (step_ratio * step_ratio)
        predicted = model_term + 2 * damping_term
        directional = -(model_term + damping_term)  # ½ d/dt ‖F + tJp‖²/‖F‖² at t = 0
        ratio = o.where(predicted > 0, actual / o.where(predicted > 0, predicted, 1.0), 0.0)
        radius, damping = _update_radius(radius, damping, p_norm, ratio, actual, directional,
                                         worse=o.not_(finite) | (0.1 * trial_norm >= F_norm))
        accept = ratio >= self.accept_ratio
        x_new, F_new = o.where(accept, x_trial, x), o.where(accept, F_trial, F)
        J_new, new_scale, fresh, grad, cost = J, scale, decomposition, state.grad, state.cost
        column_norms, cosine, saturated = state.scale, state.gradient_cosine, state.saturated
        # no new point: the decomposition at x stays (finite, or the member already ended NONFINITE)
        fresh_finite, fresh_spectrum = decomposition.finite if o.batched else True, state.spectrum
        if o.any(accept):
            J_new = o.where(accept, problem.jacobian(x_new), J)
            F_new_norm = F_new.norm(dim=-1) if o.batched else trial_norm
            point = _linearize(J_new, F_new, F_new_norm, scale, state.spectrum)
            new_scale, fresh, grad, fresh_finite, fresh_spectrum = (point.scaling, point.decomposition, point.grad,
                                                                    point.finite, point.spectrum)
            cost = o.where(accept, 0.5 * (F_new_norm * F_new_norm), o.value(state.cost))
            column_norms = o.where(accept, point.column_norms, state.scale)
            cosine = o.where(accept, point.cosine, o.value(state.gradient_cosine))
            saturated = o.where(accept, point.saturated, o.value(state.saturated))
            cost, cosine, saturated = (o.pack(cost, state.cost), o.pack(cosine, state.gradient_cosine),
                                       o.pack(saturated, state.saturated))
            if o.batched:
                keep = ~accept
                fresh = ScaledJacobian(*(torch.where(keep.view(keep.shape + (1,) * (new.dim() - 1)), old, new)
                                         for old, new in ((decomposition.singular, fresh.singular),
                                                          (decomposition.vectors, fresh.vectors),
                                                          (decomposition.coefficients, fresh.coefficients),
                                                          (scale, fresh.scale),
                                                          (decomposition.significant, fresh.significant))))
                fresh_finite = fresh.finite
        reduction = o.where(0.5 * ratio <= 1, o.maximum(abs(actual), predicted), float("inf"))
        if o.batched:
            x_norm = (new_scale * x_new).norm(dim=-1)
        else:  # D is fresh_spectrum.scale (where J was finite)
            x_norm = _scaled_norm_one(fresh_spectrum.scale if fresh_finite else new_scale.tolist()[0], x_new)
        # Δ at the rounding level of x: no representable step is left (MINPACK's info = 7)
        stalled = radius <= eps * x_norm
        previous_failure = o.value(state.failure)
        failure = o.where(stalled, int(Status.STALLED), previous_failure)
        # stalling because every trial point was NaN/Inf is a non-finite failure, not a plateau
        failure = o.where(stalled & o.not_(finite), int(Status.NONFINITE), failure)
        failure = o.where(fresh_finite, failure, int(Status.NONFINITE))
        unchanged = not o.batched and failure == previous_failure
        still_first = first_step & o.not_(accept)
        return replace(state, x=x_new, F=F_new, J=J_new, cost=cost, grad=grad,
                       step_norm=o.pack(radius, state.step_norm), reduction=o.pack(reduction, state.reduction),
                       failure=state.failure if unchanged else o.pack(failure, state.failure), scaling=new_scale,
                       scale=column_norms, radius=o.pack(radius, state.radius) if o.batched else radius,
                       damping=o.pack(damping, state.damping) if o.batched else damping,
                       gradient_cosine=cosine, saturated=saturated,
                       first_step=o.pack(still_first, state.first_step) if o.batched else still_first,
                       singular=fresh.singular,
                       vectors=fresh.vectors, coefficients=fresh.coefficients, significant=fresh.significant,
                       spectrum=fresh_spectrum, residual_norm=None if o.batched else o.where(accept, trial_norm, F_norm))

    def terminate(self, problem: ResidualProblem, state: LevenbergMarquardtState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: LevenbergMarquardtState) -> dict:
        return record(state)


def _update_radius(radius, damping, p_norm, ratio, actual, directional, worse):
    """MINPACK's radius update (Moré 1978, §4), per member: (B,) tensors or one member's floats.

    Poor fit (ρ ≤ ¼): Δ ← μ·min(Δ, 10‖Dp‖) and λ ← λ/μ, with μ = ½ for a decrease, else the
    minimizer of the quadratic through the relative decrease at 0 and 1 along p (slope
    ``directional``) clipped to [1/10, ½]; 1/10 for a trial ten times worse or non-finite.
    Good fit (ρ ≥ ¾) or a Gauss–Newton step (λ = 0): Δ ← 2‖Dp‖, λ ← λ/2.
    """
    o = ops_of(radius)
    denominator = directional + 0.5 * actual
    interpolated = 0.5 * directional / o.where(denominator != 0, denominator, 1.0)
    mu = o.where(actual >= 0, 0.5, interpolated)
    mu = o.where(worse | (mu < 0.1) | o.not_(o.isfinite(mu)), 0.1, mu)
    poor = ratio <= 0.25
    good = o.not_(poor) & ((damping == 0) | (ratio >= 0.75))
    new_radius = o.where(poor, mu * o.minimum(radius, 10 * p_norm), o.where(good, 2 * p_norm, radius))
    new_damping = o.where(poor, damping / mu, o.where(good, 0.5 * damping, damping))
    return new_radius, new_damping


def _first_order(norms: torch.Tensor, F_norm: torch.Tensor, grad: torch.Tensor,
                 scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the gradient cosine maxⱼ |Jⱼᵀ F| / (‖Jⱼ‖ ‖F‖) over the nonzero columns (0 for F = 0),
    whether some column has saturated), from the column norms ‖Jⱼ‖ and ‖F‖.

    Saturated: column j has vanished, ‖Jⱼ‖ ≤ ε·dⱼ (dⱼ its largest norm so far), while the
    residual still correlates with it, cosine > ε^¼. Such a column is below the rounding level of
    the scaled Jacobian, so the damped steps ignore it and become tiny although the point is not
    stationary in that parameter (NIST BOXBOD from its first start: b₂ runs to 111,
    ‖J_b₂‖ ≈ 1e-46, the cosine stays 0.64). The threshold ε^¼ (1.2e-4 in float64) separates that
    from a column that vanished at a stationary point, where the cosine is rounding noise.
    """
    column = norms * F_norm.unsqueeze(-1)
    positive = column > 0
    cosine = torch.where(positive, grad.abs() / torch.where(positive, column, torch.ones_like(column)),
                         torch.zeros_like(grad))
    eps = torch.finfo(norms.dtype).eps
    vanished = (norms > 0) & (norms <= eps * scale)
    return cosine.amax(-1), (vanished & positive & (cosine > eps ** 0.25)).any(-1)


def _first_order_floats(norms: list[float], F_norm: float, grad: list[float], scale: list[float],
                        eps: float) -> tuple[float, bool]:
    """:func:`_first_order` of one problem on Python floats (finite inputs)."""
    cosine, saturated = 0.0, False
    for length, g, d in zip(norms, grad, scale):
        column = length * F_norm
        c = abs(g) / column if column > 0 else 0.0
        cosine = c if c > cosine else cosine
        saturated = saturated or (0 < length <= eps * d and column > 0 and c > eps ** 0.25)
    return cosine, saturated


def _scaled_norm_one(d: list[float], x: torch.Tensor) -> float:
    """‖D x‖ of one problem's x (1, n), D = diag(d) as floats."""
    return math.sqrt(sum((a * b) * (a * b) for a, b in zip(d, x.tolist()[0])))


def _nonzero(norms: torch.Tensor) -> torch.Tensor:
    """Column norms as scales: 1 for a zero column."""
    return torch.where(norms > 0, norms, torch.ones_like(norms))
