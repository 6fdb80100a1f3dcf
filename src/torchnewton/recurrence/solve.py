"""``solve``: evaluate a nonlinear recurrence over the whole sequence at once.

``h_t = f(h_{t-1}, x_t)`` for t = 1..T is solved as one system of T equations by a Newton-type
method (see :mod:`.newton`), each iteration one batched evaluation of the cell and one parallel
linear scan. References: Lim et al., "Parallelizing non-linear sequential models over the sequence
length" (DEER, ICLR 2024); Gonzalez et al., "Towards scalable and stable parallelization of
nonlinear RNNs" (quasi-DEER, ELK, 2024); Danieli et al., "ParaRNN" (2025); Song et al.,
"Accelerating feedforward computation via parallel nonlinear equation solving" (ICML 2021).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core.status import Status
from ..core.tolerances import eps
from ..core.validate import check_method, check_positive, check_same_device, check_tensor
from ..solvers.loop import iterate
from .auto import AutoMethod
from .implicit import ImplicitStates
from .newton import DampedNewton, LinearizedNewton
from .problem import RecurrenceProblem, is_structured

METHODS = ("auto", "newton", "quasi-newton", "damped", "jacobi", "sequential")
JACOBIANS = ("auto", "structured", "dense", "diagonal", "block-diagonal")
INITS = ("zeros", "cell-at-zero")
_JACOBIAN_KIND = {"newton": "full", "quasi-newton": "diagonal", "jacobi": "none"}


@dataclass
class RecurrenceResult:
    """Outcome of :func:`solve`.

    ``h`` holds the states ``(h_1, ..., h_T)``: (B, T, d), or (T, d) for an unbatched call.
    ``residual`` is ``max_t |h_t - f(h_{t-1}, x_t)|``; ``nit`` Newton iterations (T for the
    sequential loop); ``status``/``success`` per member (tensors under batching, else ``Status`` /
    ``bool``). ``nfev`` counts batched cell evaluations over the whole sequence. ``method`` names
    the method that produced ``h`` (for ``method="auto"``: ``"newton"``, ``"jacobi"`` or
    ``"jacobi (k iterations), then newton"``).
    """

    h: torch.Tensor
    nit: Any
    residual: Any
    status: Any
    success: Any
    message: str
    nfev: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    method: str = ""

    def __repr__(self) -> str:
        def short(v: Any) -> str:
            if isinstance(v, torch.Tensor):
                return str(v.detach().cpu().tolist()) if v.numel() <= 8 else \
                    f"tensor(shape={tuple(v.shape)}, dtype={v.dtype})"
            return v.name if isinstance(v, Status) else str(v)

        rows = [(f.name, short(getattr(self, f.name))) for f in dataclasses.fields(self) if f.name != "history"]
        rows.append(("history", f"{len(self.history)} records"))
        return "\n".join(f"{k:>9}: {v}" for k, v in rows)


def cell_parameters(cell: Any) -> tuple[torch.Tensor, ...]:
    """The tensors gradients flow to besides h0 and xs: an ``nn.Module``'s trainable parameters."""
    if isinstance(cell, torch.nn.Module):
        return tuple(p for p in cell.parameters() if p.requires_grad)
    return ()


def run_sequential(cell: Any, h0: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """The reference loop ``h_t = f(h_{t-1}, x_t)``, one cell call per step, for (B, d), (B, T, m).

    Structured cells project all inputs first (one batched matmul), as a tuned loop would.
    """
    if is_structured(cell):
        step, us = cell.transition, cell.preprocess(xs)
    else:
        step, us = cell, xs
    h, out = h0, []
    # unbind, not us[:, t]: autograd turns every indexing op into a zero-filled gradient the size of
    # all inputs, so backward through a loop of selects costs O(T) full-size passes
    for u in us.unbind(1):
        h = step(h, u)
        out.append(h)
    return torch.stack(out, 1)


def _check_inputs(cell: Any, h0: Any, xs: Any) -> None:
    if not callable(cell):
        raise TypeError(f"cell must be a callable f(h, x) (e.g. an nn.Module), got {type(cell).__name__}")
    check_tensor(h0, "h0", ndim=(1, 2))
    check_tensor(xs, "xs", ndim=(2, 3))
    check_same_device([("h0", h0), ("xs", xs)])
    if xs.dim() != h0.dim() + 1:
        expected = "(B, T, m)" if h0.dim() == 2 else "(T, m)"
        raise ValueError(f"xs must have shape {expected} when h0 has shape {tuple(h0.shape)}, "
                         f"got {tuple(xs.shape)}")
    if h0.dim() == 2 and xs.shape[0] != h0.shape[0]:
        raise ValueError(f"batch sizes differ: h0 has {h0.shape[0]} rows, xs has {xs.shape[0]}")
    if xs.shape[-2] < 1:
        raise ValueError(f"xs must have at least one time step, got shape {tuple(xs.shape)}")
    if xs.dtype != h0.dtype:
        raise TypeError(f"xs has dtype {xs.dtype} but h0 has {h0.dtype}; use one dtype")
    for attr, name, size in (("state_size", "h0", h0.shape[-1]), ("input_size", "xs", xs.shape[-1])):
        expected = getattr(cell, attr, None)
        if isinstance(expected, int) and expected != size:
            raise ValueError(f"{name} has last dimension {size} but cell.{attr} is {expected}")


def _check_cell_output(cell: Any, h0: torch.Tensor, xs: torch.Tensor) -> None:
    """Call the cell on one row to check that it maps (N, d), (N, m) to (N, d) of h0's dtype."""
    with torch.no_grad():
        try:
            out = cell(h0[:1], xs[:1, 0])
        except Exception as err:  # noqa: BLE001 - any failure here is an argument mismatch to report
            raise ValueError(f"cell(h, x) failed on one row of h0 {tuple(h0.shape)} and xs "
                             f"{tuple(xs.shape)}: {err}") from err
    if not isinstance(out, torch.Tensor) or out.shape != (1, h0.shape[-1]) or out.dtype != h0.dtype:
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"cell must map h (N, {h0.shape[-1]}) and x (N, {xs.shape[-1]}) to a "
                         f"(N, {h0.shape[-1]}) tensor of dtype {h0.dtype}; got {got}")


def _initial_guess(init: Any, cell: Any, problem: RecurrenceProblem, batched: bool) -> torch.Tensor:
    B, T, d = problem.shape
    if isinstance(init, torch.Tensor):
        check_tensor(init, "init")
        expected = (B, T, d) if batched else (T, d)
        if tuple(init.shape) != expected:
            raise ValueError(f"init must have shape {expected} (a previous solution), got {tuple(init.shape)}")
        if init.dtype != problem.h0.dtype or init.device != problem.h0.device:
            raise TypeError(f"init must have h0's dtype {problem.h0.dtype} and device {problem.h0.device}")
        # a copy: the iteration updates its states in place
        return init.detach().reshape(B, T, d).clone(memory_format=torch.contiguous_format)
    kind = check_method(init, INITS, "init")
    zeros = problem.h0.new_zeros(B, T, d)
    if kind == "zeros":
        return zeros
    # h_t = f(0, x_t): one batched call, exact wherever the state barely matters.
    problem.counters.nfev += 1
    return problem.transition(zeros.reshape(B * T, d), problem.us.reshape(B * T, -1)).reshape(B, T, d)


def solve(cell: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], h0: torch.Tensor, xs: torch.Tensor, *,
          method: str = "auto", jacobian: str = "auto", init: str | torch.Tensor = "zeros",
          tol: float | None = None, max_iter: int | None = None, damping: float | None = None,
          callback: Callable[[Any], Any] | None = None, record_history: bool = False) -> RecurrenceResult:
    """Solve ``h_t = f(h_{t-1}, x_t)``, t = 1..T, for all states at once.

    Newton's method on the T equations ``h_t - f(h_{t-1}, x_t) = 0`` needs per iteration one
    batched evaluation of ``f`` (and its state Jacobians) over all t and one linear recurrence
    ``delta_t = D_t delta_{t-1} + f(h_{t-1}, x_t) - h_t`` solved by a parallel scan
    (:func:`.scan.linear_scan`). After iteration i the first i states are exact, so every method
    converges within T iterations (damped through its undamped frontier); in practice newton
    takes a handful.

    Args:
        cell: ``f(h, x)`` on rows: (N, d), (N, m) -> (N, d), row i depending only on row i.
            Cells from :mod:`.cells` supply structured Jacobians. Any other callable (e.g. an
            ``nn.Module``) gets its Jacobians from reverse-mode autograd (:mod:`torchnewton.derivatives.rowwise`), as
            cheaply as the structure it declares in an attribute ``jacobian_structure`` allows:
            ``"diagonal"`` (one product for all time steps), ``"block-diagonal"`` (with an
            integer attribute ``block_size`` k: k products) or ``"dense"`` (the default: d
            products per Jacobian; newton steps block by block along time with a compiled
            O(d^2)-per-step scan and never store the sequence's Jacobians, see :mod:`.dense`).
        h0: initial state (B, d), or (d,) for one sequence.
        xs: inputs (B, T, m), or (T, m).
        method: ``"auto"`` (the default: ``"newton"`` where the Jacobian is structured or declared
            diagonal / block-diagonal; for a dense Jacobian Jacobi iterations while their
            measured rate predicts they finish sooner than Newton's, else Newton from where they
            are; see :mod:`.auto`; ``result.method`` says which ran),
            ``"newton"`` (exact Jacobians, DEER; dense ones by the blocked step of
            :mod:`.dense`), ``"quasi-newton"`` (their diagonal,
            quasi-DEER), ``"damped"`` (quasi-ELK: Kalman-filter damped steps with adaptive damping,
            for unstable dynamics), ``"jacobi"`` (fixed point), ``"sequential"`` (reference loop).
        jacobian: ``"auto"`` (the cell's own or declared structure, else dense),
            ``"structured"`` (require one), ``"dense"`` (autograd's dense Jacobians even for
            structured cells), or a structure declared for this call: ``"diagonal"`` or
            ``"block-diagonal"`` (it must hold: entries outside it are not computed).
        init: initial guess: ``"zeros"``, ``"cell-at-zero"`` (``h_t = f(0, x_t)``) or a tensor
            shaped like the result (a previous solution, e.g. from the last training step).
        tol: success means ``max_t |h_t - f(h_{t-1}, x_t)| <= tol`` and an estimated state error
            ``<= tol`` (default ``eps**(3/4)`` of the dtype: 1.8e-12 in float64, 6.4e-6 in
            float32). The state error is the residual amplified by the dynamics (up to
            ``1/(1 - |J|)``); each method estimates it from what its iterations measure (see
            :mod:`.newton`) or stops where rounding stops the residual from falling. With the
            default the states agree with the sequential loop to about 1e-5 relative in float32.
        max_iter: iteration limit (default T, where the guarantee holds).
        damping: initial damping ``lam`` of ``"damped"`` (default 1.0; the observation
            precision of ELK's filter, see :mod:`.damped`).
        callback: ``callback(state)`` after every iteration; returning True stops.
        record_history: keep the per-iteration residuals in ``result.history``.

    Gradients with respect to ``h0``, ``xs`` and the cell's parameters flow by implicit
    differentiation at the solution (:mod:`.implicit`), never through the iterations; with
    ``method="sequential"`` by autograd through the loop.

    Returns:
        :class:`RecurrenceResult`. A solve that did not converge says so in ``status``,
        ``success`` and ``residual``.

    Example::

        >>> cell = DiagonalGRUCell(3, 16)
        >>> xs = torch.randn(4, 10_000, 3)
        >>> res = solve(cell, torch.zeros(4, 16), xs)
        >>> res.success.all(), res.nit.max() < 10
        (tensor(True), tensor(True))
    """
    _check_inputs(cell, h0, xs)
    method = check_method(method, METHODS)
    jacobian = check_method(jacobian, JACOBIANS, "jacobian")
    if tol is None:
        # Tighter than the library default eps**(2/3): each state's error feeds all later ones.
        tol = eps(h0.dtype) ** 0.75
    check_positive(tol, "tol")
    if max_iter is not None:
        check_positive(max_iter, "max_iter", integer=True, allow_zero=True)
    if damping is not None:
        if method != "damped":
            raise ValueError(f"damping applies to method='damped' only, got method={method!r}")
        check_positive(damping, "damping")
    batched = h0.dim() == 2
    h0_b, xs_b = (h0, xs) if batched else (h0.unsqueeze(0), xs.unsqueeze(0))
    _check_cell_output(cell, h0_b, xs_b)
    T = xs_b.shape[1]
    if method == "sequential":
        h = run_sequential(cell, h0_b, xs_b)
        with torch.no_grad():
            problem = RecurrenceProblem.from_cell(cell, h0_b, xs_b, jacobian=jacobian, tol=tol)
            residual = problem.residual_and_jacobian(h, "none")[2]
        nit = torch.full_like(residual, T, dtype=torch.long)
        status = torch.where(torch.isfinite(residual), int(Status.SUCCESS), int(Status.NONFINITE))
        return _result(h, nit, residual, status, T + 1, [], batched, "sequential")

    params = cell_parameters(cell)
    differentiable = torch.is_grad_enabled() and (
        h0.requires_grad or xs.requires_grad or any(p.requires_grad for p in params))
    with torch.set_grad_enabled(differentiable):
        problem = RecurrenceProblem.from_cell(cell, h0_b, xs_b, jacobian=jacobian, tol=tol)
    us = problem.us
    solver_problem = dataclasses.replace(problem, h0=h0_b.detach(), us=us.detach())
    with torch.no_grad():
        guess = _initial_guess(init, cell, solver_problem, batched)
        if method == "auto":
            solver = AutoMethod() if solver_problem.dense is not None else LinearizedNewton("full")
        elif method == "damped":
            solver = DampedNewton(1.0 if damping is None else damping)
        else:
            solver = LinearizedNewton(_JACOBIAN_KIND[method])
        if max_iter is None:
            max_iter = T
        out = iterate(solver, solver_problem, guess, max_iter=max_iter,
                      callback=callback, record_history=record_history)
    h = out.state.h
    if differentiable:
        h = ImplicitStates.apply(solver_problem, h, h0_b, us, *params)
    used = solver.description(out.state) if isinstance(solver, AutoMethod) else \
        "newton" if method == "auto" else method
    return _result(h, out.nit, out.state.residual, out.status, solver_problem.counters.nfev, out.history, batched,
                   used)


def _result(h: torch.Tensor, nit: torch.Tensor, residual: torch.Tensor, status: torch.Tensor, nfev: int,
            history: list[dict[str, Any]], batched: bool, method: str) -> RecurrenceResult:
    success = status == int(Status.SUCCESS)
    codes = [Status(int(c)) for c in status.tolist()]
    if all(c == Status.SUCCESS for c in codes):
        message = Status.SUCCESS.message
    else:
        failed = sorted({c for c in codes if c != Status.SUCCESS})
        message = (f"{len(codes) - int(success.sum())} of {len(codes)} sequences not converged: "
                   + "; ".join(f"{c.name}: {c.message}" for c in failed))
    if batched:
        return RecurrenceResult(h, nit, residual.detach(), status, success, message, nfev, history, method)
    return RecurrenceResult(h[0], int(nit[0]), residual.detach()[0], codes[0], bool(success[0]), message,
                            nfev, history, method)
