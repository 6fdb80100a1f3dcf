"""A nonlinear recurrence as one system of T equations, and its linearization.

The recurrence ``h_t = f(h_{t-1}, x_t)``, t = 1..T, with ``h_0`` given, is the system
``r_t(H) = h_t - f(h_{t-1}, x_t) = 0`` in the unknowns ``H = (h_1, ..., h_T)``. Its Jacobian is
block lower bidiagonal, ``I`` on the diagonal and ``-J_t = -df/dh(h_{t-1}, x_t)`` below it, so
every Newton-type method needs, per iteration, f and (some approximation of) J_t at all t at once:
one batched call of the cell on ``(B*T, d)`` rows.

Cells follow the batched-rows contract: ``f(h, x)`` takes ``(N, d)`` and ``(N, m)`` and returns
``(N, d)``, row i depending only on row i. Structured cells (see :mod:`.cells`) provide their own
Jacobian. Any other cell may *declare* the structure of its Jacobian, with an attribute
``jacobian_structure`` (``"diagonal"``, ``"block-diagonal"`` with ``block_size``, or ``"dense"``)
or ``solve(..., jacobian=...)``; its Jacobians then come from as few reverse-mode products as the
structure allows (:mod:`torchnewton.derivatives.rowwise`: one for a diagonal, k for k x k blocks, d for a dense one;
dense Newton steps by :mod:`.dense`). An undeclared cell is dense.

Example::

    >>> def cell(h, x):                       # elementwise in h: a diagonal Jacobian
    ...     return torch.tanh(0.9 * h + x)
    >>> cell.jacobian_structure = "diagonal"
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core.counters import Counters
from ..derivatives import rowwise
from . import native
from .dense import DenseLinearization, newton_step

# Elements (rows x state size) per block of the blocked evaluation: a few hundred KB. A dense
# block Jacobian is d times larger, but it is d autograd products over blocks of this size,
# and smaller blocks would multiply the number of those calls (their overhead dominated).
_BLOCK_ELEMENTS = 2 ** 17
# Rows x state size per block where dense Jacobians are formed by d autograd products: larger,
# as each product is a Python-level autograd call (measured on the bench's Elman cell, d = 24:
# 16k-32k rows per block take 0.6x the time of 5k).
_DENSE_BLOCK_ELEMENTS = 2 ** 19

# Declared Jacobian structures (the cell attribute ``jacobian_structure`` or ``solve(jacobian=)``)
# and the storage each maps to.
STRUCTURE_NAMES = {"diagonal": "diagonal", "block-diagonal": "block", "block": "block", "dense": "dense"}

Linearize = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def is_structured(cell: Any) -> bool:
    """Whether ``cell`` provides the structured-cell protocol of :mod:`.cells`."""
    return all(hasattr(cell, name) for name in ("jacobian_structure", "transition",
                                                 "transition_and_jacobian", "preprocess"))


def dense_jacobian(transition: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], h: torch.Tensor,
                   u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(h, u)`` (N, d) and its per-row state Jacobians (N, d, d) by reverse-mode autodiff."""
    return rowwise.dense_jacobian(transition, h, u)


def structure_name(value: Any, argument: str) -> str:
    """The internal name (``"diagonal"``, ``"block"``, ``"dense"``) of a declared structure."""
    if not isinstance(value, str) or value not in STRUCTURE_NAMES:
        valid = ", ".join(repr(v) for v in STRUCTURE_NAMES)
        raise ValueError(f"unknown {argument} {value!r}; valid values: {valid}")
    return STRUCTURE_NAMES[value]


def declared_structure(cell: Any, jacobian: str, d: int) -> tuple[str, int]:
    """(structure, block size) of a cell's Jacobian: the ``jacobian`` argument when it names a
    structure, else the cell's ``jacobian_structure`` attribute, else dense."""
    if jacobian in STRUCTURE_NAMES:
        structure = STRUCTURE_NAMES[jacobian]
    else:
        declared = getattr(cell, "jacobian_structure", None)
        if declared is None:
            if jacobian == "structured":
                raise ValueError("jacobian='structured' needs a cell with its own Jacobian "
                                 "(jacobian_structure, transition_and_jacobian, preprocess) or a declared "
                                 f"jacobian_structure; {type(cell).__name__} has none, use jacobian='auto' "
                                 "or 'dense'")
            return "dense", d
        structure = structure_name(declared, "cell.jacobian_structure")
    if structure != "block":
        return structure, 1 if structure == "diagonal" else d
    k = getattr(cell, "block_size", None)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or d % k:
        raise ValueError(f"a block-diagonal Jacobian needs cell.block_size, a positive integer dividing the "
                         f"state size {d}; got {k!r}")
    return structure, k


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
    # the Jacobians' diagonals (N, d) without the full Jacobian, where that is cheaper than
    # ``linearize`` and ``diagonal_of`` (dense Jacobians)
    linearize_diagonal: Linearize | None = None
    # dense Jacobians from batched products, and the blocked Newton step that never stores them
    # for the whole sequence (:mod:`.dense`)
    dense: DenseLinearization | None = None

    @classmethod
    def from_cell(cls, cell: Callable[..., torch.Tensor], h0: torch.Tensor, xs: torch.Tensor, *,
                  jacobian: str, tol: float) -> "RecurrenceProblem":
        """Wrap ``cell``. ``jacobian`` is ``"auto"``, ``"structured"``, ``"dense"`` or a declared
        structure (``"diagonal"``, ``"block-diagonal"``), as in :func:`.solve.solve`."""
        d = h0.shape[-1]
        if is_structured(cell):
            us = cell.preprocess(xs)
            transition = cell.transition
            if jacobian == "dense":
                lin = DenseLinearization(transition)
                return cls(transition, lin.jacobian, "dense", h0, us, tol, dense=lin,
                           linearize_diagonal=lambda h, u: rowwise.dense_jacobian_diagonal(transition, h, u))
            if jacobian in STRUCTURE_NAMES and STRUCTURE_NAMES[jacobian] != cell.jacobian_structure:
                raise ValueError(f"jacobian={jacobian!r} contradicts the cell's own {cell.jacobian_structure!r} "
                                 f"Jacobian ({type(cell).__name__}); use jacobian='auto'")
            return cls(transition, cell.transition_and_jacobian, cell.jacobian_structure, h0, us, tol,
                       fused=native.cell_kernel(cell, h0.dtype), fused_vjp=native.cell_vjp(cell, h0.dtype))
        structure, k = declared_structure(cell, jacobian, d)
        if structure == "dense":
            # quasi-Newton's diagonals by d products, keeping one entry of each: never (N, d, d)
            lin = DenseLinearization(cell)
            return cls(cell, lin.jacobian, structure, h0, xs, tol, dense=lin,
                       linearize_diagonal=lambda h, u: rowwise.dense_jacobian_diagonal(cell, h, u))
        return cls(cell, lambda h, u: rowwise.cell_jacobian(cell, h, u, structure, k), structure, h0, xs, tol)

    def dense_newton_step(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The Newton step at ``h`` (B, T, d) written into ``out``, blocked along time (dense
        Jacobians only: see :mod:`.dense`)."""
        if self.dense is None:
            raise RuntimeError("dense_newton_step needs a problem with dense Jacobians")
        return newton_step(self, self.dense, h, out, _DENSE_BLOCK_ELEMENTS)

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
        elements = _DENSE_BLOCK_ELEMENTS if kind != "none" and self.dense is not None else _BLOCK_ELEMENTS
        rows = max(1, elements // (B * d))
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
                direct = kind == "diagonal" and self.linearize_diagonal is not None
                out, block_jac = (self.linearize_diagonal if direct else self.linearize)(prev, u)
                block_jac = block_jac.reshape(B, t1 - t0, *block_jac.shape[1:])
                if kind == "diagonal" and not direct:
                    block_jac = diagonal_of(block_jac, self.structure)
                if jac is None:
                    jac = h.new_empty(B, T, *block_jac.shape[2:])
                jac[:, t0:t1] = block_jac
            block = rhs[:, t0:t1]
            torch.sub(out.reshape(B, t1 - t0, d), h[:, t0:t1], out=block)
            residual = torch.maximum(residual, max_abs(block))
        return rhs, jac, residual
