"""`RecyclingSolver`: one object that solves A₁x₁ = b₁, A₂x₂ = b₂, … carrying a subspace along.

Example:
    >>> import scipy.sparse as sp
    >>> solver = RecyclingSolver("cg", recycle=8, rtol=1e-8)
    >>> T = sp.diags([[-1.0] * 99, [2.0] * 100, [-1.0] * 99], [-1, 0, 1]).tocsr()
    >>> first = solver.solve(T + 0.01 * sp.eye(100), torch.ones(100, dtype=torch.float64))
    >>> second = solver.solve(T + 0.02 * sp.eye(100), torch.ones(100, dtype=torch.float64))
    >>> second.nit < first.nit
    True
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ...core.status import Status
from ..iterative.common import KrylovResult, finish, prepare
from ..matrix import SquareOperator, aslinearoperator
from .deflated_cg import deflated_cg
from .gcrodr import gcrodr
from .ordering import skr_order
from .reuse import ReusedPreconditioner

METHODS = ("gcrodr", "cg")


class RecyclingSolver:
    """Solve a sequence of related systems, recycling a k-dimensional subspace between solves.

    ``method="gcrodr"`` (any nonsingular A, right preconditioner M) keeps the k harmonic Ritz
    vectors of smallest magnitude of A M⁻¹ (Parks et al. 2006, in the flexible form: the subspace
    lives in the space of solutions, so a preconditioner that changes from system to system — an
    AMG hierarchy or ILU rebuilt for each matrix — costs no extra applications);
    ``method="cg"`` (SPD A, SPD M) deflates the k Ritz vectors of smallest Ritz value (Saad et al.
    2000). Each ``solve`` costs k extra products with A to re-project the subspace onto the new
    matrix (none when the same operator object is passed again to GCRO-DR) and none with M⁻¹;
    those products are counted in ``nmatvec``.

    Use it inside a Newton loop by keeping one solver across iterations and calling
    ``solve(J_k, -F_k)`` with the Jacobian (or Hessian) operator of each iteration.
    """

    def __init__(self, method: str = "gcrodr", *, recycle: int = 20, restart: int = 60, rtol: float = 1e-8,
                 atol: float = 0.0, maxiter: int | None = None, warm_start: bool = True,
                 harvest: int | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(recycle, bool) or not isinstance(recycle, int) or recycle < 0:
            raise ValueError(f"recycle must be an int >= 0, got {recycle!r}")
        if isinstance(restart, bool) or not isinstance(restart, int) or restart < recycle + 1:
            raise ValueError(f"restart must be an int > recycle ({recycle}), got {restart!r}")
        if harvest is not None and (isinstance(harvest, bool) or not isinstance(harvest, int) or harvest < 0):
            raise ValueError(f"harvest must be an int >= 0 or None, got {harvest!r}")
        self.method, self.recycle, self.restart, self.harvest = method, recycle, restart, harvest
        self.rtol, self.atol, self.maxiter, self.warm_start = rtol, atol, maxiter, warm_start
        self.subspace: torch.Tensor | None = None
        self._last: tuple[SquareOperator, torch.Tensor | None] | None = None
        self._preconditioned_side: torch.Tensor | None = None
        self._previous_x: torch.Tensor | None = None
        self.order: list[int] | None = None

    def reset(self) -> None:
        """Forget the recycled subspace (and the warm start)."""
        self.subspace, self._last, self._previous_x, self.order = None, None, None, None
        self._preconditioned_side = None

    def state_dict(self) -> dict[str, Any]:
        return {"subspace": None if self.subspace is None else self.subspace.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.subspace, self._last, self._preconditioned_side = state["subspace"], None, None

    def solve(self, A: Any, b: torch.Tensor, x0: torch.Tensor | None = None, *, M: Any = None) -> KrylovResult:
        """Solve A x = b (b of shape (n,)) to ‖b − Ax‖ ≤ max(rtol‖b‖, atol), then refresh the subspace.

        Without ``x0`` and with ``warm_start`` the previous solution is the initial guess, unless
        its residual is larger than ‖b‖ (then zero is; that check costs one product)."""
        return self._solve(A, b, x0, M, self._previous_x if x0 is None and self.warm_start else None)

    def _solve(self, A: Any, b: torch.Tensor, x0: torch.Tensor | None, M: Any, guess: torch.Tensor | None) -> KrylovResult:
        if isinstance(b, torch.Tensor) and b.dim() != 1:
            raise ValueError(f"RecyclingSolver solves one right-hand side at a time: b must be (n,), got {tuple(b.shape)}")
        problem = prepare(A, b, x0, self.rtol, self.atol, self.maxiter, M, None, lambda n: 10 * n)
        op, bb, x = problem.ops.op, problem.b[0], problem.x[0]
        if guess is not None and guess.shape == bb.shape and guess.dtype == bb.dtype:
            # a neighbour's solution helps only if it beats x = 0 (b may differ from system to system)
            if float((bb - problem.ops.mv(guess)).norm()) < float(bb.norm()):
                x = guess.clone()
        n = bb.shape[0]
        U = self.subspace
        if U is not None and (U.shape[1] != n or U.dtype != bb.dtype):
            U = None  # a different problem size or dtype: start afresh
        tol = float(problem.tol[0])
        if self.method == "gcrodr":
            # C = A U depends on A only (the flexible form): reusable whenever A is the same object
            same = self._last is not None and self._last[0] is op and U is self.subspace
            S = self._preconditioned_side if U is not None and U is self.subspace else None
            x, U, S, C, nit, status, rnorm = gcrodr(problem.ops, bb, x, U, m=min(self.restart, n), k=self.recycle,
                                                    tol=tol, maxiter=problem.maxiter, S=S,
                                                    reuse_C=self._last[1] if same and U is not None else None)
        else:
            x, U, nit, status, rnorm = deflated_cg(problem.ops, bb, x, U, k=self.recycle, tol=tol,
                                                   maxiter=problem.maxiter, harvest=self.harvest)
            S = C = None
        if self.recycle > 0 and U is not None and U.shape[0] > 0 and bool(torch.isfinite(U).all()):
            self.subspace, self._preconditioned_side = U, S
            self._last = (op, C) if C is not None else None
        else:
            self._last = None
        if status == Status.SUCCESS:
            self._previous_x = x
        long = dict(dtype=torch.long, device=bb.device)
        return finish(problem, x.unsqueeze(0), torch.tensor([int(status)], **long), torch.tensor([nit], **long),
                      torch.tensor([rnorm], dtype=bb.dtype, device=bb.device))

    def solve_sequence(self, systems: Sequence[tuple[Any, torch.Tensor]], *, order: str | Sequence[int] = "skr",
                       features: torch.Tensor | None = None,
                       preconditioner: Callable[[SquareOperator], Any] | None = None) -> list[KrylovResult]:
        """Solve every (A, b) in ``systems`` and return the results in the caller's order.

        ``order="skr"`` sorts greedily by ``features`` (N, d) — for example the PDE parameters of
        each system — or, when none are given, by the diagonals of the matrices; ``"given"`` keeps
        the order; a permutation is used as is. ``preconditioner`` builds M from each operator
        (for example :func:`~torchnewton.linear.jacobi_preconditioner`); a
        :class:`~torchnewton.linear.recycling.ReusedPreconditioner` keeps one M for neighbouring
        systems and is told each solve's iteration count. The order used is left in ``self.order``.
        """
        systems = list(systems)
        count = len(systems)
        if count == 0:
            raise ValueError("systems must hold at least one (A, b) pair")
        operators = [aslinearoperator(A) for A, _ in systems]
        if isinstance(order, str):
            if order == "given":
                sequence = list(range(count))
            elif order == "skr":
                if features is None:
                    features = torch.stack([op.diagonal().double().cpu() for op in operators])
                if features.shape[0] != count:
                    raise ValueError(f"features must have one row per system ({count}), got {features.shape[0]}")
                sequence = skr_order(features.reshape(count, -1))
            else:
                raise ValueError(f"order must be 'skr', 'given' or a permutation, got {order!r}")
        else:
            sequence = [int(i) for i in order]
            if sorted(sequence) != list(range(count)):
                raise ValueError(f"order must be a permutation of range({count})")
        self.order = sequence
        results: list[KrylovResult | None] = [None] * count
        points = None if features is None else features.reshape(count, -1).double()
        solved: list[int] = []
        for index in sequence:
            op, b = operators[index], systems[index][1]
            M = preconditioner(op) if preconditioner is not None else None
            guess = None
            if self.warm_start and solved:
                # warm start from the nearest system solved so far (the previous one in SKR order,
                # usually, but not after the greedy path jumps)
                nearest = solved[-1] if points is None else \
                    solved[int(torch.argmin(torch.cdist(points[index:index + 1], points[solved])))]
                guess = results[nearest].x if results[nearest].success else None
            results[index] = self._solve(op, b, None, M, guess)
            if isinstance(preconditioner, ReusedPreconditioner):
                preconditioner.record(results[index].nit)
            solved.append(index)
        return results  # type: ignore[return-value]
