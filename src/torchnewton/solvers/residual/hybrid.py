"""Powell's hybrid method for square systems F(x) = 0, with the rules of MINPACK's hybrj.

Moré, Garbow & Hillstrom, "User Guide for MINPACK-1" (ANL-80-74, 1980), §4 (hybrd/hybrj), after
Powell, "A hybrid method for nonlinear equations" (1970). Batched: every member keeps its own
scaling, radius, Jacobian approximation and counters. One step is one trial point:

* Scaling D: the column norms of the first Jacobian (1 for a zero column), then
  dⱼ ← max(dⱼ, ‖Jⱼ‖) at every Jacobian evaluation (MINPACK's mode 1), or a fixed user ``diag``.
* Step: the dogleg on the model ‖F + J p‖ with ‖D p‖ ≤ Δ, from the QR factors J = QR
  (Gauss–Newton p = −R⁻¹QᵀF, an exact zero on diag(R) replaced by eps·max|column|).
  Δ₀ = ``factor``·‖D x₀‖ (``factor`` if x₀ = 0), cut to ‖D p‖ until a step is accepted.
* Ratios: actred = 1 − (‖F(x+p)‖/‖F‖)² (−1 if ‖F‖ does not decrease), prered =
  1 − (‖F + J p‖/‖F‖)² (0 if the model does not decrease), ρ = actred/prered (0 if prered = 0).
* Radius: ρ < 0.1 halves Δ; else Δ ← max(Δ, 2‖Dp‖) when ρ ≥ ½ or after two good steps in a row,
  and Δ ← 2‖Dp‖ when |ρ − 1| ≤ 0.1. ρ ≥ 10⁻⁴ accepts the step.
* Jacobian: after every trial (accepted or not) J takes Broyden's rank-one update in the scaled
  norm, J ← J + (F(x+p) − F − J p)(D²p)ᵀ/‖Dp‖²; two failures in a row (ρ < 0.1) evaluate it afresh
  instead (and, before the first accepted step, restart D and Δ as at x₀).
* Stops (``Status.STALLED``): 0.1·max(0.1Δ, ‖Dp‖) ≤ eps·‖Dx‖ (MINPACK's info 3), five Jacobian
  evaluations in a row whose first trial reduced ‖F‖² by less than 10 % (info 4), ten trials in a
  row reducing it by less than 0.1 % (info 5). Success is the caller's test on ‖F‖ (MINPACK's
  xtol test, which can stop with ‖F‖ large, is not used).

The QR of the updated J is recomputed each step (one batched Householder QR) rather than updated
by Givens rotations as MINPACK's r1updt: the same factors up to signs and rounding, and for the
small dense systems this method is meant for one LAPACK call beats 2n small batched rotations.
One problem on the CPU keeps ratios, radius and counters as Python floats (``globalize.members``)
and, after one read-back of x, F, D, Q, R and J a step, takes the dogleg (``scaled_dogleg_floats``),
the ratios and Broyden's update on floats: equal to the batch's iterates to round-off.

Example:
    >>> from torchnewton.solvers.loop import iterate
    >>> from torchnewton.solvers.residual.termination import RootTermination
    >>> problem = ResidualProblem(lambda x: x**3 - 8)
    >>> method = PowellHybrid(RootTermination(1e-12))
    >>> iterate(method, problem, torch.ones(1, 1, dtype=torch.float64), max_iter=50).state.x
    tensor([[2.]], dtype=torch.float64)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ...core.status import Status
from ...globalize.members import lean, ops_for
from ...globalize.trust_region import dogleg, dogleg_floats
from ...linear.batched import matvec, rmatvec
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from .termination import Termination



@dataclass
class HybridState(ResidualState):
    J: torch.Tensor  # (B, n, n) the Jacobian approximation at x (evaluated or Broyden-updated)
    diag: torch.Tensor  # (B, n) the scaling D
    radius: torch.Tensor  # Δ, the bound on ‖D p‖
    x_norm: torch.Tensor  # ‖D x‖ at the last accepted point (MINPACK's xnorm)
    successes: torch.Tensor  # consecutive trials with ρ ≥ 0.1 (ncsuc)
    failures: torch.Tensor  # consecutive trials with ρ < 0.1 (ncfail)
    slow_trials: torch.Tensor  # consecutive trials with actred < 10⁻³ (nslow1)
    slow_jacobians: torch.Tensor  # consecutive fresh Jacobians whose first trial had actred < 0.1 (nslow2)
    evaluated: torch.Tensor  # bool: J was evaluated at x, not updated, since the last trial (jeval)
    recompute: torch.Tensor  # bool: evaluate J afresh before the next trial
    first: torch.Tensor  # bool: no step accepted yet (MINPACK's iter = 1)
    # One problem (lean path): Δ, ‖D x‖, the counters and the flags above are Python numbers, which
    # only this method reads (the loop and the termination read the ResidualState fields).
    residual_norm: float | None = None  # ‖F‖ for one problem (lean path), as the last step computed it


def _norm(v: torch.Tensor) -> torch.Tensor:
    """‖v‖ over the last dim (``Tensor.norm`` without its Python dispatch: the same kernel)."""
    return torch.linalg.vector_norm(v, dim=-1)


def column_norms(J: torch.Tensor) -> torch.Tensor:
    """‖Jⱼ‖ for every column j, (B, n)."""
    return torch.linalg.vector_norm(J, dim=-2)


def check_scaling(diag: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """A user ``diag`` as a (B, n) tensor like x; ValueError/TypeError unless positive and finite."""
    if diag is None:
        return None
    if not isinstance(diag, torch.Tensor) or not diag.is_floating_point():
        raise TypeError(f"options['diag'] must be a floating-point tensor, got {type(diag).__name__}")
    if diag.shape not in (x.shape[1:], x.shape):
        raise ValueError(f"options['diag'] must have shape {tuple(x.shape[1:])} (or {tuple(x.shape)} batched), "
                         f"got {tuple(diag.shape)}")
    if not bool(torch.isfinite(diag).all() and (diag > 0).all()):
        raise ValueError("options['diag'] must hold positive finite scale factors")
    return diag.to(dtype=x.dtype, device=x.device).expand_as(x).clone()


def gauss_newton_from_qr(R: torch.Tensor, qtf: torch.Tensor) -> torch.Tensor:
    """−R⁻¹ Qᵀ F, an exact zero pivot replaced by eps·max|Rᵢⱼ| over its column (eps if that is 0)."""
    eps = torch.finfo(R.dtype).eps
    pivots = torch.diagonal(R, dim1=-2, dim2=-1)
    column_max = R.abs().amax(dim=-2)
    substitute = torch.where(column_max > 0, eps * column_max, torch.full_like(column_max, eps))
    safe = torch.where(pivots == 0, substitute, pivots)
    R_safe = R - torch.diag_embed(pivots) + torch.diag_embed(safe)
    return -torch.linalg.solve_triangular(R_safe, qtf.unsqueeze(-1), upper=True).squeeze(-1)


def scaled_dogleg(R: torch.Tensor, qtf: torch.Tensor, diag: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """min ‖qtf + R p‖ over the dogleg path with ‖D p‖ ≤ Δ (MINPACK's dogleg), batched.

    In y = D p the model is ‖qtf + R D⁻¹ y‖: gradient g = D⁻¹RᵀQᵀF, curvature along it ‖R D⁻¹ g‖²,
    Newton point D p_GN; the dogleg there is the classic one (``globalize.trust_region.dogleg``).
    """
    newton = gauss_newton_from_qr(R, qtf)
    gradient = rmatvec(R, qtf) / diag
    Rg = matvec(R, gradient / diag)
    return dogleg(diag * newton, gradient, (Rg * Rg).sum(-1), radius) / diag


def scaled_dogleg_floats(R: list[list[float]], qtf: list[float], diag: list[float], radius: float,
                         eps: float, tiny: float) -> tuple[list[float], float, float, list[float]]:
    """:func:`scaled_dogleg` of one problem on Python floats (R by rows; ``eps`` and ``tiny`` the
    dtype's): (p, ‖D p‖, ‖QᵀF + R p‖, |diag(R)|). The Gauss–Newton point by back substitution (the
    zero pivots substituted as in :func:`gauss_newton_from_qr`), the legs by ``dogleg_floats``:
    for the n ≤ 10 systems of a single solve a few hundred float operations cost less than the
    dozen small torch calls of the tensor path (equal to round-off).

    Example:
        >>> p, p_norm, model_norm, pivots = scaled_dogleg_floats([[2.0, 0.0], [0.0, 1.0]], [2.0, 1.0],
        ...                                                       [1.0, 1.0], 10.0, 2.2e-16, 2.2e-308)
        >>> p, model_norm
        ([-1.0, -1.0], 0.0)
    """
    n = len(qtf)
    pivots = [abs(R[i][i]) for i in range(n)]
    safe = [R[j][j] for j in range(n)]
    for j in range(n):
        if safe[j] == 0:
            column_max = max(abs(R[i][j]) for i in range(n))
            safe[j] = eps * column_max if column_max > 0 else eps
    solution = [0.0] * n
    for i in range(n - 1, -1, -1):
        solution[i] = (qtf[i] - sum(R[i][j] * solution[j] for j in range(i + 1, n))) / safe[i]
    scaled_newton = [-(a * b) for a, b in zip(diag, solution)]
    gradient = [sum(R[i][j] * qtf[i] for i in range(n)) / diag[j] for j in range(n)]
    direction = [g / d for g, d in zip(gradient, diag)]
    curvature = sum(v * v for v in (sum(a * b for a, b in zip(row, direction)) for row in R))
    y = dogleg_floats(scaled_newton, gradient, curvature, radius, tiny)
    p = [a / b for a, b in zip(y, diag)]
    model = [q + sum(a * b for a, b in zip(row, p)) for q, row in zip(qtf, R)]
    return (p, math.sqrt(sum((a * b) * (a * b) for a, b in zip(diag, p))), math.sqrt(sum(v * v for v in model)),
            pivots)


def _rows(flat: list[float], start: int, n: int) -> list[list[float]]:
    """The n × n matrix stored row by row in ``flat`` from ``start``."""
    return [flat[start + i * n:start + (i + 1) * n] for i in range(n)]


@dataclass
class PowellHybrid:
    """hybrj's iteration (see the module docstring); ``factor`` bounds the first step, ``diag``
    (B, n) fixes the scaling (MINPACK's mode 2) instead of taking it from the Jacobian."""

    termination: Termination
    factor: float = 100.0
    diag: torch.Tensor | None = None

    def __post_init__(self):
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)) or not self.factor > 0 \
                or self.factor == float("inf"):
            raise ValueError(f"options['factor'] must be a positive finite number, got {self.factor!r}")

    def _initial_radius(self, x_norm: torch.Tensor) -> torch.Tensor:
        return torch.where(x_norm > 0, self.factor * x_norm, torch.full_like(x_norm, self.factor))

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> HybridState:
        F, J = problem.linearize(x0)
        norms = column_norms(J)
        diag = torch.where(norms > 0, norms, torch.ones_like(norms)) if self.diag is None else self.diag
        x_norm = (diag * x0).norm(dim=-1)
        batch = x0.shape[0]
        counter = lambda: torch.zeros(batch, dtype=torch.long, device=x0.device)
        flag = lambda value: torch.full((batch,), value, dtype=torch.bool, device=x0.device)
        # Jᵀ F is never formed (nothing reads it: J is a Broyden approximation between evaluations)
        if lean(x0):
            x_norm = x_norm.item()
            return HybridState(**initial_state(x0, F), J=J, diag=diag,
                               radius=self.factor * x_norm if x_norm > 0 else self.factor, x_norm=x_norm,
                               successes=0, failures=0, slow_trials=0, slow_jacobians=0, evaluated=True,
                               recompute=False, first=True, residual_norm=_norm(F).item())
        return HybridState(**initial_state(x0, F), J=J, diag=diag,
                           radius=self._initial_radius(x_norm), x_norm=x_norm, successes=counter(),
                           failures=counter(), slow_trials=counter(), slow_jacobians=counter(),
                           evaluated=flag(True), recompute=flag(False), first=flag(True))

    def _refresh(self, problem: ResidualProblem, state: HybridState, refresh: torch.Tensor) -> HybridState:
        """Evaluate J at x where ``refresh``; rescale, and restart Δ before any accepted step."""
        J_new = problem.jacobian(state.x)
        norms = column_norms(J_new)
        diag = state.diag
        if not isinstance(refresh, torch.Tensor):  # one problem, to be refreshed: its scalars are floats
            if self.diag is None:
                diag = torch.maximum(torch.where(norms > 0, norms, torch.ones_like(norms)) if state.first else diag,
                                     norms)
            if not state.first:
                return replace(state, J=J_new, diag=diag, evaluated=True)
            x_norm = _norm(diag * state.x).item()
            return replace(state, J=J_new, diag=diag, x_norm=x_norm, evaluated=True,
                           radius=self.factor * x_norm if x_norm > 0 else self.factor)
        if self.diag is None:
            restart = torch.where(norms > 0, norms, torch.ones_like(norms))
            diag = torch.where((refresh & state.first).unsqueeze(-1), restart, diag)
            diag = torch.where(refresh.unsqueeze(-1), torch.maximum(diag, norms), diag)
        reset = refresh & state.first
        x_norm = torch.where(reset, (diag * state.x).norm(dim=-1), state.x_norm)
        return replace(state, J=torch.where(refresh.view(-1, 1, 1), J_new, state.J), diag=diag, x_norm=x_norm,
                       radius=torch.where(reset, self._initial_radius(x_norm), state.radius),
                       evaluated=state.evaluated | refresh)

    def step(self, problem: ResidualProblem, state: HybridState, running: torch.Tensor) -> HybridState:
        # per-member scalars through ``o``: (B,) tensors, or Python floats for one problem (lean path)
        # (one problem: a member still stepped is running, and unchanged fields are not packed again)
        o = ops_for(state.x)
        own = o.value if o.batched else lambda v: v  # this method's own per-member fields (see HybridState)
        refresh = state.recompute & running if o.batched else state.recompute
        previous_recompute = own(refresh)
        if o.any(previous_recompute):
            state = self._refresh(problem, state, refresh)
        x, F, J, diag = state.x, state.F, state.J, state.diag
        Q, R = torch.linalg.qr(J)
        problem.counters.nlinsolve += 1
        previous_radius = own(state.radius)
        eps, tiny = torch.finfo(x.dtype).eps, torch.finfo(x.dtype).tiny
        if o.batched:
            qtf = rmatvec(Q, F)
            p = scaled_dogleg(R, qtf, diag, state.radius)
            pivots = torch.diagonal(R, dim1=-2, dim2=-1).abs()
            singular = pivots.amin(-1) <= x.shape[-1] * eps * pivots.amax(-1)
            p_norm = _norm(diag * p)
        else:  # one read-back of x, F, D, Q, R and J; the step, its norms and Broyden's update on floats
            n = x.shape[-1]
            flat = torch.cat([x, F, diag, Q.reshape(1, -1), R.reshape(1, -1), J.reshape(1, -1)], -1).tolist()[0]
            xs, fs, d = flat[:n], flat[n:2 * n], flat[2 * n:3 * n]
            Qs, Rs, Js = (_rows(flat, 3 * n + k * n * n, n) for k in range(3))
            qtf = [sum(Qs[k][i] * fs[k] for k in range(n)) for i in range(n)]
            p_list, p_norm, model_norm, pivots = scaled_dogleg_floats(Rs, qtf, d, previous_radius, eps, tiny)
            p = x.new_tensor([p_list])
            singular = min(pivots) <= x.shape[-1] * eps * max(pivots)
        first = own(state.first)
        radius = o.where(first, o.minimum(previous_radius, p_norm), previous_radius)

        x_trial = x + p
        F_trial = problem.residual(x_trial)
        f_norm = state.residual_norm if not o.batched else _norm(F)
        if o.batched:
            trial_norm = _norm(F_trial)
        else:
            trial_list = F_trial.tolist()[0]
            trial_norm = math.sqrt(sum(v * v for v in trial_list))
        safe_norm = o.where(f_norm > 0, f_norm, 1.0)
        finite = o.isfinite(trial_norm)
        trial_fraction = trial_norm / safe_norm
        actual = o.where(finite & (trial_norm < f_norm), 1 - trial_fraction * trial_fraction, -1.0)
        if o.batched:
            model_norm = _norm(qtf + matvec(R, p))
        model_fraction = model_norm / safe_norm
        predicted = o.where(model_norm < f_norm, 1 - model_fraction * model_fraction, 0.0)
        ratio = o.where(predicted > 0, actual / o.where(predicted > 0, predicted, 1.0), 0.0)

        good = ratio >= 0.1
        counters = [own(c) for c in (state.successes, state.failures, state.slow_trials, state.slow_jacobians)]
        successes = o.where(good, counters[0] + 1, 0)
        failures = o.where(good, 0, counters[1] + 1)
        grown = o.where((ratio >= 0.5) | (successes > 1), o.maximum(radius, 2 * p_norm), radius)
        grown = o.where(abs(ratio - 1) <= 0.1, 2 * p_norm, grown)
        radius = o.where(good, grown, 0.5 * radius)

        accept = ratio >= 1e-4
        if o.batched:
            x_new, F_new = torch.where(accept.unsqueeze(-1), x_trial, x), torch.where(accept.unsqueeze(-1), F_trial, F)
            x_norm = torch.where(accept, _norm(diag * x_new), state.x_norm)
        else:
            x_new, F_new = (x_trial, F_trial) if accept else (x, F)
            x_norm = math.sqrt(sum((a * (b + c)) * (a * (b + c)) for a, b, c in zip(d, xs, p_list))) if accept \
                else state.x_norm
        slow_trials = o.where(actual >= 1e-3, 0, counters[2] + 1)
        evaluated = own(state.evaluated)
        slow_jacobians = o.where(actual >= 0.1, 0, counters[3] + (evaluated.long() if o.batched else int(evaluated)))

        stalled = (0.1 * o.maximum(0.1 * radius, p_norm) <= eps * x_norm) | (slow_jacobians >= 5) | \
            (slow_trials >= 10)
        failure = o.where(stalled, int(Status.STALLED), o.value(state.failure))
        # stalling because the trial points were NaN/Inf is a non-finite failure, not a plateau
        failure = o.where(stalled & o.not_(finite), int(Status.NONFINITE), failure)

        recompute = failures == 2
        update = o.not_(recompute) & finite & (p_norm > 0)
        if o.batched:
            J_new = self._broyden_update(J, p, p_norm, F_trial - F, diag, update)
            cost_new = 0.5 * (F_new * F_new).sum(-1)
        else:
            J_new = J.new_tensor([_broyden_floats(Js, p_list, p_norm, [a - b for a, b in zip(trial_list, fs)], d)]) \
                if update else J
            cost_new = o.pack(0.5 * sum(v * v for v in trial_list), state.cost) if accept else state.cost
        cost = o.value(state.cost)
        reduction = o.where(accept, (cost - o.value(cost_new)) / o.clamp(cost, min=torch.finfo(x.dtype).tiny),
                            float("inf"))
        new = dict(step_norm=o.where(finite, p_norm, float("inf")), reduction=reduction, failure=failure,
                   regularized=singular)
        own_fields = dict(radius=radius, x_norm=x_norm, successes=successes, failures=failures,
                          slow_trials=slow_trials, slow_jacobians=slow_jacobians, recompute=recompute,
                          first=first & o.not_(accept), evaluated=o.full(evaluated, False))
        if o.batched:
            new.update(own_fields)
        else:  # the own fields stay floats; a state field whose value stays needs no new tensor
            old = dict(step_norm=None, reduction=None, failure=o.value(state.failure),
                       regularized=o.value(state.regularized))
            new = {k: getattr(state, k) if v == old[k] else o.pack(v, getattr(state, k)) for k, v in new.items()}
            new.update(own_fields)
        return replace(state, x=x_new, F=F_new, cost=cost_new, J=J_new, **new,
                       residual_norm=None if o.batched else trial_norm if accept else f_norm)

    @staticmethod
    def _broyden_update(J: torch.Tensor, p: torch.Tensor, p_norm: torch.Tensor, change: torch.Tensor,
                        diag: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """J + (ΔF − J p)(D²p)ᵀ/‖Dp‖² where ``update``, else J."""
        scaled = diag * diag * p / torch.where(update, p_norm * p_norm, 1.0).unsqueeze(-1)
        broyden = torch.addcmul(J, (change - matvec(J, p)).unsqueeze(-1), scaled.unsqueeze(-2))
        return torch.where(update.view(-1, 1, 1), broyden, J)

    def terminate(self, problem: ResidualProblem, state: HybridState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: HybridState) -> dict:
        return record(state)


def _broyden_floats(J: list[list[float]], p: list[float], p_norm: float, change: list[float],
                    diag: list[float]) -> list[list[float]]:
    """:meth:`PowellHybrid._broyden_update` of one problem on floats: J + (ΔF − J p)(D²p)ᵀ/‖Dp‖²."""
    scale = p_norm * p_norm
    v = [d * d * pj / scale for d, pj in zip(diag, p)]
    u = [c - sum(a * b for a, b in zip(row, p)) for c, row in zip(change, J)]
    return [[a + ui * vj for a, vj in zip(row, v)] for ui, row in zip(u, J)]
