"""``torchnewton.minimize``: unconstrained minimization by Newton-type methods."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ...core.result import Result
from ...core.tolerances import default_tol
from ...core.validate import check_method, check_options, check_positive
from ...derivatives.compiled import CompiledFunctions, check_compile_option
from .cubic_regularization import AdaptiveCubicRegularization
from .damped_newton import SCHEDULES, DampedNewton
from ..constrained.entry import minimize_constrained
from ..entry import build_result, check_callable, prepare_x0
from ..implicit import differentiate_solution
from .line_search import SEARCHES, LineSearch
from ..loop import iterate
from .termination import GradientTermination
from .newton import NewtonCG, NewtonMinimizer
from .problem import ObjectiveProblem, batch_derivative, batch_objective
from .quasi_newton import BFGS, LBFGS
from .saddle_free import SaddleFreeNewton
from .trust_region import ExactTrustRegion, SteihaugTrustRegion

METHODS = ("trust-exact", "trust-ncg", "newton", "newton-cg", "cubic", "damped-newton",
           "saddle-free-newton", "bfgs", "l-bfgs")
_SEARCH = ("line_search", "c1", "c2", "max_backtracks")
_CURVATURE = ("hessian", "residuals")
_TRUST = ("initial_radius", "max_radius", "eta")
_OPTIONS = {
    "trust-exact": _TRUST + _CURVATURE,
    "trust-ncg": _TRUST + _CURVATURE + ("cg_max_iter",),
    "newton": _SEARCH + _CURVATURE + ("hutchinson_samples", "seed"),
    "newton-cg": _SEARCH + _CURVATURE + ("cg_max_iter", "recycle"),
    "cubic": ("lazy", "initial_sigma", "min_sigma") + _CURVATURE,
    "damped-newton": ("schedule", "smoothness", "order", "backtrack_factor", "max_backtracks") + _CURVATURE,
    "saddle-free-newton": _SEARCH + ("damping",) + _CURVATURE,
    "bfgs": _SEARCH,
    "l-bfgs": _SEARCH + ("memory",),
}
_OPTIONS = {key: names + ("compile",) for key, names in _OPTIONS.items()}
# curvature strategies each method can use; the first is its default
_CURVATURES = {
    "trust-exact": ("exact", "hvp", "gauss-newton"),
    "trust-ncg": ("hvp", "gauss-newton"),
    "newton": ("exact", "hvp", "gauss-newton", "hutchinson"),
    "newton-cg": ("hvp", "gauss-newton"),
    "cubic": ("exact", "hvp", "gauss-newton"),
    "damped-newton": ("exact", "hvp", "gauss-newton"),
    "saddle-free-newton": ("exact", "hvp", "gauss-newton"),
    "bfgs": (), "l-bfgs": (),
}
_DEFAULT_SEARCH = {"bfgs": "wolfe", "l-bfgs": "wolfe"}


def minimize(fun: Callable[..., torch.Tensor], x0: torch.Tensor, *, method: str | None = None, args: tuple = (),
             jac: Callable[..., torch.Tensor] | None = None, hess: Callable[..., torch.Tensor] | None = None,
             hessp: Callable[..., torch.Tensor] | None = None, tol: float | None = None, max_iter: int = 1000,
             options: dict[str, Any] | None = None, callback: Callable[[Any], Any] | None = None,
             batch: bool = False, record_history: bool = False, constraints: Any = None,
             bounds: Any = None) -> Result:
    """Minimize f: Rⁿ → R by a Newton-type method, stopping when ‖∇f(x)‖∞ ≤ tol·max(1, |f(x)|).

    With ``constraints`` or ``bounds`` the problem is constrained and goes to
    :func:`~torchnewton.solvers.constrained.entry.minimize_constrained` (methods ``"sqp"``, the
    default there, and ``"interior-point"``); everything below is about the unconstrained case.

    Methods (case-insensitive), each a Newton model m(s) = f + gᵀs + ½sᵀHs globalized differently:

    * ``"trust-exact"`` (default): min m(s) s.t. ‖s‖ ≤ Δ solved exactly (Moré & Sorensen 1983) from
      an eigendecomposition of H; for small and medium n. Options ``initial_radius`` (1),
      ``max_radius`` (1e10), ``eta`` (0.15).
    * ``"trust-ncg"``: the same model solved by Steihaug–Toint truncated CG on Hessian-vector
      products (Steihaug 1983); matrix-free. Option ``cg_max_iter``.
    * ``"newton"``: (H + τI)d = −g with the least shift τ ≥ 0 that makes H + τI positive definite
      (Nocedal & Wright Alg. 3.3), then Armijo (default) or strong-Wolfe line search
      (``line_search``, ``c1``, ``c2``, ``max_backtracks``).
    * ``"newton-cg"``: truncated Newton, CG on Hessian-vector products with forcing
      min(½, √‖g‖) and exit at negative curvature; matrix-free. ``recycle=k``: one deflated CG
      recycling k Ritz vectors across the Newton iterations (batch of one; for Hessians SPD
      along the path, see ``newton.NewtonCG``).
    * ``"cubic"``: adaptive cubic regularization, min gᵀs + ½sᵀHs + (σ/3)‖s‖³ (Cartis, Gould &
      Toint 2011); ``lazy=m`` reuses one Hessian and its eigendecomposition for m accepted steps
      (Doikov, Chayti & Jaggi 2023). Options ``initial_sigma``, ``min_sigma``.
    * ``"damped-newton"``: x⁺ = x − αH⁻¹g with α from G = √(gᵀH⁻¹g): ``schedule="aicn"``
      α = (−1 + √(1 + 2LG))/(LG) (Hanzely et al. 2022), ``"root"`` α = 1/(1 + (9M)^{1/(q−1)}
      G^{(q−2)/(q−1)}) with ``order`` q (O(k⁻³) for q = 4), or ``"backtracking"`` (default, unknown
      M); the constant is ``smoothness``.
    * ``"saddle-free-newton"``: d = −|H|⁻¹g with |H| from absolute eigenvalues (Dauphin et al.
      2014) and a line search; option ``damping``.
    * ``"bfgs"``, ``"l-bfgs"`` (option ``memory``): quasi-Newton baselines on the strong-Wolfe search.

    The curvature H is chosen by the option ``hessian``: ``"exact"`` (``hess``, else ``hessp``
    products, else autodiff), ``"hvp"`` (Hessian-vector products only: the default of the
    matrix-free methods), ``"gauss-newton"`` (JᵀJ for f = ½‖r‖², with ``residuals=r`` a callable
    like ``fun``) or, for ``"newton"``, ``"hutchinson"`` (a diagonal estimate from
    ``hutchinson_samples`` Rademacher probes, ``seed``).

    ``options={"compile": True}`` (every method; default False) computes the autodiff gradients,
    Hessians and Hessian-vector products by compiled ``torch.func`` transforms, and the values of
    f and the given ``jac``/``hess``/``hessp`` by the user's callables themselves, each traced once
    and fused by Inductor (see :mod:`torchnewton.derivatives.compiled`): several times faster per
    iteration on small problems, after a compilation of seconds per function and shape that later
    solves of the same functions and shapes reuse. As with ``jax.jit``, the tensors in ``args`` are
    inputs of the compiled graphs, while what the callables close over is frozen at the first
    compilation. The Result then adds ``compiled`` (False where a callable could not be traced into
    one graph and the eager path was used, with a ``CompileFallbackWarning``) and
    ``compile_seconds`` (spent in this solve).

    ``fun(x, *args)`` maps (n,) to a scalar; ``jac(x, *args)`` → (n,), ``hess(x, *args)`` → (n, n),
    ``hessp(x, v, *args)`` → (n,) override autodiff. With ``batch=True`` x0 is (B, n), every
    callable takes the whole batch ((B, n) → (B,), (B, n), (B, n, n), (B, n)), row i depending only
    on row i, and each member of the batch runs with its own step sizes and gets its own status.
    If a tensor in ``args`` requires grad, the solution carries gradients by implicit
    differentiation of ∇ₓf(x*, θ) = 0 (autodiff of ``fun``). ``tol`` defaults to ε^(2/3) of the
    dtype. ``callback(state)`` is called after every iteration; returning True stops.

    The Result holds ``x``, ``fun`` (f at x), ``grad``, ``success``/``status`` (``NONFINITE`` for
    NaN or Inf values, ``LINESEARCH_FAILED``, ``STALLED``, ``MAX_ITER``: never a false success),
    ``nit`` and the counts ``nfev``, ``njev`` (gradients), ``nhev`` (Hessians or Hessian-vector
    products), ``nlinsolve``.

    Example:
        >>> import torch
        >>> from torchnewton.solvers.objective.minimize import minimize
        >>> rosenbrock = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        >>> res = minimize(rosenbrock, torch.tensor([-1.2, 1.0], dtype=torch.float64))
        >>> res.success, res.x.round(decimals=8)
        (True, tensor([1., 1.], dtype=torch.float64))
    """
    if constraints is not None or bounds is not None:
        return minimize_constrained(fun, x0, method=method or "sqp", constraints=constraints, bounds=bounds,
                                    args=args, jac=jac, hess=hess, hessp=hessp, tol=tol, max_iter=max_iter,
                                    options=options, callback=callback, batch=batch, record_history=record_history)
    key = check_method(method or "trust-exact", METHODS)
    for name, value in (("fun", fun), ("jac", jac), ("hess", hess), ("hessp", hessp), ("callback", callback)):
        check_callable(value, name)
    check_positive(max_iter, "max_iter", integer=True, allow_zero=True)
    if tol is not None:
        check_positive(tol, "tol")
    opts = check_options(options, _OPTIONS[key])
    x = prepare_x0(x0, batch, args)
    compiled = check_compile_option(opts.pop("compile", False))
    problem = _problem(key, fun, x, args, batch, jac, hess, hessp, opts, compiled)
    solver = _solver(key, GradientTermination(tol if tol is not None else default_tol(x.dtype)), opts)
    with torch.no_grad():
        loop = iterate(solver, problem, x, max_iter=max_iter, callback=callback, record_history=record_history)
    state = loop.state
    x_star = differentiate_solution(state.x, fun, args, batch, condition="stationary")
    return build_result(loop, problem.counters, batch, x_star, fun=state.f, grad=state.g,
                        extras=problem.compiled.info() if compiled else {})


def _problem(key: str, fun, x: torch.Tensor, args: tuple, batch: bool, jac, hess, hessp,
             opts: dict[str, Any], compiled: bool = False) -> ObjectiveProblem:
    allowed = _CURVATURES[key]
    curvature = opts.pop("hessian", allowed[0] if allowed else "exact")
    if allowed and curvature not in allowed:
        raise ValueError(f"options['hessian']={curvature!r} is not available for method {key!r}; "
                         f"valid choices: {', '.join(allowed)}")
    residuals = opts.pop("residuals", None)
    if curvature == "gauss-newton":
        if residuals is None or not callable(residuals):
            raise ValueError("options['hessian']='gauss-newton' needs options['residuals'], a callable r(x, *args) "
                             "with fun(x) = ½‖r(x)‖²")
        residuals = _batch_residuals(residuals, args, batch)
    seed = opts.pop("seed", None)
    generator = None
    if curvature == "hutchinson":
        generator = torch.Generator(device=x.device)
        generator.manual_seed(0 if seed is None else int(seed))
    return ObjectiveProblem(batch_objective(fun, args, batch), x.shape[-1], jac=batch_derivative(jac, args, batch),
                            hess=batch_derivative(hess, args, batch), hessp=batch_derivative(hessp, args, batch, vector=True),
                            curvature=curvature, residuals=residuals, generator=generator,
                            hutchinson_samples=opts.pop("hutchinson_samples", 16),
                            compiled=_compiled(fun, args, batch, jac, hess, hessp) if compiled else None)


def _compiled(fun, args: tuple, batch: bool, jac, hess, hessp) -> CompiledFunctions:
    """f's compiled derivatives (``options={"compile": True}``): autodiff's, and the user's ``jac``,
    ``hess``, ``hessp`` traced as they are, each keyed by the callable's identity."""
    derivative = lambda d, a: batch_derivative(d, a, batch)
    product = lambda d, a: batch_derivative(d, a, batch, vector=True)
    return CompiledFunctions(fun, args, lambda f, a: batch_objective(f, a, batch), tag=("objective", batch),
                             supplied={"jac": (jac, derivative), "hess": (hess, derivative),
                                       "hessp": (hessp, product)})


def _batch_residuals(residuals, args: tuple, batch: bool):
    if batch:
        return lambda x: residuals(x, *args)
    return lambda x: residuals(x[0], *args).reshape(1, -1)


def _solver(key: str, termination: GradientTermination, opts: dict[str, Any]):
    search_kind = opts.pop("line_search", _DEFAULT_SEARCH.get(key, "armijo"))
    if search_kind not in SEARCHES:
        raise ValueError(f"options['line_search']={search_kind!r}; valid choices: {', '.join(SEARCHES)}")
    search_opts = {k: opts.pop(k) for k in ("c1", "c2") if k in opts}
    if "max_backtracks" in opts and key != "damped-newton":
        search_opts["max_steps"] = opts.pop("max_backtracks")
    if key == "damped-newton" and opts.get("schedule", "backtracking") not in SCHEDULES:
        raise ValueError(f"options['schedule']={opts['schedule']!r}; valid choices: {', '.join(SCHEDULES)}")
    if key == "cubic" and (not isinstance(opts.get("lazy", 1), int) or opts.get("lazy", 1) < 1):
        raise ValueError(f"options['lazy'] must be an int >= 1, got {opts['lazy']!r}")
    search = LineSearch(kind=search_kind, **search_opts)
    return {
        "trust-exact": lambda: ExactTrustRegion(termination, **opts),
        "trust-ncg": lambda: SteihaugTrustRegion(termination, **opts),
        "newton": lambda: NewtonMinimizer(termination, search, **opts),
        "newton-cg": lambda: NewtonCG(termination, search, **opts),
        "cubic": lambda: AdaptiveCubicRegularization(termination, **opts),
        "damped-newton": lambda: DampedNewton(termination, **opts),
        "saddle-free-newton": lambda: SaddleFreeNewton(termination, search, **opts),
        "bfgs": lambda: BFGS(termination, search),
        "l-bfgs": lambda: LBFGS(termination, search, **opts),
    }[key]()
