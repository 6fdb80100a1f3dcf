"""``ParallelRNN``: a recurrent layer evaluated by parallel Newton over time, for use in models.

Forward solves ``h_t = cell(h_{t-1}, x_t)`` for the whole sequence with :func:`.solve.solve`;
backward is the adjoint recurrence at the solution (:mod:`.implicit`), so training never stores
or unrolls the Newton iterations (Lim et al., DEER, ICLR 2024; Danieli et al., ParaRNN, 2025).

Example::

    >>> rnn = ParallelRNN(DiagonalGRUCell(3, 32))
    >>> xs = torch.randn(8, 4096, 3)
    >>> states = rnn(xs)                       # (8, 4096, 32)
    >>> states[:, -1].sum().backward()         # gradients for the cell's parameters
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.validate import check_method
from .solve import METHODS, RecurrenceResult, solve

ON_FAILURE = ("raise", "sequential")


class ParallelRNN(nn.Module):
    """Wrap a cell ``f(h, x)`` into a sequence layer ``xs (B, T, m) -> states (B, T, d)``.

    Args:
        cell: a structured cell from :mod:`.cells` or any ``nn.Module`` ``f(h, x)`` on rows.
        method: as in :func:`.solve.solve` (``"auto"``, ``"newton"``, ``"quasi-newton"``,
            ``"damped"``, ``"jacobi"``, ``"sequential"``).
        on_failure: a solve that does not converge either raises ``RuntimeError`` with its
            status and residual (``"raise"``), or is redone by the sequential loop
            (``"sequential"``); it never returns unconverged states.
        **solve_options: ``jacobian``, ``tol``, ``max_iter``, ``damping``, ``init`` for ``solve``.

    The last :class:`.solve.RecurrenceResult` is kept in ``last_result`` (iterations, residual).
    """

    def __init__(self, cell: nn.Module, method: str = "auto", *, on_failure: str = "raise", **solve_options: Any):
        super().__init__()
        self.cell = cell
        self.method = check_method(method, METHODS)
        self.on_failure = check_method(on_failure, ON_FAILURE, "on_failure")
        self.solve_options = solve_options
        self.last_result: RecurrenceResult | None = None

    def forward(self, xs: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """States (B, T, d) for inputs ``xs`` (B, T, m); ``h0`` (B, d) defaults to zeros."""
        if h0 is None:
            size = getattr(self.cell, "state_size", None)
            if not isinstance(size, int):
                raise ValueError("h0 is required: the cell has no integer attribute state_size")
            h0 = xs.new_zeros(xs.shape[0], size) if xs.dim() == 3 else xs.new_zeros(size)
        result = solve(self.cell, h0, xs, method=self.method, **self.solve_options)
        self.last_result = result
        if bool(torch.as_tensor(result.success).all()):
            return result.h
        if self.on_failure == "sequential":
            self.last_result = solve(self.cell, h0, xs, method="sequential")
            return self.last_result.h
        raise RuntimeError(f"ParallelRNN: the {self.method} solve did not converge ({result.message}); "
                           f"residual {torch.as_tensor(result.residual).max().item():.3g}, "
                           f"iterations {torch.as_tensor(result.nit).max().item()}")

    def extra_repr(self) -> str:
        return f"method={self.method!r}, on_failure={self.on_failure!r}"
