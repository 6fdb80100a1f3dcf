"""One KKT checker for every solver of the constrained benchmark: a returned x is judged here,
never by the solver's own claim.

Write every constraint side as g_k(x) >= 0 (``c_i - c_l,i``, ``c_u,i - c_i``, ``x_j - l_j``,
``u_j - x_j`` for the finite sides) and every equality as h_k(x) = 0 (equality rows, and fixed
variables with l_j = u_j).  The multipliers are the least-squares ones with the right signs,

    (μ, λ) = argmin_{λ >= 0} ‖∇f(x) - ∇h(x)ᵀμ - ∇g(x)ᵀλ‖² + Σ_k (λ_k s_k)²,   s_k = |g_k(x)|,

a bounded linear least-squares problem (scipy's ``lsq_linear``, BVLS); the second term asks for
complementarity, so an inactive side gets λ_k ≈ 0 without choosing an active set.  Then

* ``optimality`` = max(‖∇f - ∇hᵀμ - ∇gᵀλ‖∞, max_k λ_k s_k) / max(1, ‖∇f(x)‖∞),
* ``violation``  = max_k [ -g_k(x) ]₊ / max(1, |side_k|) and |h_k(x)| / max(1, |side_k|), with
  side_k the bound or constraint limit of that row (scaled so that a limit of 10⁴ is met to
  relative accuracy),

and x is a KKT point when both are at most :data:`TOL` (1e-6) and everything is finite.  This
is the scaled first-order test of Ipopt and SNOPT, with multipliers recomputed at x so that every
solver is held to the same rule whatever multipliers it returns.

Example::

    problem = load_problem("HS28")
    check_kkt(problem, np.array([0.5, -0.5, 0.5])).accepted   # True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from ..problems.s2mpj_constrained import ConstrainedProblem

TOL = 1e-6


@dataclass(frozen=True)
class KKTCheck:
    optimality: float
    violation: float
    objective: float

    @property
    def accepted(self) -> bool:
        return bool(np.isfinite(self.objective) and self.optimality <= TOL and self.violation <= TOL)


def _rows(x: np.ndarray, c: np.ndarray, jac: np.ndarray, c_lower: np.ndarray, c_upper: np.ndarray,
          lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, ...]:
    """Equality rows (values, gradients, limits) and inequality sides (values, gradients, limits)."""
    n = x.size
    identity = np.eye(n)
    eq_rows = np.flatnonzero(c_lower == c_upper)
    fixed = np.flatnonzero(lower == upper)
    h = np.concatenate([c[eq_rows] - c_upper[eq_rows], x[fixed] - lower[fixed]])
    dh = np.vstack([jac[eq_rows], identity[fixed]])
    h_side = np.concatenate([c_upper[eq_rows], lower[fixed]])
    other = c_lower != c_upper
    low_rows = np.flatnonzero(other & np.isfinite(c_lower))
    up_rows = np.flatnonzero(other & np.isfinite(c_upper))
    free = lower != upper
    low_vars = np.flatnonzero(free & np.isfinite(lower))
    up_vars = np.flatnonzero(free & np.isfinite(upper))
    g = np.concatenate([c[low_rows] - c_lower[low_rows], c_upper[up_rows] - c[up_rows],
                        x[low_vars] - lower[low_vars], upper[up_vars] - x[up_vars]])
    dg = np.vstack([jac[low_rows], -jac[up_rows], identity[low_vars], -identity[up_vars]])
    g_side = np.concatenate([c_lower[low_rows], c_upper[up_rows], lower[low_vars], upper[up_vars]])
    return h, dh.reshape(-1, n), h_side, g, dg.reshape(-1, n), g_side


def _violation(h: np.ndarray, h_side: np.ndarray, g: np.ndarray, g_side: np.ndarray) -> float:
    return float(max(np.max(np.abs(h) / np.maximum(1.0, np.abs(h_side)), initial=0.0),
                     np.max(np.maximum(-g, 0.0) / np.maximum(1.0, np.abs(g_side)), initial=0.0)))


def kkt_residuals(x: np.ndarray, f: float, grad: np.ndarray, c: np.ndarray, jac: np.ndarray,
                  c_lower: np.ndarray, c_upper: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> KKTCheck:
    """Scaled optimality and violation of ``x`` from the values there (see the module docstring):
    f, ∇f (n,), c (m,), J (m, n), the constraint limits (m,) and the bounds (n,), ±inf allowed."""
    x, grad, c = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (x, grad, c))
    jac = np.asarray(jac, dtype=np.float64).reshape(c.size, x.size)
    with np.errstate(all="ignore"):
        h, dh, h_side, g, dg, g_side = _rows(x, c, jac, *(np.asarray(a, dtype=np.float64).reshape(-1)
                                                          for a in (c_lower, c_upper, lower, upper)))
    if not all(np.all(np.isfinite(a)) for a in (x, [f], grad, h, dh, g, dg)):
        return KKTCheck(np.inf, np.inf, np.nan)
    violation = _violation(h, h_side, g, g_side)
    n_eq, n_in = h.size, g.size
    gradients = np.vstack([dh, dg]).T  # (n, n_eq + n_in)
    if n_eq + n_in == 0:
        stationarity, complementarity = np.max(np.abs(grad), initial=0.0), 0.0
    else:
        slack = np.abs(g)
        system = np.vstack([gradients, np.hstack([np.zeros((n_in, n_eq)), np.diag(slack)])])
        rhs = np.concatenate([grad, np.zeros(n_in)])
        limits = (np.concatenate([np.full(n_eq, -np.inf), np.zeros(n_in)]), np.full(n_eq + n_in, np.inf))
        multipliers = lsq_linear(system, rhs, bounds=limits, method="bvls", tol=1e-14).x
        stationarity = np.max(np.abs(grad - gradients @ multipliers), initial=0.0)
        complementarity = np.max(multipliers[n_eq:] * slack, initial=0.0)
    scale = max(1.0, float(np.max(np.abs(grad), initial=0.0)))
    return KKTCheck(float(max(stationarity, complementarity) / scale), float(violation), float(f))


def check_kkt(problem: ConstrainedProblem, x: np.ndarray) -> KKTCheck:
    """:func:`kkt_residuals` of an S2MPJ problem at ``x`` (rejects a non-finite or misshaped x)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape != (problem.n,) or not np.all(np.isfinite(x)):
        return KKTCheck(np.inf, np.inf, np.nan)
    with np.errstate(all="ignore"):
        values = (problem.objective_np(x), problem.gradient_np(x), problem.constraints_np(x),
                  problem.constraint_jacobian_np(x))
    return kkt_residuals(x, *values, problem.c_lower.numpy(), problem.c_upper.numpy(),
                         problem.lower.numpy(), problem.upper.numpy())


def violation(problem: ConstrainedProblem, x: np.ndarray) -> float:
    """The scaled violation of :func:`check_kkt` from c(x) alone (no f, ∇f or J evaluated), NaN
    where it is not finite: a cheap first test, since x is rejected whenever it exceeds :data:`TOL`."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape != (problem.n,) or not np.all(np.isfinite(x)):
        return float("nan")
    with np.errstate(all="ignore"):
        c = problem.constraints_np(x)
        h, _, h_side, g, _, g_side = _rows(x, c, np.zeros((c.size, x.size)), problem.c_lower.numpy(),
                                           problem.c_upper.numpy(), problem.lower.numpy(), problem.upper.numpy())
        value = _violation(h, h_side, g, g_side)
    return value if np.isfinite(value) else float("nan")
