"""The solvers of the constrained benchmark, each run on one S2MPJ problem through counted calls.

Every solver gets the problem's own analytic derivatives (gradient, constraint Jacobian and, for
the second-order methods, the Hessians of f and of each constraint), starts at S2MPJ's x0, and is
asked for a tight tolerance of its own (1e-8); whether it solved the problem is decided afterwards
by :func:`.constrained_kkt.check_kkt` at the x the run ends with.

Two protocols (:data:`PROTOCOLS`), the same for every solver:

* ``"shared"`` — *to the shared tolerance*: every iterate a solver reports (torchnewton's
  ``callback``, scipy's ``callback``, Ipopt's ``intermediate`` callback) goes to the shared checker
  and the run is cut at the first one it accepts; that iterate is the run's x and the evaluations
  are those counted up to the cut.  This is what a user who asks for 1e-6 pays.
* ``"own"`` — *own tolerance*: each solver runs until its own test (1e-8) stops it, and its
  final x is judged.  SLSQP is the exception: its own test is on the change of f, not a KKT test
  (see :data:`SLSQP_FTOL`), so it is cut at the shared check under both protocols.

The time the checks take is excluded from every run's time (and added to its time cap).

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
* ``ipopt:exact`` / ``ipopt:lbfgs`` — Ipopt through ``cyipopt.Problem`` with exact Hessians, and
  with its limited-memory quasi-Newton approximation; the problem is posed as
  ``cyipopt.minimize_ipopt`` poses it (scipy's split rows, dense derivatives, ``mu_strategy``
  adaptive), built here because ``minimize_ipopt`` offers no callback that can stop Ipopt.

Evaluations are counted by the wrappers, the same way for every solver: ``nfev`` objective values,
``njev`` gradients, ``nhev`` objective Hessians, ``ncev`` constraint values, ``njcev`` constraint
Jacobians, ``nchev`` constraint-curvature matrices Σ vᵢ∇²cᵢ (a problem's c counted once per
evaluation however a solver splits it).  Only the solver's own calls count: Ipopt is driven through
``cyipopt.Problem`` also so that ``minimize_ipopt``'s set-up calls at x0 (c and J to size the
problem, ∇²f to probe sparsity) are not charged to it.  A run past its wall-time cap is stopped at
the next evaluation and recorded as unsolved.
"""
from __future__ import annotations

import time
import traceback
import warnings
from collections import Counter
from typing import Any, Callable

import numpy as np
import torch

from ...solvers.constrained.spec import NonlinearConstraint
from ...solvers.objective.minimize import minimize
from ..problems.s2mpj_constrained import ConstrainedProblem
from .constrained_kkt import TOL, check_kkt, violation
from .minimize_cutest import TimeCapReached, _Clock

SOLVER_TOL = 1e-8
SLSQP_FTOL = 1e-12
"""SLSQP's own test is on the change of f, not a KKT test: with ftol 1e-8 it stops short of 1e-6
optimality on a third of the paper's problems, with ftol 1e-10 it runs to its iteration limit on
others without moving x (HS7).  So it runs with a tight ftol and is cut at the shared check under
both protocols."""
PROTOCOLS = ("shared", "own")
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
        self.excluded_seconds = 0.0  # time of the shared checks made during the run

    def __call__(self, kind: str, fn: Callable[..., Any], weight: float = 1.0) -> Callable[..., Any]:
        capped = self.clock.wrap(fn)

        def call(*args: Any) -> Any:
            self.counts[kind] += weight
            return capped(*args)

        return call

    def exclude(self, seconds: float) -> None:
        """Time spent outside the solver: not charged to it, neither in its time nor against its cap."""
        self.excluded_seconds += seconds
        self.clock.deadline += seconds


class SharedCheck:
    """The shared KKT check at each iterate a solver reports, through the solver's callback.

    Called with an iterate x, it records the checker's verdict and, at the first accepted
    iterate, a copy of x and the evaluation counts so far; it returns True ("stop now") when it
    accepts and ``stop`` is set.  With ``stop`` unset it only watches (the tests use that to
    compare a cut run with an uncut one).  Its own time is excluded from the run's.

    Example::

        check = SharedCheck(load_problem("HS28"), _Counted(10.0), stop=True)
        check(np.array([0.5, -0.5, 0.5]))   # True: the solution, so a solver's callback stops here
    """

    def __init__(self, problem: ConstrainedProblem, count: _Counted, stop: bool):
        self.problem, self.count, self.stop = problem, count, stop
        self.verdicts: list[bool] = []
        self.x: np.ndarray | None = None
        self.counts_at_acceptance: dict[str, float] | None = None

    def __call__(self, x: Any) -> bool:
        start = time.perf_counter()
        x = np.array(x, dtype=np.float64).reshape(-1)  # a copy: solvers may reuse their buffers
        # an iterate past the violation tolerance is rejected without evaluating f, ∇f and J
        accepted = violation(self.problem, x) <= TOL and check_kkt(self.problem, x).accepted
        self.verdicts.append(accepted)
        if accepted and self.x is None:
            self.x, self.counts_at_acceptance = x, {k: float(self.count.counts[k]) for k in COUNTS}
        self.count.exclude(time.perf_counter() - start)
        return accepted and self.stop

    @property
    def stopped(self) -> bool:
        return self.stop and self.x is not None


def _torch_hessian_of_constraints(problem: ConstrainedProblem) -> Callable[..., torch.Tensor]:
    def hess(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        weighted = np.einsum("i,ijk->jk", v.detach().cpu().numpy().reshape(-1),
                             problem.constraint_hessians_np(x.detach().cpu().numpy()))
        return torch.as_tensor(weighted, dtype=x.dtype, device=x.device)

    return hess


def _run_torchnewton(problem: ConstrainedProblem, solver: str, count: _Counted, max_iter: int,
                     check: SharedCheck | None) -> tuple[np.ndarray, int, str]:
    method, options = TN_VARIANTS[solver]
    constraints = None
    if problem.m:
        constraints = NonlinearConstraint(
            count("ncev", problem.constraints), problem.c_lower, problem.c_upper,
            jac=count("njcev", problem.constraint_jacobian),
            hess=count("nchev", _torch_hessian_of_constraints(problem)))
    bounds = (problem.lower, problem.upper) if problem.has_bounds else None
    callback = None if check is None else (lambda state: check(state.x[0].detach().cpu().numpy()))
    result = minimize(count("nfev", problem.objective), problem.x0.clone(), method=method, constraints=constraints,
                      bounds=bounds, jac=count("njev", problem.gradient), hess=count("nhev", problem.hessian),
                      tol=SOLVER_TOL, max_iter=max_iter, options=options if problem.equality_only else None,
                      callback=callback)
    # cut by the callback, result.x is the iterate the check accepted (status CALLBACK_STOP, or the
    # solver's own status when its test passed at the same iterate)
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


def _run_scipy(problem: ConstrainedProblem, method: str, count: _Counted, max_iter: int,
               check: SharedCheck | None) -> tuple[np.ndarray, int, str]:
    from scipy.optimize import Bounds, minimize as scipy_minimize
    from scipy.optimize import NonlinearConstraint as ScipyConstraint

    def callback(intermediate_result: Any) -> None:
        if check is not None and check(intermediate_result.x):
            raise StopIteration  # scipy's way to stop any method from its callback

    bounds = Bounds(problem.lower.numpy(), problem.upper.numpy()) if problem.has_bounds else None
    x0 = problem.x0.numpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "SLSQP":
            result = scipy_minimize(count("nfev", problem.objective_np), x0, jac=count("njev", problem.gradient_np),
                                    method="SLSQP", bounds=bounds, constraints=_scipy_split(problem, count, False),
                                    callback=callback, options={"maxiter": max_iter, "ftol": SLSQP_FTOL})
        else:
            constraints = []
            if problem.m:
                constraints = [ScipyConstraint(
                    count("ncev", problem.constraints_np), problem.c_lower.numpy(), problem.c_upper.numpy(),
                    jac=count("njcev", problem.constraint_jacobian_np),
                    hess=count("nchev", lambda x, v: np.einsum("i,ijk->jk", v, problem.constraint_hessians_np(x))))]
            result = scipy_minimize(count("nfev", problem.objective_np), x0, jac=count("njev", problem.gradient_np),
                                    hess=count("nhev", problem.hessian_np), method="trust-constr", bounds=bounds,
                                    constraints=constraints, callback=callback,
                                    options={"maxiter": max_iter, "gtol": SOLVER_TOL, "xtol": 1e-14,
                                             "barrier_tol": SOLVER_TOL})
    return np.asarray(result.x, dtype=np.float64), int(result.nit), _text(result.message)


class _IpoptProblem:
    """The callbacks ``cyipopt.Problem`` asks for: f, ∇f, the split rows (h = 0, g ≥ 0) stacked,
    their dense Jacobian, and the lower triangle of σ∇²f + Σ yᵢ∇²cᵢ; ``intermediate`` hands the
    current iterate to the shared check and returns False (Ipopt: stop) when it accepts."""

    def __init__(self, problem: ConstrainedProblem, count: _Counted, exact: bool, check: SharedCheck | None):
        self.parts = _scipy_split(problem, count, exact)
        inequality_rows = sum(rows.size for rows in problem.inequality_sides)
        self.sizes = [problem.equality_rows.size if p["type"] == "eq" else inequality_rows for p in self.parts]
        self.objective = count("nfev", problem.objective_np)
        self.gradient = count("njev", problem.gradient_np)
        self.objective_hessian = count("nhev", problem.hessian_np)
        self.n, self.check, self.nlp, self.nit = problem.n, check, None, 0
        self.tril = np.tril_indices(problem.n)

    @property
    def m(self) -> int:
        return sum(self.sizes)

    def constraints(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([p["fun"](x) for p in self.parts]) if self.parts else np.zeros(0)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(p["jac"](x)).reshape(-1) for p in self.parts]) if self.parts else np.zeros(0)

    def jacobianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return np.nonzero(np.ones((self.m, self.n)))

    def hessianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.tril

    def hessian(self, x: np.ndarray, multipliers: np.ndarray, obj_factor: float) -> np.ndarray:
        full = obj_factor * self.objective_hessian(x)
        for part, y in zip(self.parts, np.split(multipliers, np.cumsum(self.sizes)[:-1])):
            full = full + part["hess"](x, y)
        return full[self.tril]

    def intermediate(self, alg_mod: int, iter_count: int, *_: Any) -> bool:
        self.nit = iter_count
        return self.check is None or not self.check(self.nlp.get_current_iterate(scaled=False)["x"])


def _run_ipopt(problem: ConstrainedProblem, exact: bool, count: _Counted, max_iter: int,
               check: SharedCheck | None) -> tuple[np.ndarray, int, str]:
    import cyipopt

    callbacks = _IpoptProblem(problem, count, exact, check)
    rows = [(np.zeros(size), np.zeros(size) if part["type"] == "eq" else np.full(size, np.inf))
            for part, size in zip(callbacks.parts, callbacks.sizes)]
    c_lower = np.concatenate([low for low, _ in rows]) if rows else np.zeros(0)
    c_upper = np.concatenate([up for _, up in rows]) if rows else np.zeros(0)
    bounds = (problem.lower.numpy(), problem.upper.numpy()) if problem.has_bounds else (None, None)
    nlp = cyipopt.Problem(n=problem.n, m=callbacks.m, problem_obj=callbacks, lb=bounds[0], ub=bounds[1],
                          cl=c_lower, cu=c_upper)
    callbacks.nlp = nlp
    options = {"tol": SOLVER_TOL, "constr_viol_tol": SOLVER_TOL, "max_iter": max_iter, "print_level": 0, "sb": "yes",
               "mu_strategy": "adaptive"}  # minimize_ipopt's default, kept
    if not exact:
        options["hessian_approximation"] = "limited-memory"
    for key, value in options.items():
        nlp.add_option(key, value)
    x, info = nlp.solve(problem.x0.numpy().copy())
    return np.asarray(x, dtype=np.float64), callbacks.nit, _text(info["status_msg"])


def _text(message: Any) -> str:
    return (message.decode() if isinstance(message, bytes) else str(message))[:80]


def run_solver(solver: str, problem: ConstrainedProblem, *, max_iter: int, time_cap: float,
               protocol: str = "own", watch: bool = False) -> dict[str, Any]:
    """One solver on one problem under one of :data:`PROTOCOLS`, judged by the shared KKT checker.

    ``protocol="shared"`` cuts the run at the first iterate the checker accepts (SLSQP is cut so
    under both); ``watch=True`` checks every iterate without cutting (for tests: the record then
    has ``counts_at_acceptance``).  The record's ``success`` is the checker's verdict at the x the
    run ends with; ``verdicts`` lists the checker's verdicts at the iterates it saw.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {SOLVERS}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")
    family, method = solver.split(":", 1)
    count = _Counted(time_cap)
    stop = protocol == "shared" or solver == "scipy:SLSQP"
    check = SharedCheck(problem, count, stop) if stop or watch else None
    start = time.perf_counter()
    trace = None
    try:
        if family == "tn":
            x, nit, message = _run_torchnewton(problem, solver, count, max_iter, check)
        elif family == "scipy":
            x, nit, message = _run_scipy(problem, method, count, max_iter, check)
        else:
            x, nit, message = _run_ipopt(problem, method == "exact", count, max_iter, check)
    except TimeCapReached:
        x, nit, message = problem.x0.numpy(), 0, f"time cap {time_cap:g} s"
    except (ValueError, RuntimeError, OverflowError, np.linalg.LinAlgError, ZeroDivisionError) as error:
        # problem code or a solver failing at a wild iterate: recorded, not fatal to the benchmark
        x, nit, message = problem.x0.numpy(), 0, f"{type(error).__name__}: {str(error)[:80]}"
        trace = traceback.format_exc()
    seconds = time.perf_counter() - start - count.excluded_seconds
    capped = message.startswith("time cap")
    cut = check is not None and check.stopped and not capped
    returned_accepted_x = None
    if cut:  # judged at the iterate the check accepted; whether the solver hands that x back is recorded
        returned_accepted_x = bool(np.array_equal(np.asarray(x, dtype=np.float64).reshape(-1), check.x))
        x = check.x
    verdict = check_kkt(problem, x)
    record = {"success": verdict.accepted and not capped, "optimality": verdict.optimality,
              "violation": verdict.violation, "fun": verdict.objective, "nit": nit, "seconds": seconds,
              "check_seconds": count.excluded_seconds,
              "message": message, "protocol": protocol, "cut": cut, "returned_accepted_x": returned_accepted_x,
              "x": x.tolist(),
              **{k: round(float(count.counts[k]), 1) for k in COUNTS}}
    if trace is not None:  # for the failure analysis of the full run
        record["traceback"] = trace
    if check is not None:
        record["verdicts"] = check.verdicts
        record["counts_at_acceptance"] = check.counts_at_acceptance
    return record
