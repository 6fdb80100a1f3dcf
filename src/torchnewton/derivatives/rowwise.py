"""Per-row Jacobians of a row-wise map (a recurrence cell) by plain reverse-mode autograd,
exploiting declared structure.

A cell ``f(h, x)`` on rows maps (N, d), (N, m) to (N, d), row i depending only on row i, so the
Jacobian of the *batch* map is block diagonal with the per-row Jacobians ``J_n = df/dh(h_n, x_n)``
as blocks, and one vector-Jacobian product with a cotangent ``c`` (N, d) gives ``J_n^T c_n`` for
every row at once. How many products a Jacobian needs depends on its structure:

* ``"diagonal"`` (every output entry depends on its own state entry only): ``J_n^T 1 = diag(J_n)``,
  one product with a ones cotangent gives every diagonal of all rows (all time steps) at once;
* ``"block"`` (k x k blocks on consecutive coordinates): k products with the cotangent that is 1
  at position i of every block give row i of every block (a coloring of the block structure);
* ``"dense"``: d products with the cotangents ``e_i`` give the rows ``e_i^T J_n``. The diagonal
  alone (:func:`dense_jacobian_diagonal`, for quasi-Newton) keeps entry i of product i, so no
  (N, d, d) tensor is ever formed; it costs the same d products.

All products share one forward pass (``retain_graph``), so a dense Jacobian costs one cell
evaluation and d backward passes: the count of d batched JVPs, without replicating the forward.
Forward-mode AD (``torch.autograd.forward_ad``) would do the same work, but in torch 2.13 a
forward-mode ``mul``/``add`` runs a Python decomposition that imports ``torch._dynamo`` (about
2 s on first use), and so does ``torch.func``; plain autograd imports nothing.

Example::

    >>> cell = lambda h, x: torch.tanh(0.5 * h + x)
    >>> out, diag = cell_jacobian(cell, torch.zeros(4, 3), torch.randn(4, 3), "diagonal")
    >>> diag.shape
    torch.Size([4, 3])
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

Transition = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _products(transition: Transition, h: torch.Tensor, u: torch.Tensor,
              cotangents: Iterator[torch.Tensor] | list[torch.Tensor]
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``f(h, u)`` and ``J^T c`` (rows) for each cotangent ``c`` (N, d), from one forward pass."""
    cotangents = list(cotangents)
    with torch.enable_grad():
        h = h.detach().requires_grad_()
        out = transition(h, u)
        if not out.requires_grad:  # f does not depend on h: J = 0
            return out.detach(), [torch.zeros_like(h) for _ in cotangents]
        grads = [torch.autograd.grad(out, h, c, retain_graph=i + 1 < len(cotangents), allow_unused=True)[0]
                 for i, c in enumerate(cotangents)]
    return out.detach(), [torch.zeros_like(h) if g is None else g for g in grads]


def _block_cotangent(h: torch.Tensor, k: int, i: int) -> torch.Tensor:
    """1 at position i of every block of k consecutive coordinates, 0 elsewhere (N, d)."""
    pattern = h.new_zeros(k)
    pattern[i] = 1
    return pattern.repeat(h.shape[-1] // k).expand_as(h)


def cell_jacobian(transition: Transition, h: torch.Tensor, u: torch.Tensor, structure: str,
                  block_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(h, u)`` (N, d) and its per-row state Jacobians stored as ``structure`` requires:
    (N, d) diagonal, (N, d/k, k, k) block or (N, d, d) dense. The declared structure is trusted:
    entries outside it are not computed (and would corrupt the ones that are)."""
    N, d = h.shape
    if structure == "diagonal":
        out, (diag,) = _products(transition, h, u, [torch.ones_like(h)])
        return out, diag
    if structure == "block":
        k = block_size
        out, rows = _products(transition, h, u, (_block_cotangent(h, k, i) for i in range(k)))
        # product i holds row i of every block: J[n, b, i, j] = rows[i][n, b*k + j]
        return out, torch.stack([r.reshape(N, d // k, k) for r in rows], 2)
    return dense_jacobian(transition, h, u)


def dense_jacobian_rows(transition: Transition, h: torch.Tensor, u: torch.Tensor
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``f(h, u)`` (N, d) and the d products with ``e_i``: ``rows[i][n] = e_i^T J_n`` (N, d), row
    i of every per-row Jacobian, left where autograd wrote them (never stacked to (N, d, d))."""
    N, d = h.shape
    eye = torch.eye(d, dtype=h.dtype, device=h.device)
    return _products(transition, h, u, (eye[i].expand(N, d) for i in range(d)))


def dense_jacobian(transition: Transition, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(h, u)`` (N, d) and its per-row state Jacobians (N, d, d): d products with ``e_i``."""
    out, rows = dense_jacobian_rows(transition, h, u)
    return out, torch.stack(rows, 1)


def dense_jacobian_diagonal(transition: Transition, h: torch.Tensor, u: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(h, u)`` (N, d) and the diagonals (N, d) of its dense per-row Jacobians, one column of
    memory at a time: product i is ``e_i^T J`` of every row, of which only entry i is kept."""
    N, d = h.shape
    eye = torch.eye(d, dtype=h.dtype, device=h.device)
    diag = h.new_empty(N, d)
    with torch.enable_grad():
        h_var = h.detach().requires_grad_()
        out = transition(h_var, u)
        if not out.requires_grad:
            return out.detach(), diag.zero_()
        for i in range(d):
            g = torch.autograd.grad(out, h_var, eye[i].expand(N, d), retain_graph=i + 1 < d, allow_unused=True)[0]
            diag[:, i] = 0 if g is None else g[:, i]
    return out.detach(), diag
