"""``torchnewton.root``: solve F(x) = 0 by Newton-type methods."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ...core.result import Result
from ...core.tolerances import default_tol
from ...core.validate import check_method, check_options, check_positive
from .broyden import Broyden
from .dogleg import PowellDogleg
from ..entry import build_result, check_callable, check_output, prepare_x0
from ..implicit import differentiate_solution
from .levenberg_marquardt import LevenbergMarquardt
from ..loop import iterate
from .newton import NewtonLineSearch
from .problem import ResidualProblem, batch_function, batch_jacobian
from .termination import RootTermination

METHODS = ("newton", "newton-krylov", "broyden", "levenberg-marquardt", "dogleg")
_OPTIONS = {
    "newton": ("c1", "max_backtracks", "jac_mode"),
    "newton-krylov": ("c1", "max_backtracks", "inner_restart", "inner_max_iter", "max_forcing", "preconditioner",
                      "jvp"),
    "broyden": ("c1", "max_backtracks", "jac_mode"),
    "levenberg-marquardt": ("initial_radius", "jac_mode"),
    "dogleg": ("jac_mode",),
}


def root(fun: Callable[..., torch.Tensor], x0: torch.Tensor, *, method: str = "newton", args: tuple = (),
         jac: Callable[..., torch.Tensor] | None = None, tol: float | None = None, max_iter: int = 100,
         options: dict[str, Any] | None = None, callback: Callable[[Any], Any] | None = None,
         batch: bool = False, record_history: bool = False) -> Result:
    """Find x with F(x) = 0, F: Rⁿ → Rⁿ, stopping when ‖F(x)‖∞ ≤ tol.

    Methods (case-insensitive):

    * ``"newton"``: Newton's method, J d = −F by LU (regularized where J is singular), with an
      Armijo backtracking search on ½‖F‖²;
    * ``"newton-krylov"``: Jacobian-free Newton–Krylov, GMRES on JVPs with Eisenstat–Walker
      forcing terms (Knoll & Keyes 2004); options ``inner_restart``, ``inner_max_iter``,
      ``preconditioner`` (a callable r ↦ M⁻¹r on (B, n)), ``jvp`` ("autodiff" or "finite-difference");
    * ``"broyden"``: Broyden's good method, refreshed from the true Jacobian when it fails;
    * ``"levenberg-marquardt"``: LM on ½‖F‖² with Moré's scaling;
    * ``"dogleg"``: Powell's hybrid trust-region method.

    ``fun(x, *args)`` maps (n,) to (n,); with ``batch=True`` it maps (B, n) to (B, n), row i
    depending only on row i, and every Result field gets a leading batch dimension. ``jac(x, *args)``
    returns the (n, n) (or (B, n, n)) Jacobian; by default autodiff provides it. If a tensor in
    ``args`` requires grad, the returned x carries gradients by implicit differentiation.

    Example:
        >>> import torch, torchnewton
        >>> res = torchnewton.root(lambda x: x**3 - torch.tensor([8.0, 27.0]), torch.ones(2, dtype=torch.float64))
        >>> res.x, res.success
        (tensor([2., 3.], dtype=torch.float64), True)
    """
    key = check_method(method, METHODS)
    check_callable(fun, "fun")
    check_callable(jac, "jac")
    check_callable(callback, "callback")
    check_positive(max_iter, "max_iter", integer=True, allow_zero=True)
    if tol is not None:
        check_positive(tol, "tol")
    opts = check_options(options, _OPTIONS[key])
    x = prepare_x0(x0, batch, args)
    batched_fun = batch_function(fun, args, batch)
    batched_jac = None if jac is None else batch_jacobian(jac, args, batch)
    problem = ResidualProblem(batched_fun, batched_jac, jac_mode=opts.pop("jac_mode", "auto"))
    with torch.no_grad():
        F0 = problem.residual(x)
    check_output(F0, "fun", tuple(x.shape))
    termination = RootTermination(tol if tol is not None else default_tol(x.dtype))
    solver = {
        "newton": lambda: NewtonLineSearch(termination, direction="dense", **opts),
        "newton-krylov": lambda: NewtonLineSearch(termination, direction="krylov", **opts),
        "broyden": lambda: Broyden(termination, **opts),
        "levenberg-marquardt": lambda: LevenbergMarquardt(termination, **opts),
        "dogleg": lambda: PowellDogleg(termination),
    }[key]()
    with torch.no_grad():
        loop = iterate(solver, problem, x, max_iter=max_iter, callback=callback, record_history=record_history)
    state = loop.state
    x_star = differentiate_solution(state.x, fun, args, batch, condition="residual")
    return build_result(loop, problem.counters, batch, x_star, fun=state.F,
                        jac=getattr(state, "J", None) if key != "newton-krylov" else None)
