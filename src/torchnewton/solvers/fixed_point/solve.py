"""``torchnewton.fixed_point``: solve z = T(z) by fixed-point iterations or by Newton on z − T(z)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from ...core.result import Result
from ...core.tolerances import default_tol
from ...core.validate import check_method, check_options, check_positive, check_same_device, check_tensor
from ..entry import build_result, check_callable, check_output
from .adjoint import adjoint_fixed_point_solution
from .anderson import REGULARIZATION_FORMS, Anderson
from .methods import Halpern, KrasnoselskiiMann, Picard, halpern_certificate
from .problem import NORMS, FixedPointProblem
from .termination import FixedPointTermination
from ..implicit import differentiable_args, differentiate_solution, substitute_args
from ..loop import LoopOutput, iterate
from ..residual.problem import batch_function
from ..residual.root import _OPTIONS as _ROOT_OPTIONS
from ..residual.root import root

METHODS = ("anderson", "picard", "krasnoselskii-mann", "halpern", "broyden", "newton")
ITERATIONS = ("anderson", "picard", "krasnoselskii-mann", "halpern")
_COMMON = ("norm", "patience", "adjoint")
_OPTIONS = {
    "anderson": _COMMON + ("memory", "mixing", "regularization", "regularization_form", "safeguard"),
    "picard": _COMMON,
    "krasnoselskii-mann": _COMMON + ("alpha",),
    "halpern": _COMMON + ("radius",),
    "broyden": _ROOT_OPTIONS["broyden"],
    "newton": _ROOT_OPTIONS["newton"],
}
ADJOINTS = ("auto", "dense", "iterative")
DENSE_ADJOINT_MAX_SIZE = 64  # "auto" forms (I − J) densely up to this n, else iterates the adjoint


def fixed_point(T: Callable[..., torch.Tensor], z0: torch.Tensor, *, method: str = "anderson", args: tuple = (),
                tol: float | None = None, max_iter: int = 500, batch: bool = False,
                options: dict[str, Any] | None = None, callback: Callable[[Any], Any] | None = None,
                record_history: bool = False) -> Result:
    """Find z with z = T(z), stopping when ‖T(z) − z‖∞ ≤ tol.

    Methods (case-insensitive):

    * ``"anderson"``: Anderson acceleration, type II (Walker & Ni 2011), options ``memory`` m
      (10, as SciML's NLsolve.jl wrapper; scipy's and jaxopt's Anderson keep 5. On contractions
      whose spectrum is spread over [−ρ, ρ], ρ ≥ 0.9, it is what makes Anderson ≥ 3x cheaper
      than Picard: m = 5 gains about 2.3x at ρ = 0.9, m = 10 about 3.7x. Each unit of m stores
      2n more numbers per problem), ``mixing`` β (1.0), ``regularization`` λ of the least squares,
      relative to the size of each stored difference (1e-8), ``regularization_form`` ("scaled";
      "weights" puts λ on the combination weights instead, torchdeq's form), ``safeguard`` (1.0: a step that
      raises ‖T(z) − z‖₂ is replaced by the plain mixing step; None turns it off);
    * ``"picard"``: z ← T(z);
    * ``"krasnoselskii-mann"``: z ← (1 − α) z + α T(z), option ``alpha`` (0.5);
    * ``"halpern"``: z_{k+1} = λ_k z₀ + (1 − λ_k) T(z_k), λ_k = 1/(k + 2). For nonexpansive T
      with a fixed point z*, the returned point satisfies ‖T(z) − z‖ ≤ ``result.certificate`` ·
      ‖z₀ − z*‖₂ with ``certificate`` = 2/(k + 1) after k steps (Lieder 2021); option ``radius``
      R ≥ ‖z₀ − z*‖₂ adds ``result.residual_bound`` = 2R/(k + 1);
    * ``"broyden"``, ``"newton"``: :func:`torchnewton.root` applied to z − T(z) (dense Jacobians:
      for small n), with root's options for those methods.

    Options for the iterations: ``norm`` ("inf" or "2", the norm of ``success`` and ``tol``);
    ``patience`` (200; a member whose residual has not fallen by 0.1% in that many steps ends
    ``STALLED``, as a cycling map or a map without fixed points does; None turns the test off,
    and is Halpern's default: its residual oscillates under the certified envelope);
    ``adjoint`` ("auto", "dense" or "iterative", see below).

    ``T(z, *args)`` maps (n,) to (n,); with ``batch=True`` it maps (B, n) to (B, n), row i
    depending only on row i of z and of the batched tensors in ``args``, and every Result field
    has a leading batch dimension. The result is the best iterate seen (smallest residual);
    ``result.fun`` is T(x) − x there. A map without a fixed point, a cycling map or NaN values end
    in ``STALLED``, ``MAX_ITER`` or ``NONFINITE``, never ``SUCCESS``.

    If a tensor in ``args`` requires grad, ``result.x`` carries gradients by implicit
    differentiation: (I − J)ᵀ w = v for the incoming gradient v, J = ∂T/∂z at the solution, by a
    dense LU solve (``adjoint="dense"``, the default for n ≤ 64) or as the adjoint fixed point
    w = v + Jᵀ w solved with the same method (``"iterative"``, the default for larger n; one VJP
    per iteration, relative tolerance ``tol``); the iterations are never differentiated.

    Example:
        >>> import torch, torchnewton
        >>> A = torch.tensor([[0.5, 0.2], [0.1, 0.4]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> res = torchnewton.fixed_point(lambda z: A @ z + b, torch.zeros(2, dtype=torch.float64))
        >>> bool(res.success), torch.allclose(res.x, torch.linalg.solve(torch.eye(2) - A, b))
        (True, True)
    """
    key = check_method(method, METHODS)
    check_callable(T, "T")
    if T is None:
        raise TypeError("T must be callable, got NoneType")
    check_callable(callback, "callback")
    check_positive(max_iter, "max_iter", integer=True, allow_zero=True)
    if tol is not None:
        check_positive(tol, "tol")
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple, got {type(args).__name__}")
    opts = check_options(options, _OPTIONS[key])
    if key in ITERATIONS:
        norm, patience, adjoint = common_options(opts, key)
        make_method = method_factory(key, opts)
    x = _prepare_z0(z0, batch, args)
    with torch.no_grad():
        out = T(x if batch else x[0], *args)
    check_output(out, "T", tuple(z0.shape))
    Tx0 = out if batch else out.unsqueeze(0)
    if not bool(torch.isfinite(Tx0).all()):
        raise ValueError("T returned non-finite values (NaN or Inf) at z0; a fixed-point iteration cannot start there")
    tol = default_tol(x.dtype) if tol is None else tol
    if key in ("broyden", "newton"):
        return _by_root(T, z0, key, args, tol, max_iter, batch, opts, callback, record_history)
    problem = FixedPointProblem(batch_function(_named_T(T), args, batch), norm, first=(x, Tx0))
    with torch.no_grad():
        loop = iterate(make_method(FixedPointTermination(tol, patience)), problem, x, max_iter=max_iter,
                       callback=callback, record_history=record_history)
    state = loop.state
    x_star = _differentiate(state.best_x, T, args, batch, adjoint, make_method, tol, norm, max_iter, patience)
    return build_result(loop, problem.counters, batch, x_star, fun=state.best_fun,
                        extras=_extras(key, loop, opts, x.dtype))


def _prepare_z0(z0: Any, batch: bool, args: tuple) -> torch.Tensor:
    """Validate z0 and return it as a detached (B, n) batch (B = 1 without ``batch``)."""
    check_tensor(z0, "z0", ndim=2 if batch else 1)
    if z0.numel() == 0:
        raise ValueError(f"z0 must not be empty, got shape {tuple(z0.shape)}")
    check_same_device([("z0", z0)] + [(f"args[{i}]", a) for i, a in enumerate(args)])
    z = z0.detach().clone()
    return z if batch else z.unsqueeze(0)


def method_factory(key: str, opts: dict[str, Any]) -> Callable[[FixedPointTermination], Any]:
    """termination ↦ the step object of an iteration method, its options checked first (they are
    popped from ``opts``)."""
    if key == "anderson":
        memory, mixing = opts.pop("memory", 10), opts.pop("mixing", 1.0)
        regularization, safeguard = opts.pop("regularization", 1e-8), opts.pop("safeguard", 1.0)
        form = opts.pop("regularization_form", "scaled")
        check_positive(memory, "memory", integer=True)
        if form not in REGULARIZATION_FORMS:
            raise ValueError(f"options['regularization_form'] must be one of {REGULARIZATION_FORMS}, got {form!r}")
        _check_fraction(mixing, "mixing", closed=True)
        check_positive(regularization, "regularization", allow_zero=True)
        if safeguard is not None:
            check_positive(safeguard, "safeguard")
        return lambda t: Anderson(t, memory=memory, mixing=float(mixing), regularization=float(regularization),
                                  regularization_form=form, safeguard=None if safeguard is None else float(safeguard))
    if key == "krasnoselskii-mann":
        alpha = opts.pop("alpha", 0.5)
        _check_fraction(alpha, "alpha", closed=False)
        return lambda t: KrasnoselskiiMann(t, alpha=float(alpha))
    if key == "halpern":
        radius = opts.get("radius")
        if radius is not None:
            check_positive(radius, "radius")
        return Halpern
    return Picard


def common_options(opts: dict[str, Any], key: str) -> tuple[str, int | None, str]:
    """(norm, patience, adjoint) popped from ``opts`` and checked."""
    # Halpern's residual oscillates under its O(1/k) envelope (on a rotation it dips near zero
    # whenever k·θ nears a multiple of 2π), so a window without a new best proves nothing there
    default_patience = None if key == "halpern" else 200
    norm, patience = opts.pop("norm", "inf"), opts.pop("patience", default_patience)
    adjoint = opts.pop("adjoint", "auto")
    norm = check_method(str(norm), NORMS, "norm")
    if patience is not None:
        check_positive(patience, "patience", integer=True)
    return norm, patience, check_method(adjoint, ADJOINTS, "adjoint")


def _check_fraction(value: Any, name: str, *, closed: bool) -> None:
    """0 < value < 1, or ≤ 1 when ``closed``."""
    check_positive(value, name)
    if value > 1 or (value == 1 and not closed):
        raise ValueError(f"{name} must be in (0, {'1]' if closed else '1)'}, got {value}")


def _named_T(T: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """T with its errors about the returned type naming T, not a generic ``fun``."""
    def wrapped(z: torch.Tensor, *args: Any) -> torch.Tensor:
        out = T(z, *args)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"T must return a torch.Tensor, got {type(out).__name__}")
        return out
    return wrapped


def _differentiate(x_star: torch.Tensor, T: Callable[..., torch.Tensor], args: tuple, batch: bool, adjoint: str,
                   make_method: Callable[[FixedPointTermination], Any], tol: float, norm: str, max_iter: int,
                   patience: int | None) -> torch.Tensor:
    positions = differentiable_args(args)
    if not positions:
        return x_star
    if adjoint == "dense" or (adjoint == "auto" and x_star.shape[-1] <= DENSE_ADJOINT_MAX_SIZE):
        return differentiate_solution(x_star, lambda z, *a: z - T(z, *a), args, batch, condition="residual")
    function = substitute_args(T, args, positions, batch)
    return adjoint_fixed_point_solution(function, x_star, [args[i] for i in positions], make_method=make_method,
                                        tol=tol, norm=norm, max_iter=max_iter, patience=patience)


def _extras(key: str, loop: LoopOutput, opts: dict[str, Any], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    extras = {"residual_norm": loop.state.best_residual}
    if key == "anderson":
        extras["safeguard_rejections"] = loop.state.rejections
    if key == "halpern":
        extras["certificate"] = halpern_certificate(loop.nit, dtype)
        if opts.get("radius") is not None:
            extras["residual_bound"] = extras["certificate"] * opts["radius"]
    return extras


def _by_root(T: Callable[..., torch.Tensor], z0: torch.Tensor, key: str, args: tuple, tol: float, max_iter: int,
             batch: bool, opts: dict[str, Any], callback: Callable[[Any], Any] | None,
             record_history: bool) -> Result:
    """Newton or Broyden on F(z) = z − T(z) by :func:`torchnewton.root` (its implicit gradients
    included); the Result reports T(z) − z as ``fun`` like the iterations do."""
    result = root(lambda z, *a: z - T(z, *a), z0, method=key, args=args, tol=tol, max_iter=max_iter,
                  options=opts, callback=callback, batch=batch, record_history=record_history)
    fun = -result.fun
    return dataclasses.replace(result, fun=fun, jac=None,
                               extras=dict(result.extras, residual_norm=fun.abs().amax(-1)))
