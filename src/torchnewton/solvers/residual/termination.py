"""Termination rules for residual methods: F(x) = 0 for root finding, scipy's rules for least squares.

The rules read per-member scalars through ``globalize.members``: (B,) tensors for a batch,
Python numbers for one problem on the CPU (the loop's lean path), where they return
``(done, status)`` as a bool and an int.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ...core.status import Status
from ...globalize.members import ops_for
from .state import ResidualState

Termination = Callable[[ResidualState], tuple[torch.Tensor, torch.Tensor]]
"""A termination test: state ↦ (done (B,) bool, status (B,) int) per member."""


def _failures(o: Any, state: ResidualState, success: Any, failure: Any = None, cost: Any = None) -> tuple[Any, Any]:
    """Combine success with the honest failure codes (``state.failure`` unless ``failure`` is
    given; ``cost``: the cost already read): non-finite beats everything."""
    cost = o.value(state.cost) if cost is None else cost
    failure = o.value(state.failure) if failure is None else failure
    return _statuses(o, success, failure, cost, o.all_finite(state.x), o.value(state.regularized))


def _statuses(o: Any, success: Any, failure: Any, cost: Any, x_finite: Any, regularized: Any) -> tuple[Any, Any]:
    """:func:`_failures` on the values read: (done, status) per member."""
    nonfinite = o.not_(o.isfinite(cost)) | o.not_(x_finite)
    failed = failure != 0
    # a member that failed on a singular system reports SINGULAR, not the symptom
    failure = o.where(regularized & failed & (failure != int(Status.NONFINITE)), int(Status.SINGULAR), failure)
    status = o.where(success, int(Status.SUCCESS), failure)
    status = o.where(nonfinite, int(Status.NONFINITE), status)
    done = nonfinite | success | failed
    return done, status


@dataclass
class RootTermination:
    """Converged when ‖F(x)‖∞ ≤ tol."""

    tol: float

    def __call__(self, state: ResidualState) -> tuple[Any, Any]:
        o = ops_for(state.x)
        success = o.max_abs(state.F) <= self.tol
        return _failures(o, state, success & o.isfinite(o.value(state.cost)))


@dataclass
class LeastSquaresTermination:
    """scipy.optimize.least_squares rules: a first-order test (≤ gtol), relative cost decrease
    ≤ ftol after a step the model predicted well, or ‖DΔx‖ ≤ xtol(xtol + ‖Dx‖) in the method's
    variable scaling D (as MINPACK); a zero residual also converges.

    The first-order test is ‖Jᵀr‖∞ ≤ gtol (scipy's trf). With ``scaled`` (Levenberg–Marquardt,
    whose state provides ``gradient_cosine`` and ``saturated``) it is MINPACK's scale-invariant
    cosine maxⱼ |Jⱼᵀr| / (‖Jⱼ‖‖r‖) ≤ gtol (scipy's lm), and the decrease and step tests do not
    count where the residual still points along a Jacobian column that has vanished (a
    parameter saturated, e.g. a rate in exp(−b x) run off to +∞): the steps there are small only
    because the model has lost that direction, so the member ends STALLED, not SUCCESS. What
    ``step_norm`` and ``reduction`` measure is the method's to say (Levenberg–Marquardt: the trust
    radius, and MINPACK's max(|actred|, prered)).
    """

    ftol: float
    xtol: float
    gtol: float
    scaled: bool = False

    def __call__(self, state: ResidualState) -> tuple[Any, Any]:
        o = ops_for(state.x)
        # the per-member floats in one read-back for one problem (``values``)
        if self.scaled:
            first_order, reduction, step_norm, cost = o.values(state.gradient_cosine, state.reduction,
                                                               state.step_norm, state.cost)
        else:
            reduction, step_norm, cost = o.values(state.reduction, state.step_norm, state.cost)
            first_order = o.max_abs(state.grad)
        x_norm = o.norm(state.scale * state.x)
        if not self.scaled:
            success = (first_order <= self.gtol) | self._small_change(reduction, step_norm, x_norm) | \
                (cost <= torch.finfo(state.cost.dtype).tiny)
            return _failures(o, state, success & o.isfinite(cost), cost=cost)
        return self.decide(o, first_order, reduction, step_norm, cost, x_norm, o.all_finite(state.x),
                           o.value(state.saturated), o.value(state.failure), o.value(state.regularized),
                           torch.finfo(state.cost.dtype).tiny)

    def _small_change(self, reduction: Any, step_norm: Any, x_norm: Any) -> Any:
        return (reduction <= self.ftol) | (step_norm <= self.xtol * (self.xtol + x_norm))

    def decide(self, o: Any, first_order: Any, reduction: Any, step_norm: Any, cost: Any, x_norm: Any,
               x_finite: Any, saturated: Any, failure: Any, regularized: Any, tiny: float) -> tuple[Any, Any]:
        """The ``scaled`` rules on the values they read (``x_norm`` = ‖D x‖, ``tiny`` the dtype's
        smallest normal number): a method that keeps one problem's numbers as Python floats
        (Levenberg–Marquardt's lean path) decides here without building the state's tensors."""
        small_change = self._small_change(reduction, step_norm, x_norm)
        success = ((first_order <= self.gtol) | (small_change & o.not_(saturated)) | (cost <= tiny)) & o.isfinite(cost)
        stalled = small_change & saturated & o.not_(success) & (failure == 0)
        return _statuses(o, success, o.where(stalled, int(Status.STALLED), failure), cost, x_finite, regularized)
