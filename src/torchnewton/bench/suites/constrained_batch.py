"""256 perturbed Hock–Schittkowski problems in one batched torchnewton call vs a loop over scipy SLSQP.

Two problems, one for each constrained method (Hock & Schittkowski 1981), instance b's constants
perturbed by factors a_b, e_b uniform in [0.9, 1.1]:

* HS71, inequality + equality + bounds (``method="sqp"`` routes it to the interior-point method):

      minimize   x₁x₄(x₁ + x₂ + x₃) + x₃
      subject to x₁x₂x₃x₄ ≥ 25·a_b,   x₁² + x₂² + x₃² + x₄² = 40·e_b,   1 ≤ x ≤ 5,

  x0 = (1, 5, 5, 1) + 0.2·N(0, I) clipped into [1, 5]; the published solution of the unperturbed
  problem is f* = 17.0140173 at (1, 4.7429994, 3.8211503, 1.3794082).
* HS7, one equality (solved by SQP):

      minimize   log(1 + x₁²) − x₂   subject to   (1 + x₁²)² + x₂² = 4·e_b,

  x0 = (2, 2) + 0.2·N(0, I); the solution is x* = (0, √(4e_b − 1)), f* = −√(4e_b − 1) (published
  for e_b = 1: (0, √3)).

torchnewton solves each whole batch in one ``minimize(..., batch=True)`` call, once with autodiff
derivatives (first and second: it is given no ``jac``/``hess``) and once with hand-coded batched
∇f, ∇²f, J and constraint Hessians (``analytic``). SLSQP runs once per instance, as a user would
call it (a Python loop building each instance's functions and calling ``scipy.optimize.minimize``),
with hand-coded gradients and Jacobians: against the autodiff run that favours SLSQP (its
derivatives cost one numpy expression, torchnewton's reverse passes); the analytic run is the
like-for-like comparison. Same x0, tolerance 1e-8 on both sides. Both are judged per instance by
the shared KKT checker, and agree when their solutions are within 1e-5 (max norm). The three runs
alternate (interleaved) after one warm-up each; the report gives min and median of the repeats
and the speed-up by both. It also counts the torch operations (every call through the dispatcher,
the autograd passes' included) per batched iteration of one more run of each kind: a figure that
the load of a shared machine does not change.
"""
from __future__ import annotations

import functools
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ...core.status import Status
from ...solvers.constrained.spec import NonlinearConstraint
from ...solvers.objective.minimize import minimize
from ..suite import BenchContext, markdown_table
from .constrained_kkt import kkt_residuals

BATCH = 256
AGREEMENT = 1e-5
PUBLISHED_F = 17.0140173
LOWER, UPPER = 1.0, 5.0
TOL = 1e-8


@dataclass
class BatchProblem:
    """A perturbed HS problem: its batched torch form, its per-instance numpy form and its limits."""

    name: str
    method: str  # the torchnewton method that solves it ("sqp" routes inequalities to interior point)
    instances: Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]  # (batch, seed) -> x0, a, e
    objective: Callable[[torch.Tensor], torch.Tensor]  # (B, n) -> (B,)
    constraints: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, a, e) -> (B, m)
    numpy: Callable[[float, float], dict[str, Any]]  # (a_b, e_b) -> f, grad, c, jac
    c_lower: np.ndarray
    c_upper: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    # the analytic derivatives in torch, batched: ∇f, ∇²f, J (B, m, n) and (x, v) ↦ Σ vᵢ∇²cᵢ
    derivatives: Callable[[], dict[str, Callable]] | None = None


# ---- HS71 --------------------------------------------------------------------------------
def instances(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x0 (B, 4) and the constants a, e (B,) of the perturbed HS71 instances."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.9, 1.1, batch)
    e = rng.uniform(0.9, 1.1, batch)
    x0 = np.clip(np.array([1.0, 5.0, 5.0, 1.0]) + 0.2 * rng.standard_normal((batch, 4)), LOWER, UPPER)
    return x0, a, e


def objective(x: torch.Tensor) -> torch.Tensor:
    """HS71's objective on a (B, 4) batch -> (B,)."""
    return x[..., 0] * x[..., 3] * (x[..., 0] + x[..., 1] + x[..., 2]) + x[..., 2]


def constraints(x: torch.Tensor, a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """(x₁x₂x₃x₄ - 25a, ‖x‖² - 40e) on a (B, 4) batch -> (B, 2): ≥ 0 and = 0."""
    return torch.stack([x.prod(-1) - 25.0 * a, (x * x).sum(-1) - 40.0 * e], dim=-1)


def _numpy_problem(a: float, e: float) -> dict[str, Any]:
    def f(x: np.ndarray) -> float:
        return float(x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2])

    def grad(x: np.ndarray) -> np.ndarray:
        s = x[0] + x[1] + x[2]
        return np.array([x[3] * s + x[0] * x[3], x[0] * x[3], x[0] * x[3] + 1.0, x[0] * s])

    def c(x: np.ndarray) -> np.ndarray:
        return np.array([np.prod(x) - 25.0 * a, x @ x - 40.0 * e])

    def jac(x: np.ndarray) -> np.ndarray:
        p = np.prod(x)
        return np.array([[p / x[0], p / x[1], p / x[2], p / x[3]], 2.0 * x])

    return {"f": f, "grad": grad, "c": c, "jac": jac}


def _hs71_derivatives() -> dict[str, Callable]:
    def grad(x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = x.unbind(-1)
        return torch.stack([x4 * (2 * x1 + x2 + x3), x1 * x4, x1 * x4 + 1, x1 * (x1 + x2 + x3)], -1)

    def hess(x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = x.unbind(-1)
        zero, corner = torch.zeros_like(x1), 2 * x1 + x2 + x3
        rows = [[2 * x4, x4, x4, corner], [x4, zero, zero, x1], [x4, zero, zero, x1], [corner, x1, x1, zero]]
        return torch.stack([torch.stack(row, -1) for row in rows], -2)

    def jac(x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = x.unbind(-1)
        product_row = torch.stack([x2 * x3 * x4, x1 * x3 * x4, x1 * x2 * x4, x1 * x2 * x3], -1)
        return torch.stack([product_row, 2 * x], -2)

    def constraint_hess(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = x.unbind(-1)
        zero = torch.zeros_like(x1)
        rows = [[zero, x3 * x4, x2 * x4, x2 * x3], [x3 * x4, zero, x1 * x4, x1 * x3],
                [x2 * x4, x1 * x4, zero, x1 * x2], [x2 * x3, x1 * x3, x1 * x2, zero]]
        product = torch.stack([torch.stack(row, -1) for row in rows], -2)
        eye = torch.eye(4, dtype=x.dtype, device=x.device)
        return v[:, :1, None] * product + 2 * v[:, 1:, None] * eye

    return {"jac": grad, "hess": hess, "constraint_jac": jac, "constraint_hess": constraint_hess}


HS71 = BatchProblem("HS71", "sqp", instances, objective, constraints, _numpy_problem,
                    np.array([0.0, 0.0]), np.array([np.inf, 0.0]), np.full(4, LOWER), np.full(4, UPPER),
                    _hs71_derivatives)


# ---- HS7 ---------------------------------------------------------------------------------
def hs7_instances(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x0 (B, 2) and the constants (unused a, e) (B,) of the perturbed HS7 instances."""
    rng = np.random.default_rng(seed + 7)
    e = rng.uniform(0.9, 1.1, batch)
    x0 = np.array([2.0, 2.0]) + 0.2 * rng.standard_normal((batch, 2))
    return x0, np.ones(batch), e


def hs7_objective(x: torch.Tensor) -> torch.Tensor:
    """HS7's objective log(1 + x₁²) − x₂ on a (B, 2) batch -> (B,)."""
    return torch.log1p(x[..., 0] ** 2) - x[..., 1]


def hs7_constraints(x: torch.Tensor, a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """(1 + x₁²)² + x₂² − 4e on a (B, 2) batch -> (B, 1), = 0."""
    return ((1 + x[..., 0] ** 2) ** 2 + x[..., 1] ** 2 - 4.0 * e).unsqueeze(-1)


def _hs7_numpy(a: float, e: float) -> dict[str, Any]:
    def f(x: np.ndarray) -> float:
        return float(np.log1p(x[0] ** 2) - x[1])

    def grad(x: np.ndarray) -> np.ndarray:
        return np.array([2 * x[0] / (1 + x[0] ** 2), -1.0])

    def c(x: np.ndarray) -> np.ndarray:
        return np.array([(1 + x[0] ** 2) ** 2 + x[1] ** 2 - 4.0 * e])

    def jac(x: np.ndarray) -> np.ndarray:
        return np.array([[4 * x[0] * (1 + x[0] ** 2), 2 * x[1]]])

    return {"f": f, "grad": grad, "c": c, "jac": jac}


def _hs7_derivatives() -> dict[str, Callable]:
    def grad(x: torch.Tensor) -> torch.Tensor:
        x1 = x[..., 0]
        return torch.stack([2 * x1 / (1 + x1 ** 2), -torch.ones_like(x1)], -1)

    def hess(x: torch.Tensor) -> torch.Tensor:
        x1 = x[..., 0]
        zero = torch.zeros_like(x1)
        corner = 2 * (1 - x1 ** 2) / (1 + x1 ** 2) ** 2
        return torch.stack([torch.stack([corner, zero], -1), torch.stack([zero, zero], -1)], -2)

    def jac(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.unbind(-1)
        return torch.stack([4 * x1 * (1 + x1 ** 2), 2 * x2], -1).unsqueeze(-2)

    def constraint_hess(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x1 = x[..., 0]
        zero = torch.zeros_like(x1)
        diagonal = torch.stack([torch.stack([4 + 12 * x1 ** 2, zero], -1), torch.stack([zero, 2 + zero], -1)], -2)
        return v[:, :1, None] * diagonal

    return {"jac": grad, "hess": hess, "constraint_jac": jac, "constraint_hess": constraint_hess}


HS7 = BatchProblem("HS7", "sqp", hs7_instances, hs7_objective, hs7_constraints, _hs7_numpy,
                   np.array([0.0]), np.array([0.0]), np.full(2, -np.inf), np.full(2, np.inf), _hs7_derivatives)
PROBLEMS = (HS71, HS7)


# ---- the two sides -----------------------------------------------------------------------
def batch_constraint(problem: BatchProblem, a: np.ndarray, e: np.ndarray, analytic: bool = False
                     ) -> NonlinearConstraint:
    """The batched constraint of ``problem`` with constants a, e (and its derivatives if ``analytic``)."""
    at, et = torch.as_tensor(a), torch.as_tensor(e)
    given = problem.derivatives() if analytic and problem.derivatives is not None else {}
    return NonlinearConstraint(lambda x: problem.constraints(x, at, et),
                               torch.as_tensor(problem.c_lower), torch.as_tensor(problem.c_upper),
                               jac=given.get("constraint_jac"), hess=given.get("constraint_hess"))


# per derivatives factory (its identity, not the problem's name: a test's counting factory is its own)
_OBJECTIVE_DERIVATIVES: dict[Callable, dict[str, Callable]] = {}


def run_torchnewton(x0: np.ndarray, a: np.ndarray, e: np.ndarray, max_iter: int = 200,
                    problem: BatchProblem = HS71, analytic: bool = False, compile: bool = False,
                    constraint: NonlinearConstraint | None = None) -> Any:
    """One batched call on every instance; ``analytic``: with the problem's hand-coded ∇f, ∇²f, J
    and constraint Hessians instead of autodiff. ``compile``: ``options={"compile": True}``, with
    ``constraint`` (:func:`batch_constraint`) made once and passed to every call, as a user of the
    compiled mode would (the compiled graphs are kept per function object: a new constraint
    function is a new compilation)."""
    if analytic and problem.derivatives is not None:  # one set of functions per problem: compiled once
        given = _OBJECTIVE_DERIVATIVES.get(problem.derivatives)
        if given is None:
            given = _OBJECTIVE_DERIVATIVES[problem.derivatives] = problem.derivatives()
    else:
        given = {}
    constraint = constraint if constraint is not None else batch_constraint(problem, a, e, analytic)
    bounds = None
    if np.isfinite(problem.lower).any() or np.isfinite(problem.upper).any():
        bounds = (torch.as_tensor(problem.lower), torch.as_tensor(problem.upper))
    return minimize(problem.objective, torch.as_tensor(x0).clone(), method=problem.method, constraints=constraint,
                    bounds=bounds, tol=TOL, max_iter=max_iter, batch=True, jac=given.get("jac"),
                    hess=given.get("hess"), options={"compile": True} if compile else None)


def run_slsqp_loop(x0: np.ndarray, a: np.ndarray, e: np.ndarray, problem: BatchProblem = HS71) -> np.ndarray:
    """scipy SLSQP on each instance in turn; the solutions (B, n)."""
    from scipy.optimize import Bounds
    from scipy.optimize import minimize as scipy_minimize

    bounded = np.isfinite(problem.lower).any() or np.isfinite(problem.upper).any()
    bounds = Bounds(problem.lower, problem.upper) if bounded else None
    equality = problem.c_lower == problem.c_upper
    out = np.empty_like(x0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(x0.shape[0]):
            p = problem.numpy(a[b], e[b])
            cons = []
            if (~equality).any():  # c ≥ c_lower (the only inequality kind used here)
                rows = ~equality
                cons.append({"type": "ineq", "fun": lambda x, p=p, r=rows: p["c"](x)[r] - problem.c_lower[r],
                             "jac": lambda x, p=p, r=rows: p["jac"](x)[r]})
            cons.append({"type": "eq", "fun": lambda x, p=p: p["c"](x)[equality] - problem.c_lower[equality],
                         "jac": lambda x, p=p: p["jac"](x)[equality]})
            out[b] = scipy_minimize(p["f"], x0[b], jac=p["grad"], method="SLSQP", bounds=bounds, constraints=cons,
                                    options={"maxiter": 500, "ftol": TOL}).x
    return out


def solved(x: np.ndarray, a: np.ndarray, e: np.ndarray, problem: BatchProblem = HS71) -> np.ndarray:
    """Per instance: does x pass the shared KKT check?"""
    out = np.zeros(x.shape[0], dtype=bool)
    for b in range(x.shape[0]):
        p = problem.numpy(a[b], e[b])
        out[b] = kkt_residuals(x[b], p["f"](x[b]), p["grad"](x[b]), p["c"](x[b]), p["jac"](x[b]),
                               problem.c_lower, problem.c_upper, problem.lower, problem.upper).accepted
    return out


class _OpCounter(TorchDispatchMode):
    """Counts the torch operations dispatched inside it (the autograd engine's included)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def operations_per_iteration(run: Callable[[], Any]) -> float:
    """Torch operations per batched iteration of ``run()`` (a torchnewton call), over its largest ``nit``."""
    with _OpCounter() as counter:
        result = run()
    return counter.count / max(int(result.nit.max()), 1)


def _status_counts(status: torch.Tensor) -> dict[str, int]:
    names = [Status(int(s)).name for s in status.reshape(-1)]
    return {name: names.count(name) for name in sorted(set(names))}


def compare(problem: BatchProblem, batch: int, seed: int, repeats: int,
            compiled_kinds: tuple[str, ...] = ("autodiff", "analytic")
            ) -> tuple[list[Any], list[list[Any]], dict[str, Any], str]:
    """(table row, compiled-mode rows, figures, one line of detail) for one problem: the batched call,
    eager and compiled, vs the SLSQP loop."""
    x0, a, e = problem.instances(batch, seed)
    times: dict[str, list[float]] = {"torchnewton": [], "torchnewton analytic": [], "SLSQP loop": [],
                                     "compiled": [], "compiled analytic": []}
    result, analytic, peer = None, None, None
    # warm-up: first-call costs of torch and scipy (imports, allocator), not of either method
    run_torchnewton(x0[:2], a[:2], e[:2], problem=problem)
    run_torchnewton(x0[:2], a[:2], e[:2], problem=problem, analytic=True)
    run_slsqp_loop(x0[:2], a[:2], e[:2], problem=problem)
    # the compiled mode: its constraint made once (the compiled graphs' key); the first call compiles
    compiled_runs = {kind: functools.partial(run_torchnewton, x0, a, e, problem=problem, analytic=kind == "analytic",
                                             compile=True,
                                             constraint=batch_constraint(problem, a, e, kind == "analytic"))
                     for kind in compiled_kinds}
    compile_seconds = {kind: float(run().compile_seconds) for kind, run in compiled_runs.items()}
    compiled = {}
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_torchnewton(x0, a, e, problem=problem)
        times["torchnewton"].append(time.perf_counter() - start)
        start = time.perf_counter()
        analytic = run_torchnewton(x0, a, e, problem=problem, analytic=True)
        times["torchnewton analytic"].append(time.perf_counter() - start)
        for kind, run in compiled_runs.items():
            start = time.perf_counter()
            compiled[kind] = run()
            times["compiled" if kind == "autodiff" else "compiled analytic"].append(time.perf_counter() - start)
        start = time.perf_counter()
        peer = run_slsqp_loop(x0, a, e, problem=problem)
        times["SLSQP loop"].append(time.perf_counter() - start)
    ops = operations_per_iteration(lambda: run_torchnewton(x0, a, e, problem=problem))
    ops_analytic = operations_per_iteration(lambda: run_torchnewton(x0, a, e, problem=problem, analytic=True))
    compiled_rows, compiled_figures = [], {}
    for kind, run in compiled_runs.items():
        name = "compiled" if kind == "autodiff" else "compiled analytic"
        eager = result if kind == "autodiff" else analytic
        out = compiled[kind]
        speedup = statistics.median(times["SLSQP loop"]) / statistics.median(times[name])
        speedup_min = min(times["SLSQP loop"]) / min(times[name])
        ops_compiled = operations_per_iteration(run)
        # compiled and eager iterates agree to round-off (fused kernels may round differently)
        distance = float((out.x - eager.x).abs().max())
        per_iteration = min(times[name]) / max(int(out.nit.max()), 1)
        compiled_rows.append([problem.name, kind, f"{statistics.median(times[name]) * 1e3:.3g} ms "
                              f"({min(times[name]) * 1e3:.3g})", f"**{speedup:.3g}x** ({speedup_min:.3g}x)",
                              "met" if speedup >= 10 else "not met", f"{compile_seconds[kind]:.3g} s",
                              f"{per_iteration * 1e3:.3g} ms", f"{ops_compiled:.0f}",
                              f"{distance:.1e}", str(bool(out.compiled))])
        compiled_figures[kind] = {"median_seconds": statistics.median(times[name]), "min_seconds": min(times[name]),
                                  "speedup": speedup, "speedup_of_minima": speedup_min,
                                  "goal_10x_met": bool(speedup >= 10), "compile_seconds": compile_seconds[kind],
                                  "seconds_per_batched_iteration": per_iteration,
                                  "ops_per_batched_iteration": ops_compiled, "max_distance_to_eager": distance,
                                  "compiled": bool(out.compiled),
                                  "iterations_equal": bool(torch.equal(out.nit, eager.nit))}
    ours = result.x.detach().numpy()
    # the analytic derivatives change the arithmetic, not the method: the same solutions
    analytic_distance = float(np.max(np.abs(analytic.x.detach().numpy() - ours)))
    ok_ours, ok_peer = solved(ours, a, e, problem), solved(peer, a, e, problem)
    distance = np.max(np.abs(ours - peer), axis=1)
    agree = distance <= AGREEMENT
    f_ours = np.array([problem.numpy(a[b], e[b])["f"](ours[b]) for b in range(batch)])
    f_peer = np.array([problem.numpy(a[b], e[b])["f"](peer[b]) for b in range(batch)])
    times = {k: v for k, v in times.items() if v}  # a compiled kind not run (quick mode) has no times
    medians = {k: statistics.median(v) for k, v in times.items()}
    minima = {k: min(v) for k, v in times.items()}
    ratio = medians["SLSQP loop"] / medians["torchnewton"]
    ratio_min = minima["SLSQP loop"] / minima["torchnewton"]
    ratio_analytic = medians["SLSQP loop"] / medians["torchnewton analytic"]
    ratio_analytic_min = minima["SLSQP loop"] / minima["torchnewton analytic"]
    lower_f, higher_f = int(np.sum(f_ours < f_peer - 1e-6)), int(np.sum(f_ours > f_peer + 1e-6))
    nit = result.nit.numpy()
    # the batch iterates until its slowest member is done: that many batched iterations were paid for
    per_iteration = minima["torchnewton"] / max(int(nit.max()), 1)
    row = [problem.name, result.method, f"{medians['torchnewton'] * 1e3:.3g} ms ({minima['torchnewton'] * 1e3:.3g})",
           f"{medians['SLSQP loop'] * 1e3:.3g} ms ({minima['SLSQP loop'] * 1e3:.3g})",
           f"**{ratio:.3g}x** ({ratio_min:.3g}x)",
           f"{medians['torchnewton analytic'] * 1e3:.3g} ms ({minima['torchnewton analytic'] * 1e3:.3g})",
           f"**{ratio_analytic:.3g}x** ({ratio_analytic_min:.3g}x)",
           "met" if ratio >= 10 else ("met with analytic derivatives" if ratio_analytic >= 10 else "not met"),
           f"{per_iteration * 1e3:.3g} ms", f"{ops:.0f} / {ops_analytic:.0f}", f"{int(ok_ours.sum())}/{batch}",
           f"{int(ok_peer.sum())}/{batch}",
           f"{int(agree.sum())}/{batch}", f"{float(np.median(nit)):.0f} / {int(nit.max())}"]
    detail = (f"{problem.name}: solutions within {AGREEMENT:g} of each other on {int(agree.sum())}/{batch} "
              f"(median distance {np.median(distance):.2e}, max {np.max(distance):.2e}); where they differ "
              f"torchnewton's f is lower on {lower_f}, higher on {higher_f}; torchnewton statuses "
              f"{_status_counts(result.status)}; with analytic derivatives it lands within "
              f"{analytic_distance:.1e} of its autodiff solutions.")
    figures = {"batch": batch, "repeats": repeats, "method": result.method, "seconds": times,
               "median_seconds": medians, "min_seconds": minima, "speedup": ratio, "speedup_of_minima": ratio_min,
               "goal_10x_met": bool(ratio >= 10), "seconds_per_batched_iteration": per_iteration,
               "ops_per_batched_iteration": ops, "ops_per_batched_iteration_analytic": ops_analytic,
               "speedup_analytic": ratio_analytic, "speedup_analytic_of_minima": ratio_analytic_min,
               "goal_10x_met_analytic": bool(ratio_analytic >= 10), "analytic_max_distance": analytic_distance,
               "solved_torchnewton": int(ok_ours.sum()), "solved_slsqp": int(ok_peer.sum()),
               "agree": int(agree.sum()), "max_distance": float(np.max(distance)),
               "median_distance": float(np.median(distance)), "tn_lower_f": lower_f, "tn_higher_f": higher_f,
               "median_iterations": float(np.median(nit)), "max_iterations": int(nit.max()),
               "compiled": compiled_figures}
    return row, compiled_rows, figures, detail


def _met(figures: dict[str, Any]) -> str:
    met = [f"{name} {kind}" for name, f in figures.items() for kind, c in f["compiled"].items() if c["goal_10x_met"]]
    return ", ".join(met) if met else "no row"


def batch_comparison(ctx: BenchContext, batch: int = BATCH) -> tuple[str, dict[str, Any], list]:
    repeats = 3 if ctx.quick else 7
    # the compilation of HS71's autodiff Hessian (the double backward of a product) takes tens of
    # seconds: quick mode compiles the analytic runs only
    kinds = ("analytic",) if ctx.quick else ("autodiff", "analytic")
    rows, compiled_rows, figures, details = [], [], {}, []
    for problem in PROBLEMS:
        row, more, numbers, detail = compare(problem, batch, ctx.seed, repeats, kinds)
        rows.append(row)
        compiled_rows.extend(more)
        figures[problem.name] = numbers
        details.append(detail)
    worst = min(f["speedup"] for f in figures.values())
    worst_analytic = min(f["speedup_analytic"] for f in figures.values())
    markdown = "\n".join([
        f"{batch} perturbed instances of each problem (constants ±10 %, x0 perturbed; seed {ctx.seed}), "
        f"{repeats} interleaved timed repeat(s) after a warm-up, 1 thread, tol {TOL:g} on both sides. "
        "torchnewton: autodiff first and second derivatives (default), and with hand-coded ∇f, ∇²f, J and "
        "constraint Hessians (analytic, the fair match for SLSQP's hand-coded gradients and Jacobians); SLSQP "
        "called in a Python loop as a user would. Speed-up = SLSQP loop time / torchnewton time.",
        "",
        markdown_table(["problem", "torchnewton method", "torchnewton median (min)", "SLSQP loop median (min)",
                        "speed-up by median (by min)", "tn analytic median (min)", "speed-up analytic",
                        "goal ≥ 10x", "tn time per batched iteration (min)",
                        "torch ops per iteration (autodiff / analytic)",
                        "KKT-checked solved (tn)", "solved (SLSQP)", "agree", "iterations median / max"],
                       rows),
        "",
        f"Smallest speed-up (by median) of the batched call over the SLSQP loop: **{worst:.3g}x** with autodiff, "
        f"**{worst_analytic:.3g}x** with analytic derivatives (goal ≥ 10x: "
        f"**{'met' if max(worst, worst_analytic) >= 10 else 'not met'}**). The batched time per iteration is "
        "mostly the method's own small tensor operations, not derivatives: analytic derivatives remove only "
        f"part of it. Unperturbed HS71 published f* = {PUBLISHED_F}.",
        "",
        "Compiled mode (``options={\"compile\": True}``: f, c and their derivatives traced once and fused by "
        "Inductor, cached per function and shape, and so is the method's own arithmetic between its LAPACK "
        "factorizations and host decisions: the interior point's residuals, fractions to the boundary, merit "
        "and barrier update, SQP's penalty, merit and trial tests, the KKT assembly and the termination test; "
        "the constraint function made once and reused, as the cache needs). Timed interleaved with the runs above (warm: the one-time compilation, in its own column, "
        "happened in a first call before the repeats)"
        f"{'; quick mode: analytic derivatives only (--full adds autodiff)' if ctx.quick else ''}:",
        "",
        markdown_table(["problem", "derivatives", "tn compiled median (min)", "speed-up vs SLSQP loop by median "
                        "(by min)", "goal ≥ 10x", "one-time compile", "time per batched iteration (min)",
                        "torch ops per iteration", "max |x − x eager|", "compiled"], compiled_rows),
        "",
        f"Goal ≥ 10x in compiled mode: met by {_met(figures)}.",
        "",
        *details,
    ])
    return markdown, figures, []
