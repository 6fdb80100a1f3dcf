"""``torchnewton.nn.DEQ``: a deep-equilibrium layer z* = f(z*, x) (Bai, Kolter & Koltun 2019).

The forward pass solves the fixed point with :mod:`torchnewton`'s fixed-point iterations (the
step objects of :func:`torchnewton.fixed_point` driven by the shared loop, per-sample statuses
and frozen converged samples) and keeps no graph through the iterations; gradients come from
one of the rules of :mod:`.deq_backward`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..core.status import Status
from ..core.validate import check_method, check_options, check_positive, check_tensor
from ..solvers.fixed_point.solve import ITERATIONS, common_options, method_factory
from ..solvers.fixed_point.problem import FixedPointProblem
from ..solvers.fixed_point.termination import FixedPointTermination
from ..solvers.loop import LoopOutput, iterate
from . import deq_backward

BACKWARDS = ("implicit", "phantom", "jfb")
_METHOD_OPTIONS = {
    "anderson": ("memory", "mixing", "regularization", "regularization_form", "safeguard"),
    "picard": (),
    "krasnoselskii-mann": ("alpha",),
    "halpern": (),
}


@dataclass
class DEQStats:
    """Per-sample statistics of the last call: forward iterations ``nit``, best residual
    ``residual`` ‖f(z) − z‖ (in the layer's norm) and ``status`` (Status codes), batched T
    evaluations ``nfev``; after a backward pass with ``backward="implicit"``, the same for the
    adjoint solve w = g + (∂f/∂z)ᵀw (its absolute residual; the solve stops at ``backward_tol``
    times the size of the incoming gradient g), and ``backward_fallback``, the samples that got
    the Jacobian-free gradient instead (None when the fallback is off)."""

    nit: torch.Tensor
    residual: torch.Tensor
    status: torch.Tensor
    nfev: int
    backward_nit: torch.Tensor | None = None
    backward_residual: torch.Tensor | None = None
    backward_status: torch.Tensor | None = None
    backward_nfev: int | None = None
    backward_fallback: torch.Tensor | None = None

    @property
    def success(self) -> torch.Tensor:
        return self.status == int(Status.SUCCESS)

    def record_backward(self, loop: LoopOutput, problem: FixedPointProblem, fallback: torch.Tensor | None) -> None:
        self.backward_nit, self.backward_residual = loop.nit, loop.state.best_residual
        self.backward_status, self.backward_nfev = loop.status, problem.counters.nfev
        self.backward_fallback = fallback


class DEQ(nn.Module):
    """A deep-equilibrium layer: ``deq(x, z0=None)`` returns z* with z* = cell(z*, x).

    Args:
        cell: the module (or callable) f, called as ``cell(z, x)`` on the whole batch; it must
            return a tensor shaped like z, sample i depending only on sample i.
        method: the forward iteration, ``"anderson"`` (default), ``"picard"``,
            ``"krasnoselskii-mann"`` or ``"halpern"`` (see :func:`torchnewton.fixed_point`).
        backward: ``"implicit"`` (exact gradient through the adjoint fixed point
            w = g + (∂f/∂z)ᵀw, solved by the same method), ``"phantom"`` (``phantom_steps``
            damped unrolled steps, damping ``phantom_damping``) or ``"jfb"`` (Jacobian-free: one
            step, (I − J)⁻¹ ≈ I).
        tol: forward tolerance on ‖f(z) − z‖ per sample (absolute, in ``norm``).
        max_iter: forward iteration limit in training; ``eval_max_iter`` (default the same) in
            eval mode.
        norm: "inf" (default) or "2", the per-sample norm of the residual.
        backward_tol, backward_max_iter: the adjoint solve's tolerance (relative to the size
            of the incoming gradient) and iteration limit; default ``tol`` and ``max_iter``.
        fallback: with ``backward="implicit"``, samples whose forward residual exceeds
            ``fallback``·``tol``, or whose adjoint residual exceeds ``fallback`` times its
            tolerance, get the Jacobian-free gradient (w = g) instead of (I − J)⁻ᵀg: far from a
            fixed point I − J can be nearly singular and the "implicit" gradient of one such
            sample can outweigh the whole batch's (default 10; None: never).
        jacobian_samples: in training mode, the number of Hutchinson samples of ‖∂f/∂z‖_F²
            at z* (0: off). The estimate, averaged over the batch, is ``deq.jacobian_loss``
            (differentiable); add a multiple of it to the loss (Bai, Koltun & Kolter 2021).
        options: the method's options (``memory``, ``mixing``, ``regularization``,
            ``regularization_form`` ("scaled", the default, or "weights": torchdeq's absolute
            penalty on the combination weights, see :mod:`torchnewton.solvers.fixed_point.anderson`),
            ``safeguard`` for Anderson, ``alpha`` for Krasnoselskii–Mann) and ``patience``. The
            Anderson safeguard is off by default here (None): within a batch, one sample's
            rejected step makes the whole batch pay an extra evaluation of the cell.

    After each call ``deq.last_stats`` (:class:`DEQStats`) holds the forward iterations and
    residuals per sample, and after ``backward()`` those of the adjoint solve. Gradients flow
    whenever autograd is enabled and x or the cell's parameters require them, in train and in
    eval mode; with ``backward="implicit"`` the returned tensor is f(z*, x), equal to z* up to
    ``tol``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Cell(nn.Module):
        ...     def __init__(self, width):
        ...         super().__init__()
        ...         self.linear = nn.Linear(width, width)
        ...     def forward(self, z, x):
        ...         return torch.tanh(0.5 * self.linear(z) + x)
        >>> deq = DEQ(Cell(16), tol=1e-5)
        >>> z = deq(torch.randn(8, 16))
        >>> z.sum().backward()
        >>> bool(deq.last_stats.success.all())
        True
    """

    def __init__(self, cell: Callable[[torch.Tensor, Any], torch.Tensor], *, method: str = "anderson",
                 backward: str = "implicit", tol: float = 1e-4, max_iter: int = 30, norm: str = "inf",
                 backward_tol: float | None = None, backward_max_iter: int | None = None,
                 eval_max_iter: int | None = None, phantom_steps: int = 5, phantom_damping: float = 0.5,
                 jacobian_samples: int = 0, fallback: float | None = 10.0, options: dict[str, Any] | None = None):
        super().__init__()
        if not callable(cell):
            raise TypeError(f"cell must be callable (an nn.Module), got {type(cell).__name__}")
        self.cell = cell
        self.method = check_method(method, ITERATIONS)
        self.backward = check_method(backward, BACKWARDS, "backward")
        check_positive(tol, "tol")
        check_positive(max_iter, "max_iter", integer=True)
        for name, value in (("backward_tol", backward_tol), ("backward_max_iter", backward_max_iter),
                            ("eval_max_iter", eval_max_iter)):
            if value is not None:
                check_positive(value, name, integer=name != "backward_tol")
        check_positive(phantom_steps, "phantom_steps", integer=True)
        check_positive(phantom_damping, "phantom_damping")
        if phantom_damping > 1:
            raise ValueError(f"phantom_damping must be in (0, 1], got {phantom_damping}")
        check_positive(jacobian_samples, "jacobian_samples", integer=True, allow_zero=True)
        opts = check_options(options, _METHOD_OPTIONS[self.method] + ("patience",))
        if self.method == "anderson":
            # a rejected step costs the whole batch one more evaluation of the cell
            opts.setdefault("safeguard", None)
        opts["norm"] = norm
        self.norm, self.patience, _ = common_options(opts, self.method)
        self._make_method = method_factory(self.method, opts)
        self.tol, self.max_iter = float(tol), max_iter
        self.backward_tol = float(tol if backward_tol is None else backward_tol)
        self.backward_max_iter = max_iter if backward_max_iter is None else backward_max_iter
        self.eval_max_iter = max_iter if eval_max_iter is None else eval_max_iter
        self.phantom_steps, self.phantom_damping = phantom_steps, float(phantom_damping)
        self.jacobian_samples = jacobian_samples
        if fallback is not None:
            check_positive(fallback, "fallback")
        self.fallback = None if fallback is None else float(fallback)
        self.last_stats: DEQStats | None = None
        self.jacobian_loss: torch.Tensor | None = None

    def forward(self, x: Any, z0: torch.Tensor | None = None) -> torch.Tensor:
        if z0 is None:
            if not isinstance(x, torch.Tensor):
                raise TypeError("z0 must be given when x is not a tensor (it defaults to zeros shaped like x)")
            z0 = torch.zeros_like(x)
        check_tensor(z0, "z0")
        if z0.dim() == 0:
            raise ValueError("z0 must have a leading batch dimension, got a 0-dimensional tensor")
        z_star = self._solve(x, z0.detach())
        self.jacobian_loss = None
        if not (torch.is_grad_enabled() and self._needs_grad(x)):
            return z_star
        if self.backward == "phantom":
            out = deq_backward.phantom(self.cell, z_star, x, self.phantom_steps, self.phantom_damping)
            y, z = self._regularizer_pair(z_star, x)
        elif self.backward == "jfb":
            z = z_star.detach().requires_grad_(self.training and self.jacobian_samples > 0)
            out = y = self.cell(z, x)
        else:
            # the adjoint's statistics go to this call's stats, even if another forward runs first
            adjoint = {"make_method": self._make_method, "tol": self.backward_tol, "norm": self.norm,
                       "max_iter": self.backward_max_iter, "patience": self.patience,
                       "record": self.last_stats.record_backward,
                       "fallback": self.fallback, "trusted": None if self.fallback is None
                       else self.last_stats.residual <= self.fallback * self.tol}
            out, y, z = deq_backward.implicit(self.cell, z_star, x, adjoint)
        if self.training and self.jacobian_samples > 0:
            self.jacobian_loss = deq_backward.jacobian_frobenius(y, z, self.jacobian_samples)
        return out

    def _solve(self, x: Any, z0: torch.Tensor) -> torch.Tensor:
        shape, batch = z0.shape, z0.shape[0]

        def T(z: torch.Tensor) -> torch.Tensor:
            return self.cell(z.view(shape), x).reshape(batch, -1)

        z = z0.reshape(batch, -1)
        with torch.no_grad():
            first = self.cell(z0, x)
            if not isinstance(first, torch.Tensor) or first.shape != shape:
                got = tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
                raise ValueError(f"cell(z, x) must return a tensor shaped like z {tuple(shape)}, got {got}")
            problem = FixedPointProblem(T, self.norm, first=(z, first.reshape(batch, -1)))
            limit = self.max_iter if self.training else self.eval_max_iter
            loop = iterate(self._make_method(FixedPointTermination(self.tol, self.patience)), problem, z,
                           max_iter=limit)
        self.last_stats = DEQStats(nit=loop.nit, residual=loop.state.best_residual, status=loop.status,
                                   nfev=problem.counters.nfev)
        return loop.state.best_x.view(shape)

    def _needs_grad(self, x: Any) -> bool:
        if isinstance(x, torch.Tensor) and x.requires_grad:
            return True
        if isinstance(self.cell, nn.Module):
            return any(p.requires_grad for p in self.cell.parameters())
        return True  # a plain callable may close over tensors that require grad

    def _regularizer_pair(self, z_star: torch.Tensor, x: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(f(z*, x), z*) with a graph, for the Jacobian estimate when the backward rule has none."""
        if not (self.training and self.jacobian_samples > 0):
            return None, None
        z = z_star.detach().requires_grad_(True)
        return self.cell(z, x), z

    def extra_repr(self) -> str:
        return (f"method={self.method!r}, backward={self.backward!r}, tol={self.tol:g}, max_iter={self.max_iter}, "
                f"norm={self.norm!r}")
