"""256 perturbed Hock–Schittkowski problems in one batched torchnewton call vs a loop over scipy SLSQP.

HS71 (Hock & Schittkowski 1981, problem 71), with instance b's constants perturbed:

    minimize   x₁x₄(x₁ + x₂ + x₃) + x₃
    subject to x₁x₂x₃x₄ ≥ 25·a_b,   x₁² + x₂² + x₃² + x₄² = 40·e_b,   1 ≤ x ≤ 5,

a_b, e_b uniform in [0.9, 1.1] and x0 = (1, 5, 5, 1) + 0.2·N(0, I) clipped into [1, 5]; the
published solution of the unperturbed problem is f* = 17.0140173 at (1, 4.7429994, 3.8211503,
1.3794082).  torchnewton solves the whole batch in one ``minimize(..., batch=True)`` call
(``method="sqp"`` routes the inequality to its interior-point method); SLSQP runs once per
instance with the same analytic gradients.  Both are judged per instance by the shared KKT
checker, and agree when their solutions are within 1e-5 (max norm).  Times are the median of
repeated runs (min shown too), interleaved.
"""
from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import numpy as np
import torch

from ...core.status import Status
from ...solvers.constrained.spec import NonlinearConstraint
from ...solvers.objective.minimize import minimize
from ..suite import BenchContext, markdown_table
from .constrained_kkt import kkt_residuals

BATCH = 256
AGREEMENT = 1e-5
PUBLISHED_F = 17.0140173
LOWER, UPPER = 1.0, 5.0


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


def run_torchnewton(x0: np.ndarray, a: np.ndarray, e: np.ndarray, max_iter: int = 200) -> Any:
    """One batched call on every instance."""
    at, et = torch.as_tensor(a), torch.as_tensor(e)
    constraint = NonlinearConstraint(lambda x: constraints(x, at, et), torch.tensor([0.0, 0.0], dtype=torch.float64),
                                     torch.tensor([float("inf"), 0.0], dtype=torch.float64))
    bounds = (torch.full((4,), LOWER, dtype=torch.float64), torch.full((4,), UPPER, dtype=torch.float64))
    return minimize(objective, torch.as_tensor(x0).clone(), method="sqp", constraints=constraint, bounds=bounds,
                    tol=1e-8, max_iter=max_iter, batch=True)


def run_slsqp_loop(x0: np.ndarray, a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """scipy SLSQP on each instance in turn; the solutions (B, 4)."""
    from scipy.optimize import Bounds
    from scipy.optimize import minimize as scipy_minimize

    bounds = Bounds(np.full(4, LOWER), np.full(4, UPPER))
    out = np.empty_like(x0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(x0.shape[0]):
            p = _numpy_problem(a[b], e[b])
            cons = [{"type": "ineq", "fun": lambda x, p=p: p["c"](x)[:1], "jac": lambda x, p=p: p["jac"](x)[:1]},
                    {"type": "eq", "fun": lambda x, p=p: p["c"](x)[1:], "jac": lambda x, p=p: p["jac"](x)[1:]}]
            out[b] = scipy_minimize(p["f"], x0[b], jac=p["grad"], method="SLSQP", bounds=bounds, constraints=cons,
                                    options={"maxiter": 500, "ftol": 1e-8}).x
    return out


def solved(x: np.ndarray, a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Per instance: does x pass the shared KKT check?"""
    c_lower, c_upper = np.array([0.0, 0.0]), np.array([np.inf, 0.0])
    lower, upper = np.full(4, LOWER), np.full(4, UPPER)
    out = np.zeros(x.shape[0], dtype=bool)
    for b in range(x.shape[0]):
        p = _numpy_problem(a[b], e[b])
        out[b] = kkt_residuals(x[b], p["f"](x[b]), p["grad"](x[b]), p["c"](x[b]), p["jac"](x[b]),
                               c_lower, c_upper, lower, upper).accepted
    return out


def _status_counts(status: torch.Tensor) -> dict[str, int]:
    names = [Status(int(s)).name for s in status.reshape(-1)]
    return {name: names.count(name) for name in sorted(set(names))}


def batch_comparison(ctx: BenchContext, batch: int = BATCH) -> tuple[str, dict[str, Any], list]:
    repeats = 1 if ctx.quick else 3
    x0, a, e = instances(batch, ctx.seed)
    times: dict[str, list[float]] = {"torchnewton (one batched call)": [], "scipy SLSQP (loop)": []}
    result, peer = None, None
    run_torchnewton(x0[:2], a[:2], e[:2])  # warm-up: first-call costs of torch, not of the method
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_torchnewton(x0, a, e)
        times["torchnewton (one batched call)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        peer = run_slsqp_loop(x0, a, e)
        times["scipy SLSQP (loop)"].append(time.perf_counter() - start)
    ours = result.x.detach().numpy()
    ok_ours, ok_peer = solved(ours, a, e), solved(peer, a, e)
    distance = np.max(np.abs(ours - peer), axis=1)
    agree = distance <= AGREEMENT
    f_ours = np.array([_numpy_problem(a[b], e[b])["f"](ours[b]) for b in range(batch)])
    f_peer = np.array([_numpy_problem(a[b], e[b])["f"](peer[b]) for b in range(batch)])
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians["scipy SLSQP (loop)"] / medians["torchnewton (one batched call)"]
    rows = [[k, f"{medians[k]:.3g} s", f"{min(v):.3g} s"] for k, v in times.items()]
    lower_f = int(np.sum(f_ours < f_peer - 1e-6))
    higher_f = int(np.sum(f_ours > f_peer + 1e-6))
    markdown = "\n".join([
        f"{batch} perturbed HS71 instances (constants ±10 %, x0 perturbed; seed {ctx.seed}), {repeats} timed "
        "repeat(s) after a warm-up, 1 thread.",
        "",
        markdown_table(["solver", "median wall time", "min wall time"], rows),
        "",
        f"Speed-up of the batched call over the SLSQP loop: **{ratio:.3g}x** (goal ≥ 10x: "
        f"**{'met' if ratio >= 10 else 'not met'}**). KKT-checked solved: torchnewton {int(ok_ours.sum())}/{batch}, "
        f"SLSQP {int(ok_peer.sum())}/{batch}; solutions within {AGREEMENT:g} of each other: {int(agree.sum())}/{batch} "
        f"(median distance {np.median(distance):.2e}, max {np.max(distance):.2e}); where they differ torchnewton's f "
        f"is lower on {lower_f}, higher on {higher_f}. torchnewton statuses: "
        f"{_status_counts(result.status)}; "
        f"median iterations {float(np.median(result.nit.numpy())):.0f}. Unperturbed published f* = {PUBLISHED_F}.",
    ])
    figures = {"batch": batch, "repeats": repeats, "seconds": times, "median_seconds": medians, "speedup": ratio,
               "solved_torchnewton": int(ok_ours.sum()), "solved_slsqp": int(ok_peer.sum()),
               "agree": int(agree.sum()), "max_distance": float(np.max(distance)),
               "median_distance": float(np.median(distance)), "tn_lower_f": lower_f, "tn_higher_f": higher_f}
    return markdown, figures, []
