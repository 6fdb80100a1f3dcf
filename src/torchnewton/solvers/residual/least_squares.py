"""``torchnewton.least_squares``: minimize ½‖r(x)‖² by Gauss–Newton-type methods."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch

from ...core.counters import Counters
from ...core.result import Result
from ...core.validate import check_method, check_options, check_positive
from ...derivatives.compiled import check_compile_option
from .dogleg import PowellDogleg
from ..entry import build_result, check_callable, prepare_x0
from ..implicit import differentiate_solution
from .levenberg_marquardt import LevenbergMarquardt
from ..loop import iterate
from .newton import NewtonLineSearch
from .problem import ResidualProblem, batch_function, batch_jacobian, compiled_residuals
from .termination import LeastSquaresTermination

METHODS = ("levenberg-marquardt", "gauss-newton", "dogleg")
_OPTIONS = {
    "levenberg-marquardt": ("initial_radius", "jac_mode"),
    "gauss-newton": ("c1", "max_backtracks", "jac_mode"),
    "dogleg": ("jac_mode",),
}
_OPTIONS = {key: names + ("compile",) for key, names in _OPTIONS.items()}


def least_squares(fun: Callable[..., torch.Tensor], x0: torch.Tensor, *, method: str = "levenberg-marquardt",
                  args: tuple = (), jac: Callable[..., torch.Tensor] | None = None, ftol: float = 1e-8,
                  xtol: float = 1e-8, gtol: float = 1e-8, max_iter: int | None = None,
                  options: dict[str, Any] | None = None, callback: Callable[[Any], Any] | None = None,
                  batch: bool = False, record_history: bool = False) -> Result:
    """Minimize ½‖r(x)‖², r: Rⁿ → Rᵐ (m ≥ n usually), with scipy.optimize.least_squares' stopping rules.

    Methods: ``"levenberg-marquardt"`` (MINPACK's lmder, Moré 1978: trust radius Δ on ‖D p‖ with
    column scaling D, λ by the Moré–Hebden iteration; option ``initial_radius``: Δ₀ =
    initial_radius·‖D x₀‖, default 1), ``"gauss-newton"`` (QR Gauss–Newton steps with Armijo
    backtracking) and ``"dogleg"`` (Powell's dogleg trust region). Stops when ‖Jᵀr‖∞ ≤ gtol (for
    LM: the cosine maxⱼ |Jⱼᵀr|/(‖Jⱼ‖‖r‖) ≤ gtol, as scipy's lm), the relative cost decrease of a
    well-predicted step is ≤ ftol, or the step (for LM: the radius Δ) is ≤ xtol·(xtol + ‖Dx‖).
    The Result adds ``cost`` = ½‖r‖². Batching, implicit gradients and ``options={"compile": True}``
    (compiled autodiff Jacobians, or the user's ``jac`` and ``fun`` compiled, reported by ``compiled``
    and ``compile_seconds``) as in :func:`root`.

    Example:
        >>> import torch, torchnewton
        >>> t = torch.linspace(0, 1, 20, dtype=torch.float64); y = 2 * torch.exp(-3 * t)
        >>> res = torchnewton.least_squares(lambda p: p[0] * torch.exp(p[1] * t) - y, torch.tensor([1.0, -1.0], dtype=torch.float64))
        >>> res.x
        tensor([ 2., -3.], dtype=torch.float64)
    """
    key = check_method(method, METHODS)
    check_callable(fun, "fun")
    check_callable(jac, "jac")
    check_callable(callback, "callback")
    for name, value in (("ftol", ftol), ("xtol", xtol), ("gtol", gtol)):
        check_positive(value, name, allow_zero=True)
    opts = check_options(options, _OPTIONS[key])
    x = prepare_x0(x0, batch, args)
    max_iter = 100 * x.shape[-1] if max_iter is None else max_iter
    check_positive(max_iter, "max_iter", integer=True, allow_zero=True)
    batched_fun = batch_function(fun, args, batch)
    batched_jac = None if jac is None else batch_jacobian(jac, args, batch)
    jac_mode = opts.pop("jac_mode", "auto")
    compile_ = check_compile_option(opts.pop("compile", False))
    compiled = compiled_residuals(fun, args, batch, jac_mode, jac) if compile_ else None
    problem = ResidualProblem(batched_fun, batched_jac, jac_mode=jac_mode, compiled=compiled)
    with torch.no_grad():
        r0 = problem.residual(x)
    if not isinstance(r0, torch.Tensor) or r0.dim() != 2 or r0.shape[0] != x.shape[0]:
        raise ValueError(f"fun must return a vector of residuals, got {getattr(r0, 'shape', type(r0))}")
    problem.fun = _reuse_first_value(problem.fun, x, r0, problem.counters)
    termination = LeastSquaresTermination(ftol=ftol, xtol=xtol, gtol=gtol)
    solver = {
        "levenberg-marquardt": lambda: LevenbergMarquardt(replace(termination, scaled=True), **opts),
        "gauss-newton": lambda: NewtonLineSearch(termination, direction="least-squares", **opts),
        "dogleg": lambda: PowellDogleg(termination),
    }[key]()
    with torch.no_grad():
        loop = iterate(solver, problem, x, max_iter=max_iter, callback=callback, record_history=record_history)
    state = loop.state
    x_star = differentiate_solution(state.x, fun, args, batch, condition="least-squares")
    extras = {"cost": state.cost, **(problem.compiled.info() if problem.compiled is not None else {})}
    return build_result(loop, problem.counters, batch, x_star, fun=state.F, jac=state.J, grad=state.grad,
                        extras=extras)


def _reuse_first_value(fun: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, r0: torch.Tensor,
                       counters: Counters) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fun`` that answers its first call at x₀ itself (the very tensor the shape check evaluated)
    with r₀ and uncounts it: the solver's first evaluation then costs no second call of the user
    function (with a user ``jac``; autodiff evaluates through its own transforms)."""
    pending = [r0]

    def reused(x: torch.Tensor) -> torch.Tensor:
        if pending and x is x0:
            counters.nfev -= 1  # counted by the problem, but the shape check already made this call
            return pending.pop()
        pending.clear()
        return fun(x)

    return reused
