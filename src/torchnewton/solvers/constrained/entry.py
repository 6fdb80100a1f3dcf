"""``torchnewton.minimize(..., constraints=, bounds=)``: the constrained entry point.

``minimize`` calls :func:`minimize_constrained` as soon as ``constraints`` or ``bounds`` is given.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ...core.fusion import Fusion, Same
from ...core.result import Result
from ...core.validate import check_method, check_options, check_positive
from ...derivatives.compiled import check_compile_option
from ..entry import build_result, check_callable, prepare_x0
from ..loop import iterate
from ..objective.problem import batch_derivative, batch_objective
from .implicit import differentiate_constrained
from .interior_point import BARRIER_RULES, InteriorPoint
from .kkt import KKTSolver, check_kkt_options
from .problem import ConstrainedProblem
from .spec import ConstraintSpec, build_spec
from .sqp import SQP
from .termination import KKTTermination

METHODS = ("sqp", "interior-point")
_COMMON = ("kkt_solver", "sketch", "sketch_size", "inner_max_iter", "seed", "accuracy", "sharpen",
           "infeasibility_tol", "unbounded", "c1", "max_backtracks", "scale_objective", "compile")
_OPTIONS = {
    "sqp": _COMMON + ("nu", "mu0", "second_order_correction", "merit", "hessian", "matrix_free"),
    "interior-point": _COMMON + ("barrier", "barrier_init", "bound_push"),
}


def minimize_constrained(fun: Callable[..., torch.Tensor], x0: torch.Tensor, *, method: str = "sqp",
                         constraints: Any = None, bounds: Any = None, args: tuple = (),
                         jac: Callable | None = None, hess: Callable | None = None, hessp: Callable | None = None,
                         tol: float | None = None, max_iter: int = 200, options: dict[str, Any] | None = None,
                         callback: Callable[[Any], Any] | None = None, batch: bool = False,
                         record_history: bool = False) -> Result:
    """Minimize f(x) subject to c_l ≤ c(x) ≤ c_u and x_l ≤ x ≤ x_u by a Newton method on the KKT system.

    ``constraints``: a dict ``{"type": "eq" | "ineq", "fun": c, "jac": optional, "args": optional}``
    (``ineq`` means c(x) ≥ 0, as in scipy), a :class:`~torchnewton.NonlinearConstraint`
    ``(fun, lower, upper, jac=None, hess=None)`` (entries with lower == upper are equalities), or
    a list mixing them. ``bounds=(lower, upper)``: tensors of shape (n,) (or (B, n)) or scalars,
    ±inf allowed.

    Methods:

    * ``"sqp"`` (default): Lagrange–Newton SQP for equality constraints, line search on the exact
      augmented Lagrangian with adaptive penalty, inertia correction and a second-order correction
      (:mod:`.sqp`). A problem with inequalities or bounds is routed to ``"interior-point"``
      (``result.method`` says which method ran).
    * ``"interior-point"``: primal-dual interior point with slacks for every inequality, barrier
      μ → 0 by the monotone (Fiacco–McCormick) or adaptive (LOQO) rule, fraction-to-the-boundary
      and an ℓ₂-penalty merit line search (:mod:`.interior_point`).

    Options: ``kkt_solver`` ("direct" | "minres" | "sketch"), ``sketch`` ("coordinate":
    block Kaczmarz, the default | "gaussian" | "projected-cg": CG on the null space of J, the fast one
    from n ≈ 300), ``sketch_size``, ``inner_max_iter``, ``seed``, ``accuracy`` θ₀ and
    ``sharpen`` β of the inexact solves' accuracy θ_k = min(θ₀, ‖KKT‖^β), ``infeasibility_tol``
    (default √tol), ``unbounded`` (1e15), ``c1``, ``max_backtracks``, ``scale_objective`` (True:
    Ipopt's gradient-based rule, the solver works on s·f with s = min(1, 100/‖∇f(x₀)‖∞) and the KKT
    test applies to that scaled problem; ``fun``, ``grad``, ``optimality`` and the multipliers
    are reported unscaled); SQP: ``nu`` ν (0.1), ``mu0``
    (1), ``second_order_correction`` (True), ``merit`` ("augmented-lagrangian" | "l1": the ℓ₁
    penalty, whose trial points cost f and c only), ``hessian`` ("exact" | "bfgs": Powell's damped
    BFGS model of ∇²ₓL, no second derivatives; ν = 0 then), ``matrix_free`` (default: True exactly
    with ``sketch="projected-cg"`` and ``hessian="exact"``: ∇²ₓL is never formed, every use of it is a
    Hessian-vector product — autodiff, or the user's ``hessp`` of f — counted in ``result.nhvp``;
    False forms it as the other solvers do; True needs ``kkt_solver="sketch"``); interior point: ``barrier`` ("monotone" |
    "adaptive"), ``barrier_init`` (0.1), ``bound_push`` (1e-2). ``compile`` (False): compute f, c and
    their derivatives (autodiff or the user's) by graphs traced once and fused by Inductor
    (:mod:`torchnewton.core.fusion`): fewer dispatched operations per iteration, at a one-time cost of
    seconds per function and shape; the graphs are cached with ``fun`` and keyed by the user's callables
    and ``args`` by identity (a new function or a new tensor in ``args`` compiles again), and the Result
    adds ``compiled`` and ``compile_seconds``. The iterates are the eager ones to round-off.

    ``tol`` (default √eps of the dtype) bounds the scaled KKT residuals; see
    :mod:`.termination`. ``hess``/``hessp`` are those of f (the constraints' curvature comes from
    autodiff or a constraint's ``hess(x, v)``). With ``batch=True`` every callable takes the
    (B, n) batch and returns (B,) / (B, m); each member has its own penalty, steps and status.

    The Result adds ``multipliers`` (``{"constraints": [one (m_i,) tensor per constraint],
    "bounds": (n,)}``, sign convention ∇f + Σ Jᵢᵀλᵢ + z = 0: negative where a lower limit is
    active, positive at an upper one), ``constraint_violation`` (‖c − Π(c)‖∞), ``optimality``
    (‖∇ₓL‖∞) and ``method``; ``status`` is ``SUCCESS``, ``INFEASIBLE``/``LOCALLY_INFEASIBLE``,
    ``UNBOUNDED``, ``MAX_ITER``, ``LINESEARCH_FAILED``, ``SINGULAR`` or ``NONFINITE``. If a
    tensor in ``args`` requires grad, ``x`` carries gradients through the KKT conditions.

    Example:
        >>> import torch
        >>> from torchnewton.solvers.constrained.entry import minimize_constrained
        >>> f = lambda x: (x ** 2).sum()
        >>> res = minimize_constrained(f, torch.tensor([2.0, 0.0], dtype=torch.float64),
        ...                            constraints={"type": "eq", "fun": lambda x: x.sum() - 1})
        >>> res.success, res.x.round(decimals=6).tolist(), round(float(res.multipliers["constraints"][0]), 6)
        (True, [0.5, 0.5], -1.0)
    """
    key = check_method(method, METHODS)
    for name, value in (("fun", fun), ("jac", jac), ("hess", hess), ("hessp", hessp), ("callback", callback)):
        check_callable(value, name)
    if fun is None:
        raise TypeError("fun must be callable, got None")
    check_positive(max_iter, "max_iter", integer=True, allow_zero=True)
    if tol is not None:
        check_positive(tol, "tol")
    x = prepare_x0(x0, batch, args)
    tol = tol if tol is not None else float(torch.finfo(x.dtype).eps) ** 0.5
    objective = batch_objective(fun, args, batch)
    f0 = _check_objective(objective, x)
    spec = build_spec(constraints, bounds, x, args, batch=batch)
    if key == "sqp" and spec.has_inequalities:
        key = "interior-point"
    opts = check_options(options, _OPTIONS["sqp"] + _OPTIONS["interior-point"])
    invalid = sorted(set(opts) - set(_OPTIONS[key]))
    if invalid:
        raise ValueError(f"options {invalid} do not apply to method {key!r}; valid: {', '.join(_OPTIONS[key])}")
    fusion = Fusion(enabled=check_compile_option(opts.pop("compile", False)))
    # the user's callables and args by identity: what the compiled graphs of f, c and their derivatives
    # stand for across solves (cached with fun)
    form = ("constrained", batch, Same(jac), Same(hess), Same(hessp), tuple(Same(a) for a in args))
    problem = ConstrainedProblem(objective, spec, jac=batch_derivative(jac, args, batch),
                                 hess=batch_derivative(hess, args, batch),
                                 hessp=batch_derivative(hessp, args, batch, vector=True),
                                 scale_objective=bool(opts.pop("scale_objective", True)),
                                 fusion=fusion, owner=fun, form=form)
    # the checks' calls at x0 are counted, and their values are the solver's first ones
    problem.counters.nfev += 1
    problem.ncev += 1 if spec.blocks else 0
    problem.remember(x, f0, spec.values)
    termination = KKTTermination(tol, opts.pop("infeasibility_tol", tol ** 0.5), opts.pop("unbounded", 1e15))
    kkt = _kkt_solver(opts, x)
    kkt.fusion = fusion
    solver = _solver(key, termination, kkt, spec, opts)
    with torch.no_grad():
        loop = iterate(solver, problem, x, max_iter=max_iter, callback=callback, record_history=record_history)
    state = loop.state
    problem.counters.nlinsolve = kkt.calls
    scale = problem.scale if problem.scale is not None else torch.ones_like(state.f)
    lam, z = (m / scale.unsqueeze(-1) for m in solver.multipliers(state))
    x_star = differentiate_constrained(state.x, lam, z, fun, spec, args, batch, tol=tol)
    blocks = list(torch.split(lam, spec.sizes()[: len(spec.blocks)], dim=-1)) if spec.blocks else []
    extras = {"constraint_violation": solver.violation(problem, state), "optimality": state.optimality / scale,
              "ncev": problem.ncev, "njcev": problem.njcev, "nhvp": problem.nhvp,
              **(fusion.info() if fusion.enabled else {})}
    result = build_result(loop, problem.counters, batch, x_star, fun=state.f / scale,
                          grad=state.g / scale.unsqueeze(-1),
                          jac=solver.jacobian(state), extras=extras)
    result.method = key
    squeeze = (lambda t: t) if batch else (lambda t: t[0])
    result.extras["multipliers"] = {"constraints": [squeeze(b) for b in blocks], "bounds": squeeze(z)}
    return result


def _check_objective(objective, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        value = objective(x)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != (x.shape[0],):
        raise ValueError(f"fun must return a scalar per problem, shape ({x.shape[0]},); "
                         f"got {getattr(value, 'shape', type(value).__name__)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError("fun is not finite (NaN or Inf) at x0")
    return value


def _kkt_solver(opts: dict[str, Any], x: torch.Tensor) -> KKTSolver:
    kind = opts.pop("kkt_solver", "direct")
    sketch = opts.pop("sketch", "coordinate")
    check_kkt_options(kind, sketch)
    generator = torch.Generator(device=x.device)
    generator.manual_seed(int(opts.pop("seed", 0)))
    return KKTSolver(kind=kind, sketch=sketch, sketch_size=opts.pop("sketch_size", None),
                     max_iter=opts.pop("inner_max_iter", None), generator=generator)


def _solver(key: str, termination: KKTTermination, kkt: KKTSolver, spec: ConstraintSpec, opts: dict[str, Any]):
    if key == "sqp":
        return SQP(termination, kkt, target=spec.lower, **opts)
    barrier = opts.get("barrier", "monotone")
    if barrier not in BARRIER_RULES:
        raise ValueError(f"options['barrier']={barrier!r}; valid choices: {', '.join(BARRIER_RULES)}")
    return InteriorPoint(termination, kkt, spec, **opts)
