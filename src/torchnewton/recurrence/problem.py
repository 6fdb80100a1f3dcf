"""A nonlinear recurrence as one system of T equations, and its linearization.

The recurrence ``h_t = f(h_{t-1}, x_t)``, t = 1..T, with ``h_0`` given, is the system
``r_t(H) = h_t - f(h_{t-1}, x_t) = 0`` in the unknowns ``H = (h_1, ..., h_T)``. Its Jacobian is
block lower bidiagonal, ``I`` on the diagonal and ``-J_t = -df/dh(h_{t-1}, x_t)`` below it, so
every Newton-type method needs, per iteration, f and (some approximation of) J_t at all t at once:
one batched call of the cell on ``(B*T, d)`` rows.

Cells follow the batched-rows contract: ``f(h, x)`` takes ``(N, d)`` and ``(N, m)`` and returns
``(N, d)``, row i depending only on row i. Structured cells (see :mod:`.cells`) provide their own
Jacobian; for any other cell the dense Jacobian comes from ``torch.func.jacrev`` of the sum over
rows, which by row independence is the per-row Jacobian.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core.counters import Counters
from . import native

# Elements (rows x Jacobian width) per block of the blocked evaluation: a few hundred KB.
_BLOCK_ELEMENTS = 2 ** 17

Linearize = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def is_structured(cell: Any) -> bool:
    """Whether ``cell`` provides the structured-cell protocol of :mod:`.cells`."""
    return all(hasattr(cell, name) for name in ("jacobian_structure", "transition",
                                                 "transition_and_jacobian", "preprocess"))


def dense_jacobian(transition: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], h: torch.Tensor,
                   u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(h, u)`` (N, d) and its per-row state Jacobians (N, d, d) by reverse-mode autodiff."""
    def summed(h_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = transition(h_rows, u)
        return out.sum(0), out

    jac, out = torch.func.jacrev(summed, has_aux=True)(h)
    return out, jac.permute(1, 0, 2)


def max_abs(x: torch.Tensor) -> torch.Tensor:
    """``max |x|`` over all dims but the first (NaN if any entry is NaN), with no ``|x|``
    temporary the size of ``x``. (Separate ``amax`` and ``amin`` take a fifth of the time of
    the fused ``aminmax`` on CPU.)"""
    rows = x.reshape(x.shape[0], -1)
    return torch.maximum(rows.amax(1), rows.amin(1).neg())


def diagonal_of(jac: torch.Tensor, structure: str) -> torch.Tensor:
    """The diagonal (..., d) of a Jacobian stored as diagonal, block or dense."""
    if structure == "diagonal":
        return jac
    return torch.diagonal(jac, dim1=-2, dim2=-1).flatten(-2) if structure == "block" \
        else torch.diagonal(jac, dim1=-2, dim2=-1)


@dataclass
class RecurrenceProblem:
    """The system r(H) = 0 for a batch: ``h0`` (B, d), preprocessed inputs ``us`` (B, T, m)."""

    transition: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    linearize: Linearize
    structure: str  # of the Jacobian returned by ``linearize``
    h0: torch.Tensor
    us: torch.Tensor
    tol: float
    counters: Counters = field(default_factory=Counters)
    # the cell's fused CPU kernels (see :mod:`.native`), used where they apply
    fused: Callable[..., None] | None = None
    fused_vjp: Callable[..., Any] | None = None

    @classmethod
    def from_cell(cls, cell: Callable[..., torch.Tensor], h0: torch.Tensor, xs: torch.Tensor, *,
                  jacobian: str, tol: float) -> "RecurrenceProblem":
        """Wrap ``cell``. ``jacobian`` is ``"auto"``, ``"structured"`` or ``"dense"``."""
        if is_structured(cell):
            us = cell.preprocess(xs)
            transition = cell.transition
            if jacobian == "dense":
                return cls(transition, lambda h, u: dense_jacobian(transition, h, u), "dense", h0, us, tol)
            return cls(transition, cell.transition_and_jacobian, cell.jacobian_structure, h0, us, tol,
                       fused=native.cell_kernel(cell, h0.dtype), fused_vjp=native.cell_vjp(cell, h0.dtype))
        if jacobian == "structured":
            raise ValueError("jacobian='structured' needs a cell with its own Jacobian "
                             "(jacobian_structure, transition_and_jacobian, preprocess); "
                             f"{type(cell).__name__} has none, use jacobian='auto' or 'dense'")
        return cls(cell, lambda h, u: dense_jacobian(cell, h, u), "dense", h0, xs, tol)

    @property
    def shape(self) -> tuple[int, int, int]:
        B, T = self.us.shape[:2]
        return B, T, self.h0.shape[-1]

    def residual_and_jacobian(self, h: torch.Tensor, kind: str,
                              out: tuple[torch.Tensor, torch.Tensor | None] | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``f(h_{t-1}, x_t) - h_t`` (B, T, d), the Jacobians and ``max_t |h_t - f(h_{t-1}, x_t)|`` (B,).

        ``kind`` ``"full"`` (the problem's structure), ``"diagonal"`` (B, T, d) or ``"none"``.

        The cell runs on blocks of consecutive time steps written into preallocated outputs: the
        elementwise work of a cell is memory bound, and on a (B*T, d) tensor each of its dozens
        of temporaries would be a fresh allocation the size of the sequence (page faults cost
        more than the arithmetic). Blocks of about ``_BLOCK_ELEMENTS`` keep them in cache.
        For the same reason ``out``, the ``(rhs, jac)`` of an earlier call, is overwritten when given.
        A cell with a fused kernel (:mod:`.native`) does the whole sequence in one pass instead.
        """
        B, T, d = h.shape
        self.counters.nfev += 1
        self.counters.njev += int(kind != "none")
        # a dense Jacobian has d entries per state entry; small blocks count as one
        width = d * d if kind == "full" and self.structure == "dense" else d
        rows = max(1, _BLOCK_ELEMENTS // (B * width))
        rhs, jac = out if out is not None else (torch.empty_like(h), None)
        if self.fused is not None and native.applies(self.h0, h, self.us, rhs):
            if kind != "none" and jac is None:
                jac = h.new_empty(B, T, d // 2, 2, 2) if kind == "full" and self.structure == "block" \
                    else torch.empty_like(h)
            self.fused(self.h0, h, self.us, rhs, None if kind == "none" else jac, kind)
            return rhs, jac, max_abs(rhs)
        residual = h.new_zeros(B)
        for t0 in range(0, T, rows):
            t1 = min(T, t0 + rows)
            prev = h[:, t0 - 1:t1 - 1] if t0 else torch.cat([self.h0.unsqueeze(1), h[:, :t1 - 1]], 1)
            prev, u = prev.reshape(-1, d), self.us[:, t0:t1].reshape(B * (t1 - t0), -1)
            if kind == "none":
                out = self.transition(prev, u)
            else:
                out, block_jac = self.linearize(prev, u)
                block_jac = block_jac.reshape(B, t1 - t0, *block_jac.shape[1:])
                if kind == "diagonal":
                    block_jac = diagonal_of(block_jac, self.structure)
                if jac is None:
                    jac = h.new_empty(B, T, *block_jac.shape[2:])
                jac[:, t0:t1] = block_jac
            block = rhs[:, t0:t1]
            torch.sub(out.reshape(B, t1 - t0, d), h[:, t0:t1], out=block)
            residual = torch.maximum(residual, max_abs(block))
        return rhs, jac, residual
