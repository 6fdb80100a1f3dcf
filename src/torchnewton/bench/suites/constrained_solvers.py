"""The solvers of the constrained benchmark, each run on one S2MPJ problem through counted calls.

Every solver gets the problem's own analytic derivatives (gradient, constraint Jacobian and, for
the second-order methods, the Hessians of f and of each constraint), starts at S2MPJ's x0, and is
asked for a tight tolerance of its own (1e-8); whether it solved the problem is decided afterwards
by :func:`.constrained_kkt.check_kkt` at the x it returns.

Solvers (names as reported):

* ``tn:sqp`` — ``torchnewton.minimize(method="sqp")`` with the constraints as one
  ``NonlinearConstraint(c, c_l, c_u, jac=J, hess=Σ vᵢ∇²cᵢ)`` and ``bounds``; torchnewton sends
  a problem with inequalities or bounds to its interior-point method (the record keeps which ran).
* ``tn:interior-point`` — the same call with ``method="interior-point"`` on every problem.
* ``tn:sqp (ℓ1 merit)``, ``tn:sqp (damped BFGS)``, ``tn:sqp (damped BFGS, ℓ1 merit)`` — ``tn:sqp``
  with the options of :data:`TN_VARIANTS` on equality-constrained problems (the quasi-Newton ones
  get no Hessian callables' calls: their ``nhev``/``nchev`` stay 0 because they never ask).
* ``scipy:SLSQP`` — quasi-Newton SQP (first derivatives only), constraints split into scipy's
  ``eq``/``ineq`` dicts; stopped by the shared check (see :data:`SLSQP_FTOL`).
* ``scipy:trust-constr`` — exact Hessians, the constraints as a scipy ``NonlinearConstraint``.
* ``ipopt:exact`` / ``ipopt:lbfgs`` — ``cyipopt.minimize_ipopt`` with exact Hessians, and with
  Ipopt's limited-memory quasi-Newton approximation (its default without ``hess``).

Evaluations are counted by the wrappers, the same way for every solver: ``nfev`` objective values,
``njev`` gradients, ``nhev`` objective Hessians, ``ncev`` constraint values, ``njcev`` constraint
Jacobians, ``nchev`` constraint-curvature matrices Σ vᵢ∇²cᵢ (a problem's c counted once per
evaluation however a solver splits it).  A run past its wall-time cap is stopped at the
next evaluation and recorded as unsolved.
"""
from __future__ import annotations

import time
import warnings
from collections import Counter
from typing import Any, Callable

import numpy as np
import torch

from ...solvers.constrained.spec import NonlinearConstraint
from ...solvers.objective.minimize import minimize
from ..problems.s2mpj_constrained import ConstrainedProblem
from .constrained_kkt import check_kkt
from .minimize_cutest import TimeCapReached, _Clock

SOLVER_TOL = 1e-8
SLSQP_FTOL = 1e-12
"""SLSQP's own test is on the change of f, not a KKT test: with ftol 1e-8 it stops short of 1e-6
optimality on a third of the paper's problems, with ftol 1e-10 it runs to its iteration limit on
others without moving x (HS7).  So it runs with a tight ftol and :func:`_run_scipy` stops it as
soon as the shared checker accepts its iterate (the check's time is not counted)."""
TN_VARIANTS = {
    "tn:sqp": ("sqp", {}),
    "tn:interior-point": ("interior-point", {}),
    "tn:sqp (ℓ1 merit)": ("sqp", {"merit": "l1"}),
    "tn:sqp (damped BFGS, ℓ1 merit)": ("sqp", {"merit": "l1", "hessian": "bfgs"}),
    "tn:sqp (damped BFGS)": ("sqp", {"hessian": "bfgs"}),
}
"""torchnewton entries: (method, options). The SQP variants apply to equality-constrained problems;
on others torchnewton routes to the interior-point method as for ``tn:sqp``."""
SOLVERS = (*TN_VARIANTS, "scipy:SLSQP", "scipy:trust-constr", "ipopt:exact", "ipopt:lbfgs")
COUNTS = ("nfev", "njev", "nhev", "ncev", "njcev", "nchev")


class _Counted:
    """Wraps a problem's callables: counts each kind of call and enforces the time cap."""

    def __init__(self, seconds: float):
        self.counts: Counter[str] = Counter()  # float counts: see _scipy_split
        self.clock = _Clock(seconds)
        self.excluded_seconds = 0.0  # time of the shared check inside SLSQP's callback

    def __call__(self, kind: str, fn: Callable[..., Any], weight: float = 1.0) -> Callable[..., Any]:
        capped = self.clock.wrap(fn)

        def call(*args: Any) -> Any:
            self.counts[kind] += weight
            return capped(*args)

        return call


def _torch_hessian_of_constraints(problem: ConstrainedProblem) -> Callable[..., torch.Tensor]:
    def hess(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        weighted = np.einsum("i,ijk->jk", v.detach().cpu().numpy().reshape(-1),
                             problem.constraint_hessians_np(x.detach().cpu().numpy()))
        return torch.as_tensor(weighted, dtype=x.dtype, device=x.device)

    return hess


def _run_torchnewton(problem: ConstrainedProblem, solver: str, count: _Counted,
                     max_iter: int) -> tuple[np.ndarray, int, str]:
    method, options = TN_VARIANTS[solver]
    constraints = None
    if problem.m:
        constraints = NonlinearConstraint(
            count("ncev", problem.constraints), problem.c_lower, problem.c_upper,
            jac=count("njcev", problem.constraint_jacobian),
            hess=count("nchev", _torch_hessian_of_constraints(problem)))
    bounds = (problem.lower, problem.upper) if problem.has_bounds else None
    result = minimize(count("nfev", problem.objective), problem.x0.clone(), method=method, constraints=constraints,
                      bounds=bounds, jac=count("njev", problem.gradient), hess=count("nhev", problem.hessian),
                      tol=SOLVER_TOL, max_iter=max_iter, options=options if problem.equality_only else None)
    return result.x.detach().numpy(), int(result.nit), f"{result.method or method}: {result.status.name}"


def _scipy_split(problem: ConstrainedProblem, count: _Counted, hessians: bool) -> list[dict[str, Any]]:
    """scipy's ``eq`` / ``ineq`` dicts (with Ipopt's ``hess`` key when asked), empty ones left out.

    The solver calls every dict for one evaluation of c, so a call of one of k dicts counts 1/k:
    the split costs the peers nothing in the counts.
    """
    parts = []
    if problem.equality_rows.size:
        parts.append(("eq", problem.equality_np, problem.equality_jacobian_np, problem.equality_hessian_np))
    if sum(rows.size for rows in problem.inequality_sides):
        parts.append(("ineq", problem.inequality_np, problem.inequality_jacobian_np, problem.inequality_hessian_np))
    weight = 1.0 / max(1, len(parts))
    out = []
    for kind, fun, jac, hess in parts:
        entry = {"type": kind, "fun": count("ncev", fun, weight), "jac": count("njcev", jac, weight)}
        if hessians:
            entry["hess"] = count("nchev", hess, weight)
        out.append(entry)
    return out


def _run_scipy(problem: ConstrainedProblem, method: str, count: _Counted, max_iter: int) -> tuple[np.ndarray, int, str]:
    from scipy.optimize import Bounds, minimize as scipy_minimize
    from scipy.optimize import NonlinearConstraint as ScipyConstraint

    bounds = Bounds(problem.lower.numpy(), problem.upper.numpy()) if problem.has_bounds else None
    x0 = problem.x0.numpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "SLSQP":
            def stop_when_accepted(intermediate_result: Any) -> None:
                start = time.perf_counter()
                accepted = check_kkt(problem, intermediate_result.x).accepted
                count.excluded_seconds += time.perf_counter() - start
                if accepted:
                    raise StopIteration

            result = scipy_minimize(count("nfev", problem.objective_np), x0, jac=count("njev", problem.gradient_np),
                                    method="SLSQP", bounds=bounds, constraints=_scipy_split(problem, count, False),
                                    callback=stop_when_accepted, options={"maxiter": max_iter, "ftol": SLSQP_FTOL})
        else:
            constraints = []
            if problem.m:
                constraints = [ScipyConstraint(
                    count("ncev", problem.constraints_np), problem.c_lower.numpy(), problem.c_upper.numpy(),
                    jac=count("njcev", problem.constraint_jacobian_np),
                    hess=count("nchev", lambda x, v: np.einsum("i,ijk->jk", v, problem.constraint_hessians_np(x))))]
            result = scipy_minimize(count("nfev", problem.objective_np), x0, jac=count("njev", problem.gradient_np),
                                    hess=count("nhev", problem.hessian_np), method="trust-constr", bounds=bounds,
                                    constraints=constraints,
                                    options={"maxiter": max_iter, "gtol": SOLVER_TOL, "xtol": 1e-14,
                                             "barrier_tol": SOLVER_TOL})
    return np.asarray(result.x, dtype=np.float64), int(result.nit), _text(result.message)


def _run_ipopt(problem: ConstrainedProblem, exact: bool, count: _Counted, max_iter: int) -> tuple[np.ndarray, int, str]:
    from cyipopt import minimize_ipopt

    lower, upper = problem.lower.numpy(), problem.upper.numpy()
    bounds = list(zip(lower, upper)) if problem.has_bounds else None
    options = {"tol": SOLVER_TOL, "constr_viol_tol": SOLVER_TOL, "max_iter": max_iter, "print_level": 0, "sb": "yes"}
    if not exact:
        options["hessian_approximation"] = "limited-memory"
    result = minimize_ipopt(count("nfev", problem.objective_np), problem.x0.numpy().copy(),
                            jac=count("njev", problem.gradient_np),
                            hess=count("nhev", problem.hessian_np) if exact else None,
                            constraints=_scipy_split(problem, count, exact), bounds=bounds, options=options)
    return np.asarray(result.x, dtype=np.float64), int(result.nit), _text(result.message)


def _text(message: Any) -> str:
    return (message.decode() if isinstance(message, bytes) else str(message))[:80]


def run_solver(solver: str, problem: ConstrainedProblem, *, max_iter: int, time_cap: float) -> dict[str, Any]:
    """One solver on one problem, judged by the shared KKT checker at the x it returns."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {SOLVERS}")
    family, method = solver.split(":", 1)
    count = _Counted(time_cap)
    start = time.perf_counter()
    try:
        if family == "tn":
            x, nit, message = _run_torchnewton(problem, solver, count, max_iter)
        elif family == "scipy":
            x, nit, message = _run_scipy(problem, method, count, max_iter)
        else:
            x, nit, message = _run_ipopt(problem, method == "exact", count, max_iter)
    except TimeCapReached:
        x, nit, message = problem.x0.numpy(), 0, f"time cap {time_cap:g} s"
    except (ValueError, RuntimeError, OverflowError, np.linalg.LinAlgError, ZeroDivisionError) as error:
        # problem code or a solver failing at a wild iterate: recorded, not fatal to the benchmark
        x, nit, message = problem.x0.numpy(), 0, f"{type(error).__name__}: {str(error)[:80]}"
    seconds = time.perf_counter() - start - count.excluded_seconds
    check = check_kkt(problem, x)
    capped = message.startswith("time cap")
    return {"success": check.accepted and not capped, "optimality": check.optimality, "violation": check.violation,
            "fun": check.objective, "nit": nit, "seconds": seconds, "message": message,
            **{k: round(float(count.counts[k]), 1) for k in COUNTS}}
