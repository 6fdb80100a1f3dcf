"""Square nonlinear systems F(x) = 0 from public suites, in one form for every root solver.

Two sources:

* **S2MPJ** (CUTEst in Python, :mod:`.s2mpj`): every problem of kind ``"equations"`` — no
  objective (or a constant one), only equality constraints, as many as variables, no bounds,
  analytic second derivatives — at its default size, n ≤ ``max_n``. That is the ``…NE``
  square systems and the other type-N square problems. Left out, and listed by
  :data:`S2MPJ_LEFT_OUT`: square systems with bounds (scipy's root solvers take none) and the
  S2MPJ ``…NE`` problems with more equations than unknowns (least squares, not root finding).
  F and J come from S2MPJ's own ``cx``/``cJx`` (numpy); torch callers get them through
  ``jac=``.
* **MGH** (Moré, Garbow & Hillstrom 1981, :mod:`.mgh`): the problems with m = n and a zero
  residual at the solution, at their standard sizes and starts. F is pure torch; J comes from
  autodiff (the numpy Jacobian for scipy is the same autodiff Jacobian, so both sides get exact
  derivatives).

:func:`solved` is the one checker every solver is judged by: ‖F(x)‖∞ ≤ tol, evaluated in
float64 by the problem's numpy residual on the returned x.

Example:
    >>> problems = mgh_equations()
    >>> [p.name for p in problems][:3]
    ['MGH:rosenbrock', 'MGH:freudenstein_roth', 'MGH:powell_badly_scaled']
    >>> solved(problems[0], np.ones(2), 1e-8)
    True
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ...derivatives import autodiff
from . import mgh, s2mpj

S2MPJ_LEFT_OUT = {
    "bounds": "square systems with bounds on the variables (CHANDHEQ, CHEMRCTA, EIGENA, HATFLDANE, HATFLDBNE, "
              "HATFLDCNE, HS1NE, HS2NE, NONSCOMPNE, QR3D): scipy.optimize.root takes no bounds",
    "overdetermined": "…NE problems with m > n are least-squares problems (kind \"least_squares\")",
}
"""Which S2MPJ nonlinear-equation problems :func:`s2mpj_equations` leaves out, and why."""


@dataclass(frozen=True)
class EquationProblem:
    """F: Rⁿ → Rⁿ with a standard start.

    ``residual`` / ``jacobian`` take and return torch tensors of shape (n,) / (n, n) (``jacobian``
    is None where autodiff through ``residual`` gives it); ``residual_np`` / ``jacobian_np`` are
    the float64 numpy forms for scipy and for the checker.
    """

    name: str
    source: str
    n: int
    x0: torch.Tensor
    residual: Callable[[torch.Tensor], torch.Tensor]
    jacobian: Callable[[torch.Tensor], torch.Tensor] | None
    residual_np: Callable[[np.ndarray], np.ndarray]
    jacobian_np: Callable[[np.ndarray], np.ndarray]

    def scaled_start(self, factor: float) -> "EquationProblem":
        """The same problem from factor·x₀ (MGH's hard starts use 10 and 100); named ``NAME×factor``."""
        return dataclasses.replace(self, name=f"{self.name}×{factor:g}", x0=self.x0 * factor)


def solved(problem: EquationProblem, x: np.ndarray | torch.Tensor, tol: float) -> bool:
    """The shared success test: ‖F(x)‖∞ ≤ tol in float64, F finite."""
    return residual_norm(problem, x) <= tol


def residual_norm(problem: EquationProblem, x: np.ndarray | torch.Tensor) -> float:
    """‖F(x)‖∞ in float64 (∞ where x or F(x) is not finite)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        return float("inf")
    with np.errstate(all="ignore"):
        try:
            F = problem.residual_np(x)
        except (ValueError, OverflowError, FloatingPointError, ZeroDivisionError):
            return float("inf")
    return float(np.max(np.abs(F))) if np.all(np.isfinite(F)) else float("inf")


def mgh_equations() -> list[EquationProblem]:
    """The MGH square systems with a zero residual, at their standard sizes and starts."""
    return [_from_mgh(p) for p in mgh.MGH_PROBLEMS if p.is_square_system]


def _from_mgh(p: mgh.MGHProblem) -> EquationProblem:
    def residual_np(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return p.residual(torch.as_tensor(x, dtype=torch.float64)).numpy()

    def jacobian(x: torch.Tensor) -> torch.Tensor:  # torchnewton's own autodiff Jacobian
        return autodiff.jacobian(p.residual, x.detach().unsqueeze(0))[1][0]

    def jacobian_np(x: np.ndarray) -> np.ndarray:
        return jacobian(torch.as_tensor(x, dtype=torch.float64)).numpy()

    return EquationProblem(name=f"MGH:{p.name}", source="MGH", n=p.n, x0=p.x0.clone(), residual=p.residual,
                           jacobian=None, residual_np=residual_np, jacobian_np=jacobian_np)


def s2mpj_equations(max_n: int = 100) -> tuple[list[EquationProblem], dict[str, str]]:
    """The S2MPJ square systems with n ≤ ``max_n``, and those that failed to load, with why."""
    loaded, failed = s2mpj.load_problems("equations", max_n=max_n)
    return [_from_s2mpj(p) for p in loaded], failed


def s2mpj_equation(name: str) -> EquationProblem:
    """One S2MPJ square system by name."""
    return _from_s2mpj(s2mpj.load_problem(name, "equations"))


def _from_s2mpj(p: s2mpj.S2MPJProblem) -> EquationProblem:
    if p.n != p.m:
        raise ValueError(f"{p.name} is not square (n = {p.n}, m = {p.m})")
    return EquationProblem(name=p.name, source="S2MPJ", n=p.n, x0=p.x0.clone(), residual=p.residual,
                           jacobian=p.residual_jacobian, residual_np=p.residual_np,
                           jacobian_np=p.residual_jacobian_np)
