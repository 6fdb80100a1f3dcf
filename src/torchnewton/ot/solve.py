"""`sinkhorn`: the entropic optimal transport entry point (log-domain Sinkhorn, ε-scaling, SNS)."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..core.status import Status
from ..core.validate import check_method, check_options, check_positive
from ..solvers.loop import iterate
from . import dual
from .gradients import ImplicitPlan, RegularizedCost
from .hessian import free_coordinates
from .problem import TransportProblem, prepare
from .result import OTResult
from .sinkhorn import EpsilonScalingSinkhorn, LogSinkhorn
from .sparse_newton import SinkhornNewtonSparse

METHODS = ("sparse-newton", "sinkhorn", "sinkhorn-eps-scaling")
_OPTIONS = {
    "sparse-newton": ("drop_tol", "cg_max_iter", "shift0", "patience", "max_backtracks", "continuation_ratio",
                      "decay", "stage_tol", "max_dropped"),
    "sinkhorn": (),
    "sinkhorn-eps-scaling": ("decay", "stage_tol", "stage_max_iter", "eps0"),
}
_DEFAULT_MAX_ITER = {"sparse-newton": 1_000, "sinkhorn": 10_000, "sinkhorn-eps-scaling": 10_000}
DEFAULT_WARM_START_ITERS = 20


def default_tolerance(dtype: torch.dtype) -> float:
    """1e-9 (float64); 100·eps of lower precisions (1.2e-5 in float32), which they can reach."""
    return max(1e-9, 100 * float(torch.finfo(dtype).eps))


def sinkhorn(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, reg: float, *, method: str = "sparse-newton",
             tol: float | None = None, max_iter: int | None = None, warm_start_iters: int | None = None,
             sparsity: float | None = None, log: bool = False, callback: Callable[[Any], Any] | None = None,
             options: dict[str, Any] | None = None) -> OTResult:
    """Entropic optimal transport: min_P ⟨C, P⟩ + reg·Σ_ij P_ij(log P_ij − 1) s.t. P1 = a, Pᵀ1 = b.

    Solved through the concave dual max_{f,g} ⟨f, a⟩ + ⟨g, b⟩ − reg·Σ_ij exp((f_i + g_j − C_ij)/reg),
    whose maximizer gives P_ij = exp((f_i + g_j − C_ij)/reg). Methods:

    * ``"sparse-newton"`` (default): Sinkhorn–Newton–Sparse (Tang et al., "Accelerating Sinkhorn
      Algorithm with Sparse Newton Iterations", ICLR 2024): ``warm_start_iters`` Sinkhorn
      iterations, then Newton steps with a sparsified Hessian, CG, Armijo search and a Levenberg
      shift (:mod:`torchnewton.ot.sparse_newton`). Tens of iterations where Sinkhorn needs
      thousands at weak regularization; at strong regularization Sinkhorn is already fast and
      SNS's costlier iterations do not pay off.
    * ``"sinkhorn"``: log-domain Sinkhorn, stable for any reg > 0.
    * ``"sinkhorn-eps-scaling"``: log-domain Sinkhorn on a decreasing reg schedule.

    Args:
        a, b: nonnegative marginals (..., n) and (..., m) with equal sums; zero entries allowed
            (their rows/columns of the plan are exactly 0).
        C: cost (..., n, m), finite. Leading dimensions of a, b, C broadcast to one batch.
        reg: regularization ε > 0 (in the units of C).
        tol: stop when ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ ≤ tol (absolute); default 1e-9 in float64,
            1.2e-5 in float32.
        max_iter: iteration limit (Sinkhorn and Newton iterations together); default 1,000 for
            sparse-newton, 10,000 for the Sinkhorn methods.
        warm_start_iters: Sinkhorn iterations before Newton (sparse-newton only; default 20).
        sparsity: fraction of each row of P kept in the sparsified Hessian (sparse-newton only);
            default max(16, 4m/n) entries per row, i.e. O(1/n) density.
        log: record per-iteration ``history`` (marginal error, step kind).
        callback: ``callback(state)`` after every iteration (``state.f``, ``state.g``,
            ``state.error``, batch-flattened); returning True stops with ``CALLBACK_STOP``.
        options: method-specific settings: sparse-newton ``drop_tol``, ``cg_max_iter``, ``shift0``,
            ``patience``, ``max_backtracks``, ``continuation_ratio``, ``decay``, ``stage_tol``, ``max_dropped``;
            eps-scaling ``decay``, ``stage_tol``,
            ``stage_max_iter``, ``eps0`` (see the method classes).

    Returns:
        :class:`OTResult`. ``plan``, ``cost`` and ``reg_cost`` are differentiable with respect to
        ``a``, ``b`` and ``C`` (and whatever ``C`` was computed from): ``reg_cost`` by the
        envelope theorem, ``plan`` (hence ``cost``) by implicit differentiation; see
        :mod:`torchnewton.ot.gradients`. ``reg`` is a constant.

    Raises:
        ValueError / TypeError: negative marginals, unequal masses, shapes that do not fit C,
        non-finite values, reg ≤ 0, unknown methods or options.

    Example:
        >>> x, y = torch.rand(100, 2, dtype=torch.float64), torch.rand(120, 2, dtype=torch.float64)
        >>> a = torch.full((100,), 1 / 100, dtype=torch.float64)
        >>> b = torch.full((120,), 1 / 120, dtype=torch.float64)
        >>> res = sinkhorn(a, b, torch.cdist(x, y) ** 2, reg=1e-3)
        >>> bool(res.success), res.marginal_error < 1e-9  # doctest: +SKIP
        (True, tensor(True))
    """
    key = check_method(method, METHODS)
    problem = prepare(a, b, C, reg)
    tol = default_tolerance(problem.C.dtype) if tol is None else tol
    check_positive(tol, "tol")
    max_iter = _DEFAULT_MAX_ITER[key] if max_iter is None else max_iter
    check_positive(max_iter, "max_iter", integer=True)
    if key != "sparse-newton" and (warm_start_iters is not None or sparsity is not None):
        raise ValueError(f"warm_start_iters and sparsity apply to method='sparse-newton' only, not {method!r}")
    opts = check_options(options, _OPTIONS[key])
    if key == "sparse-newton":
        solver = _sparse_newton(problem, tol, warm_start_iters, sparsity, opts)
    elif key == "sinkhorn":
        solver = LogSinkhorn(tol)
    else:
        solver = EpsilonScalingSinkhorn(tol, **opts)
    x0 = torch.zeros_like(problem.b)
    out = iterate(solver, problem, x0, max_iter=max_iter, callback=callback, record_history=log)
    n_newton = getattr(out.state, "n_newton", torch.zeros_like(out.nit))
    return _result(problem, a, b, C, out.state.f, out.state.g, out.status, out.nit, n_newton, out.history, key)


def _sparse_newton(problem: TransportProblem, tol: float, warm_start_iters: int | None, sparsity: float | None,
                   opts: dict[str, Any]) -> SinkhornNewtonSparse:
    n, m = problem.a.shape[-1], problem.b.shape[-1]
    warm = DEFAULT_WARM_START_ITERS if warm_start_iters is None else warm_start_iters
    check_positive(warm, "warm_start_iters", integer=True, allow_zero=True)
    if sparsity is None:
        per_row = max(16, math.ceil(4 * m / n))
    else:
        check_positive(sparsity, "sparsity")
        if sparsity > 1:
            raise ValueError(f"sparsity is a fraction of each row of the plan, in (0, 1]; got {sparsity}")
        per_row = math.ceil(sparsity * m)
    return SinkhornNewtonSparse(tol, warm_start_iters=warm, per_row=min(per_row, m), **opts)


def _result(problem: TransportProblem, a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, f: torch.Tensor,
            g: torch.Tensor, status: torch.Tensor, nit: torch.Tensor, n_newton: torch.Tensor,
            history: list[dict[str, torch.Tensor]], method: str) -> OTResult:
    eps = problem.reg
    # Gauge ⟨f, a⟩ = ⟨g, b⟩: symmetric in the two marginals, unlike fixing one potential.
    shift = (dual.weighted_sum(f, problem.a) - dual.weighted_sum(g, problem.b)) / (2 * problem.mass)
    f, g = f - shift.unsqueeze(-1), g + shift.unsqueeze(-1)
    plan = torch.exp(dual.log_plan(problem, f, g, eps))
    error = dual.marginal_error(problem, plan.sum(-1), plan.sum(-2))
    f, g = _extend_zero_mass(problem, f, g)
    batch_shape, n, m = problem.batch_shape, problem.a.shape[-1], problem.b.shape[-1]
    batch = problem.a.shape[0]
    inputs = (C.expand(*batch_shape, n, m).reshape(batch, n, m), a.expand(*batch_shape, n).reshape(batch, n),
              b.expand(*batch_shape, m).reshape(batch, m))
    if torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, C)):
        rtol = 1e3 * float(torch.finfo(plan.dtype).eps) ** 0.75
        plan = ImplicitPlan.apply(*inputs, plan, eps, free_coordinates(problem.a, problem.b), rtol)
        reg_cost = RegularizedCost.apply(*inputs, f, g, plan.detach(), eps)
    else:
        reg_cost = dual.weighted_sum(f, problem.a) + dual.weighted_sum(g, problem.b) - eps * plan.sum(dim=(-1, -2))
    cost = (inputs[0] * plan).sum(dim=(-1, -2))

    def shaped(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(tuple(batch_shape) + tuple(t.shape[1:]))

    success = status == int(Status.SUCCESS)
    records = [{k: shaped(v) for k, v in record.items()} for record in history]
    if len(batch_shape) == 0:
        code = Status(int(status[0]))
        return OTResult(plan=plan[0], f=f[0], g=g[0], cost=cost[0], reg_cost=reg_cost[0],
                        marginal_error=error[0], nit=int(nit[0]), n_newton=int(n_newton[0]), status=code,
                        success=code == Status.SUCCESS, message=code.message, method=method, history=records)
    converged = int(success.sum())
    others = sorted({Status(int(s)).name for s in status[~success].tolist()})
    message = f"{converged} of {batch} problems converged" + (f"; others: {', '.join(others)}" if others else "")
    return OTResult(plan=shaped(plan), f=shaped(f), g=shaped(g), cost=shaped(cost), reg_cost=shaped(reg_cost),
                    marginal_error=shaped(error), nit=shaped(nit), n_newton=shaped(n_newton),
                    status=shaped(status), success=shaped(success), message=message, method=method,
                    history=records)


def _extend_zero_mass(problem: TransportProblem, f: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give zero-mass entries (potential −inf) the finite soft c-transform value
    f_i = −ε log Σ_j exp((g_j − C_ij)/ε), the potential the entry would have at unit log-mass."""
    zero_a, zero_b = problem.a <= 0, problem.b <= 0
    if not bool(zero_a.any() or zero_b.any()):
        return f, g
    eps = problem.reg.unsqueeze(-1)
    f_ext = -eps * dual.row_logsumexp(problem, g, problem.reg)
    g_ext = -eps * dual.col_logsumexp(problem, f, problem.reg)
    return torch.where(zero_a, f_ext, f), torch.where(zero_b, g_ext, g)
