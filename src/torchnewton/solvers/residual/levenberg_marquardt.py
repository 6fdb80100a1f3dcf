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
per Jacobian (``ScaledSpectrum``, one ``tolist`` per tensor): every λ search, the judgment of
the trial and the termination test run the shared rules on Python floats (``FloatOps``), the trial
step p(λ) with its model value ‖J p‖ = ‖diag(σ) w c‖ is float arithmetic
(``ScaledSpectrum.trial``), and in float64 x + p is a sum of floats. The same formulas, summed in
another order: the iterates agree with the batch's to round-off.
Its own step (``_step_one``) keeps x, the column norms and the per-member scalars on the host too
(``_OneProblem``), so that neither the step nor the termination test reads a tensor back: per
iteration it makes a tensor only where the user function or the state needs one (x + p, F and J,
the decomposition, the scalars as views of one array), and the state's views and masks are made
in numpy and wrapped by ``from_numpy``. What remains per accepted step is three torch kernels
(the column norms, the SVD, c = UᵀF), whose bits the iterates depend on: right after the user's
function each costs several times its warm time (the function has evicted the dispatcher from
the caches), and they dominate the step's own time.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ...core.status import Status
from ...globalize.damping import ScaledJacobian, ScaledSpectrum, levenberg_marquardt_parameter
from ...globalize.members import FloatOps, TensorOps, ops_for, ops_of
from ...linear.batched import matvec, rmatvec
from ..evolve import evolve
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from .termination import LeastSquaresTermination, Termination


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
    one: "_OneProblem | None" = None


@dataclass
class _OneProblem:
    """One problem's numbers on the host (the lean path), so that a step and the termination test
    read no tensor back: ``x`` and ``column_norms`` are (1, n) arrays in x's dtype that the state's
    ``x`` and ``scale`` view (no copies), ``x_list`` is x as floats; the other fields are the
    state's per-member scalars as Python numbers, rounded to x's dtype as the tensors hold them;
    ``column_list`` is ``column_norms`` as floats."""

    x: np.ndarray
    x_list: list[float]
    column_norms: np.ndarray
    column_list: list[float]
    cost: float
    cosine: float
    step_norm: float
    reduction: float
    saturated: bool
    failure: int


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
    column_host: np.ndarray | None = None  # one problem: the column norms (1, n) that ``column_norms`` views
    column_list: list[float] | None = None  # ... and as floats


def _linearize(J: torch.Tensor, F: torch.Tensor, F_norm: torch.Tensor, previous: torch.Tensor | None) -> _Linearization:
    """The linearization of a batch at (F, J), with D ← max(``previous``, ‖Jⱼ‖) (``previous`` None:
    the first point); ``F_norm`` is ‖F‖ per member."""
    norms, grad = J.norm(dim=-2), rmatvec(J, F)
    column = _nonzero(norms)
    scaling = column if previous is None else torch.maximum(previous, column)
    decomposition = ScaledJacobian.of(J, F, scaling)
    cosine, saturated = _first_order(norms, F_norm, grad, scaling)
    return _Linearization(scaling, column, decomposition, grad, cosine, saturated, decomposition.finite)


def _linearize_one(J: torch.Tensor, F: torch.Tensor, F_norm: float, previous: list[float] | None) -> _Linearization:
    """:func:`_linearize` of one problem on the CPU (``previous``: the last D as floats), in about a
    dozen calls instead of thirty: D and the decomposition bitwise as the batch's (the same torch
    reductions and SVD, see :meth:`ScaledJacobian.of_one`), the rest on the ``.numpy()`` views
    (no copies) and Python floats. Jᵀ F is one numpy product, equal to the batch's to round-off: it
    feeds only the first-order test and ``Result.grad``."""
    J_host, F_host = _host(J)[0], _host(F)[0]
    norm_list = torch.linalg.vector_norm(J, dim=-2).tolist()[0]  # J.norm's kernel, without its Python wrapper
    grad_host = F_host @ J_host
    grad = torch.from_numpy(grad_host[None])
    column_list = [v if v > 0 else 1.0 for v in norm_list]  # _nonzero (a NaN norm gives 1 there too)
    scaling_list = column_list if previous is None else [a if a >= b else b for a, b in zip(previous, column_list)]
    column_host = np.array([column_list], dtype=J_host.dtype)
    column = torch.from_numpy(column_host)
    # a column norm is finite exactly when the column is (short of overflowing the norm itself)
    if not (math.isfinite(F_norm) and all(map(math.isfinite, norm_list))):
        scaling = J.new_tensor([scaling_list])
        decomposition = ScaledJacobian.of(J, F, scaling, finite=False)
        return _Linearization(scaling, column, decomposition, grad, math.nan, False, False, column_host=column_host,
                              column_list=column_list)
    decomposition, spectrum = ScaledJacobian.of_one(J, F, scaling_list)
    cosine, saturated = _first_order_floats(norm_list, F_norm, grad_host.tolist(), scaling_list, _limits(J.dtype)[1])
    return _Linearization(decomposition.scale, column, decomposition, grad, cosine, saturated, True, spectrum,
                          column_host, column_list)


def _host(t: torch.Tensor) -> np.ndarray:
    """The ``.numpy()`` view of a CPU tensor (a tensor that requires grad is detached first)."""
    return t.detach().numpy() if t.requires_grad else t.numpy()


@dataclass
class LevenbergMarquardt:
    termination: Termination
    initial_radius: float = 1.0
    accept_ratio: float = 1e-4

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> LevenbergMarquardtState:
        F, J = problem.linearize(x0)
        o = ops_for(x0)
        F_norm = F.norm(dim=-1) if o.batched else o.norm(F)
        point = _linearize(J, F, F_norm, None) if o.batched else _linearize_one(J, F, F_norm, None)
        fields = initial_state(x0, F, point.grad)
        fields["scale"] = point.column_norms
        if o.batched:
            x_norm = (point.scaling * x0).norm(dim=-1)
            radius = self.initial_radius * torch.where(x_norm > 0, x_norm, torch.ones_like(x_norm))
            own = dict(radius=radius, damping=torch.zeros_like(radius),
                       first_step=torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device))
        else:  # Δ, λ and first_step of one problem are Python numbers
            x_norm = _scaled_norm(point.spectrum.scale if point.finite else point.scaling.tolist()[0], x0.tolist()[0])
            own = dict(radius=self.initial_radius * (x_norm if x_norm > 0 else 1.0), damping=0.0, first_step=True)
        if o.batched or not point.finite:
            fields["failure"] = o.pack(o.where(point.finite, o.value(fields["failure"]), int(Status.NONFINITE)),
                                       fields["failure"])
        decomposition = point.decomposition
        state = LevenbergMarquardtState(
            **fields, J=J, scaling=point.scaling, **own,
            gradient_cosine=o.pack(point.cosine, fields["cost"]),
            saturated=o.pack(point.saturated, fields["regularized"]),
            singular=decomposition.singular, vectors=decomposition.vectors,
            coefficients=decomposition.coefficients, significant=decomposition.significant, spectrum=point.spectrum,
            residual_norm=None if o.batched else F_norm)
        if not o.batched:
            x_host = _host(x0)
            cost, cosine, step_norm, reduction = o.values(state.cost, state.gradient_cosine, state.step_norm,
                                                          state.reduction)
            state.one = _OneProblem(x_host, x_host.tolist()[0], point.column_host, point.column_list, cost, cosine,
                                    step_norm, reduction, o.value(state.saturated), o.value(state.failure))
        return state

    def step(self, problem: ResidualProblem, state: LevenbergMarquardtState, running: torch.Tensor) -> LevenbergMarquardtState:
        if state.one is not None:
            return self._step_one(problem, state)
        o = TensorOps  # per-member scalars as (B,) tensors
        x, F, J, scale = state.x, state.F, state.J, state.scaling
        tiny, eps = _limits(x.dtype)
        decomposition = ScaledJacobian(state.singular, state.vectors, state.coefficients, scale, state.significant)
        damping = levenberg_marquardt_parameter(decomposition, state.radius, state.damping, dtype=x.dtype)
        p, p_norm = decomposition.step(damping)
        x_trial = x + p
        problem.counters.nlinsolve += 1
        first_step = state.first_step
        radius = o.where(first_step, o.minimum(state.radius, p_norm), state.radius)
        F_trial = problem.residual(x_trial)
        F_norm, trial_norm = F.norm(dim=-1), F_trial.norm(dim=-1)
        ratio, radius, damping, reduction, finite = _assess(o, F_norm, trial_norm, matvec(J, p).norm(dim=-1), p_norm,
                                                            damping, radius, tiny)
        accept = ratio >= self.accept_ratio
        x_new, F_new = o.where(accept, x_trial, x), o.where(accept, F_trial, F)
        J_new, new_scale, fresh, grad, cost = J, scale, decomposition, state.grad, state.cost
        column_norms, cosine, saturated = state.scale, state.gradient_cosine, state.saturated
        # no new point: the decomposition at x stays (finite, or the member already ended NONFINITE)
        if o.any(accept):
            J_new = o.where(accept, problem.jacobian(x_new), J)
            F_new_norm = F_new.norm(dim=-1)
            point = _linearize(J_new, F_new, F_new_norm, scale)
            new_scale, grad = point.scaling, point.grad
            cost = o.where(accept, 0.5 * (F_new_norm * F_new_norm), state.cost)
            column_norms = o.where(accept, point.column_norms, state.scale)
            cosine = o.where(accept, point.cosine, state.gradient_cosine)
            saturated = o.where(accept, point.saturated, state.saturated)
            keep = ~accept
            fresh = ScaledJacobian(*(torch.where(keep.view(keep.shape + (1,) * (new.dim() - 1)), old, new)
                                     for old, new in ((decomposition.singular, point.decomposition.singular),
                                                      (decomposition.vectors, point.decomposition.vectors),
                                                      (decomposition.coefficients, point.decomposition.coefficients),
                                                      (scale, point.decomposition.scale),
                                                      (decomposition.significant, point.decomposition.significant))))
        x_norm = (new_scale * x_new).norm(dim=-1)
        # Δ at the rounding level of x: no representable step is left (MINPACK's info = 7)
        stalled = radius <= eps * x_norm
        failure = o.where(stalled, int(Status.STALLED), state.failure)
        # stalling because every trial point was NaN/Inf is a non-finite failure, not a plateau
        failure = o.where(stalled & o.not_(finite), int(Status.NONFINITE), failure)
        failure = o.where(fresh.finite, failure, int(Status.NONFINITE))
        return replace(state, x=x_new, F=F_new, J=J_new, cost=cost, grad=grad, step_norm=radius, reduction=reduction,
                       failure=failure, scaling=new_scale, scale=column_norms, radius=radius, damping=damping,
                       gradient_cosine=cosine, saturated=saturated, first_step=first_step & o.not_(accept),
                       singular=fresh.singular, vectors=fresh.vectors, coefficients=fresh.coefficients,
                       significant=fresh.significant)

    def _step_one(self, problem: ResidualProblem, state: LevenbergMarquardtState) -> LevenbergMarquardtState:
        """:meth:`step` of one problem on the CPU: the same arithmetic as the batch's, on the host
        numbers of ``state.one`` and the decomposition as floats (``state.spectrum``). A tensor is
        built only where the user function or the state needs one: x + p as a view of its array,
        the per-member scalars as views of one array, the rest as on the batched path."""
        one, spectrum = state.one, state.spectrum
        tiny, eps = _limits(state.x.dtype)
        damping = levenberg_marquardt_parameter(spectrum, state.radius, state.damping, dtype=state.x.dtype)
        p, p_norm, model_norm = spectrum.trial(damping)
        # x + p: the same IEEE additions in x's dtype as the batch's tensor sum (in float64 those
        # of Python's floats, so the floats need no read-back)
        double = one.x.dtype == np.float64
        if double:
            trial_list = [a + b for a, b in zip(one.x_list, p)]
            x_host = np.array([trial_list])
        else:
            x_host = one.x + np.array([p], dtype=one.x.dtype)
        x_trial = torch.from_numpy(x_host)
        problem.counters.nlinsolve += 1
        radius = FloatOps.minimum(state.radius, p_norm) if state.first_step else state.radius
        F_trial = problem.residual(x_trial)
        F_norm, trial_norm = state.residual_norm, FloatOps.norm(F_trial)
        ratio, radius, damping, reduction, finite = _assess(FloatOps, F_norm, trial_norm, model_norm, p_norm, damping,
                                                            radius, tiny)
        failure = one.failure
        if ratio >= self.accept_ratio:
            J = problem.jacobian(x_trial)
            point = _linearize_one(J, F_trial, trial_norm, spectrum.scale)
            cost, cosine, saturated = 0.5 * (trial_norm * trial_norm), point.cosine, point.saturated
            fresh_finite = point.finite
            D = point.spectrum.scale if fresh_finite else point.scaling.tolist()[0]
            x_list = trial_list if double else x_host.tolist()[0]
            decomposition = point.decomposition
            changes = dict(x=x_trial, F=F_trial, J=J, grad=point.grad, scaling=point.scaling, scale=point.column_norms,
                           singular=decomposition.singular, vectors=decomposition.vectors,
                           coefficients=decomposition.coefficients, significant=decomposition.significant,
                           spectrum=point.spectrum, residual_norm=trial_norm, first_step=False)
            if saturated != one.saturated:
                changes["saturated"] = torch.tensor([saturated])
            host = _OneProblem(x_host, x_list, point.column_host, point.column_list, cost, cosine, radius, reduction,
                               saturated, failure)
        else:  # no new point: the decomposition at x stays
            D, x_list, fresh_finite = spectrum.scale, one.x_list, True
            changes = {}
            host = _OneProblem(one.x, x_list, one.column_norms, one.column_list, one.cost, one.cosine, radius,
                               reduction, one.saturated, failure)
        # Δ at the rounding level of x: no representable step is left (MINPACK's info = 7)
        if radius <= eps * _scaled_norm(D, x_list):
            # stalling because every trial point was NaN/Inf is a non-finite failure, not a plateau
            failure = int(Status.STALLED) if finite else int(Status.NONFINITE)
        if not fresh_finite:
            failure = int(Status.NONFINITE)
        if failure != one.failure:
            host.failure = failure
            changes["failure"] = torch.tensor([failure])
        # the per-member scalars as the state's (1,) tensors: views of one array in x's dtype
        scalars = np.array([host.cost, host.cosine, radius, reduction], dtype=one.x.dtype)
        if not double:  # rounded to x's dtype, as the tensors hold them
            host.cost, host.cosine, host.step_norm, host.reduction = scalars.tolist()
        changes.update(cost=torch.from_numpy(scalars[0:1]), gradient_cosine=torch.from_numpy(scalars[1:2]),
                       step_norm=torch.from_numpy(scalars[2:3]), reduction=torch.from_numpy(scalars[3:4]),
                       radius=radius, damping=damping, one=host)
        return evolve(state, **changes)

    def terminate(self, problem: ResidualProblem, state: LevenbergMarquardtState):
        one = state.one
        if one is None or not isinstance(self.termination, LeastSquaresTermination) or not self.termination.scaled:
            return self.termination(state)
        # the floats the rules read, without a tensor: ‖D' x‖ with the products in x's dtype, as
        # the tensor product state.scale * state.x (Python's float products are float64's)
        if state.x.dtype == torch.float64:
            x_norm = math.sqrt(sum((d * v) * (d * v) for d, v in zip(one.column_list, one.x_list)))
        else:
            x_norm = math.sqrt(sum(v * v for v in (one.column_norms * one.x).tolist()[0]))
        return self.termination.decide(FloatOps, one.cosine, one.reduction, one.step_norm, one.cost, x_norm,
                                       all(map(math.isfinite, one.x_list)), one.saturated, one.failure, False,
                                       _limits(state.x.dtype)[0])

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
    # a NaN column norm fails ``> 0``: without this its cosine would read 0, a passed gradient test
    unknown = torch.isnan(column).any(-1) | torch.isnan(grad).any(-1)
    first_order = torch.where(unknown, torch.full_like(F_norm, math.nan), cosine.amax(-1))
    return first_order, (vanished & positive & (cosine > eps ** 0.25)).any(-1)


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


def _scaled_norm(d: list[float], x: list[float]) -> float:
    """‖D x‖ of one problem, D = diag(d) and x as floats."""
    return math.sqrt(sum((a * b) * (a * b) for a, b in zip(d, x)))


def _assess(o: Any, F_norm: Any, trial_norm: Any, model_norm: Any, p_norm: Any, damping: Any, radius: Any,
            tiny: float) -> tuple[Any, Any, Any, Any, Any]:
    """The trial step judged per member, (B,) tensors or one member's floats: (ρ, the updated Δ and
    λ, MINPACK's reduction measure, whether ‖F(x + p)‖ is finite), from ‖F‖, ‖F(x + p)‖, the
    model's ‖J p‖ and ‖D p‖ at the λ of the step."""
    safe_norm = o.clamp(F_norm, min=tiny)
    finite = o.isfinite(trial_norm)
    # a trial ten times worse (or non-finite) counts as actred = −1, as in MINPACK: no overflow
    relative = trial_norm / safe_norm
    actual = o.where(finite & (0.1 * trial_norm < F_norm), 1 - relative * relative, -1.0)
    model = model_norm / safe_norm
    step_ratio = p_norm / safe_norm
    model_term, damping_term = model * model, damping * (step_ratio * step_ratio)
    predicted = model_term + 2 * damping_term
    directional = -(model_term + damping_term)  # ½ d/dt ‖F + tJp‖²/‖F‖² at t = 0
    ratio = o.where(predicted > 0, actual / o.where(predicted > 0, predicted, 1.0), 0.0)
    radius, damping = _update_radius(radius, damping, p_norm, ratio, actual, directional,
                                     worse=o.not_(finite) | (0.1 * trial_norm >= F_norm))
    reduction = o.where(0.5 * ratio <= 1, o.maximum(abs(actual), predicted), float("inf"))
    return ratio, radius, damping, reduction, finite


@functools.cache
def _limits(dtype: torch.dtype) -> tuple[float, float]:
    """(smallest normal number, machine epsilon) of ``dtype``."""
    info = torch.finfo(dtype)
    return info.tiny, info.eps


def _nonzero(norms: torch.Tensor) -> torch.Tensor:
    """Column norms as scales: 1 for a zero column."""
    return torch.where(norms > 0, norms, torch.ones_like(norms))
