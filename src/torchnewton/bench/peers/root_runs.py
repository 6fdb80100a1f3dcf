"""One root solve of an :class:`~..problems.equations.EquationProblem`, by torchnewton or by scipy,
recorded the same way and judged by the same checker (‖F(x)‖∞ ≤ tol on the returned x, float64).

Evaluations: scipy's are counted by wrapping the problem's callables (``nfev`` F evaluations,
its finite-difference JVPs in ``krylov`` included; ``njev`` Jacobian evaluations);
torchnewton's are the Result's own counters (``nfev``; ``njev`` Jacobian evaluations, autodiff
ones included, and for ``newton-krylov`` Jacobian-vector products). A wall-time cap stops a solve that runs
too long: the next evaluation after the cap raises, and the run is recorded as unsolved.

scipy settings: ``hybr`` and ``lm`` get the analytic Jacobian and step tolerances of 1e-12
(their defaults, 1.5e-8, often stop short of ‖F‖∞ ≤ 1e-8; neither has a residual test);
``krylov`` and ``broyden1`` (derivative-free) get ``fatol = tol`` and ``maxiter = max_iter``,
the ∞-norm test torchnewton uses. Their evaluation budgets are scipy's defaults otherwise
(``hybr``/``lm``: 100·(n + 1) evaluations with a Jacobian).

Example:
    >>> from torchnewton.bench.problems.equations import mgh_equations
    >>> p = mgh_equations()[0]
    >>> run_scipy(p, "hybr", tol=1e-8).solved, run_torchnewton(p, "newton", tol=1e-8).solved
    (True, True)
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import scipy.optimize

from ...solvers.residual.root import root
from ..problems.equations import EquationProblem, residual_norm

SCIPY_METHODS = ("hybr", "lm", "krylov", "broyden1")


@dataclass
class RootRun:
    solver: str
    problem: str
    solved: bool
    residual: float  # ‖F(x)‖∞ at the returned x (∞ if not finite)
    nfev: int
    njev: int
    seconds: float
    status: str  # the solver's own verdict, for the report

    @property
    def evaluations(self) -> int:
        """F evaluations plus Jacobian evaluations/products: the cost in the performance profile."""
        return self.nfev + self.njev

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TimeCapReached(Exception):
    """A solve was still running when its wall-time cap passed."""


class _Counted:
    """Wraps callables to count calls and to raise TimeCapReached after the deadline."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds
        self.calls = {"f": 0, "j": 0}

    def wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if time.perf_counter() > self.deadline:
                raise TimeCapReached
            self.calls[key] += 1
            return fn(*args)

        return call


def run_torchnewton(problem: EquationProblem, method: str, *, tol: float, max_iter: int | None = 200,
                    time_cap: float = 60.0, options: dict[str, Any] | None = None) -> RootRun:
    """``torchnewton.root(method=method)`` from the problem's start (jac= where the problem has one)."""
    clock = _Counted(time_cap)
    fun = clock.wrap("f", problem.residual)
    jac = None if problem.jacobian is None else clock.wrap("j", problem.jacobian)
    start = time.perf_counter()
    try:
        res = root(fun, problem.x0.clone(), method=method, jac=jac, tol=tol, max_iter=max_iter, options=options)
        x, status, nfev, njev = res.x.detach(), str(res.status), res.nfev, res.njev
    except TimeCapReached:
        x, status, nfev, njev = problem.x0, f"time cap {time_cap:g} s", clock.calls["f"], clock.calls["j"]
    seconds = time.perf_counter() - start
    residual = residual_norm(problem, x)
    return RootRun(f"tn:{method}", problem.name, residual <= tol, residual, nfev, njev, seconds, status)


def run_scipy(problem: EquationProblem, method: str, *, tol: float, max_iter: int = 200,
              time_cap: float = 60.0) -> RootRun:
    """``scipy.optimize.root(method=method)`` from the problem's start."""
    if method not in SCIPY_METHODS:
        raise ValueError(f"method must be one of {SCIPY_METHODS}, got {method!r}")
    clock = _Counted(time_cap)
    fun = clock.wrap("f", problem.residual_np)
    kwargs: dict[str, Any] = {}
    if method == "hybr":
        kwargs = {"jac": clock.wrap("j", problem.jacobian_np), "options": {"xtol": 1e-12}}
    elif method == "lm":
        kwargs = {"jac": clock.wrap("j", problem.jacobian_np), "options": {"xtol": 1e-12, "ftol": 1e-12}}
    else:
        kwargs = {"options": {"fatol": tol, "maxiter": max_iter}}
    x0 = problem.x0.numpy().astype(np.float64)
    start = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            sol = scipy.optimize.root(fun, x0, method=method, **kwargs)
            x, status = sol.x, "success" if sol.success else "failure"
        except TimeCapReached:
            x, status = x0, f"time cap {time_cap:g} s"
        except (ValueError, np.linalg.LinAlgError, OverflowError, FloatingPointError, ZeroDivisionError) as error:
            x, status = x0, f"raised {type(error).__name__}"
    seconds = time.perf_counter() - start
    residual = residual_norm(problem, x)
    return RootRun(f"scipy:{method}", problem.name, residual <= tol, residual, clock.calls["f"], clock.calls["j"],
                   seconds, status)
