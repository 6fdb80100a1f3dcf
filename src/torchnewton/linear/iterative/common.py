"""What the scipy-shaped Krylov solvers share: argument checks, tolerances, the result object.

Tolerance convention (every solver, preconditioned or not): a right-hand side is solved when
the *true* residual satisfies ‖b − A x‖₂ ≤ max(rtol·‖b‖₂, atol). Recurrence residuals only
trigger a check; the status is decided on a recomputed residual, so ``success`` is never a
property of the recurrence alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ...core.status import Status
from ..matrix import SquareOperator, aslinearoperator

Apply = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class KrylovResult:
    """The solution of A x = b by an iterative method.

    For a single right-hand side (b of shape (n,)) ``success``, ``status``, ``nit`` and
    ``residual_norm`` are Python scalars; for a batch (B, n) they are tensors (B,). ``nmatvec``
    counts every product with A (including residual checks and, for recycling, the products
    that refresh the recycled space); ``nprecond`` counts applications of M⁻¹. ``info`` follows
    scipy: 0 converged, > 0 the iteration count when not converged, < 0 breakdown or NaN.
    """

    x: torch.Tensor
    success: Any
    status: Any
    message: str
    nit: Any
    nmatvec: int
    nprecond: int
    residual_norm: Any
    info: Any
    history: list[float] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"KrylovResult(success={self.success}, status={self.status}, nit={self.nit}, "
                f"nmatvec={self.nmatvec}, residual_norm={self.residual_norm}, message={self.message!r})")


class Counted:
    """Counts products with the operator and the preconditioner."""

    def __init__(self, op: SquareOperator, precond: Apply | None):
        self.op, self.precond = op, precond
        self.nmatvec = 0
        self.nprecond = 0

    def A(self, X: torch.Tensor) -> torch.Tensor:
        self.nmatvec += 1
        return self.op.matvec(X)

    def mv(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """A x for one vector (n,), into ``out`` when given."""
        self.nmatvec += 1
        return self.op.mv(x, out)

    def M1(self, r: torch.Tensor) -> torch.Tensor:
        """M⁻¹ r for one vector (n,); r itself (no copy) without a preconditioner."""
        if self.precond is None:
            return r
        self.nprecond += 1
        return self.precond(r.unsqueeze(0))[0]

    def A_rows(self, X: torch.Tensor) -> torch.Tensor:
        """A applied to each row of X (k, n): k products, taken as one batched product."""
        self.nmatvec += X.shape[0]
        return self.op.matvec(X)

    def M(self, X: torch.Tensor) -> torch.Tensor:
        if self.precond is None:
            return X
        self.nprecond += 1
        return self.precond(X)


def as_preconditioner(M: Any, n: int, dtype: torch.dtype, device: torch.device) -> Apply | None:
    """M⁻¹ as a function (B, n) → (B, n): None, a preconditioner object or callable, or a
    matrix (dense/sparse tensor, scipy) applied by products — scipy's meaning of ``M``."""
    if M is None:
        return None
    if isinstance(M, (torch.Tensor, SquareOperator)) or hasattr(M, "tocsr") or hasattr(M, "matvec"):
        op = aslinearoperator(M, dtype=dtype, device=device)
        if op.shape != (n, n):
            raise ValueError(f"M must be ({n}, {n}), got {op.shape}")
        return op.matvec
    if callable(M):
        return M
    raise TypeError(f"M must be None, a callable r -> M⁻¹r or a matrix, got {type(M).__name__}")


@dataclass
class Problem:
    ops: Counted
    b: torch.Tensor          # (B, n)
    x: torch.Tensor          # (B, n) initial guess
    tol: torch.Tensor        # (B,)
    maxiter: int
    squeeze: bool
    callback: Callable[[torch.Tensor], Any] | None
    x0_given: bool


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def prepare(A: Any, b: torch.Tensor, x0: torch.Tensor | None, rtol: float, atol: float,
            maxiter: int | None, M: Any, callback: Any, default_maxiter: Callable[[int], int]) -> Problem:
    """Check every argument before any product is taken, and put b, x0 in (B, n) form."""
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"b must be a torch.Tensor, got {type(b).__name__}")
    if not b.dtype.is_floating_point:
        raise TypeError(f"b must have a floating dtype, got {b.dtype}")
    if b.dim() not in (1, 2) or b.shape[-1] == 0:
        raise ValueError(f"b must have shape (n,) or (B, n), got {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("b must be finite (it contains NaN or inf)")
    op = aslinearoperator(A, n=b.shape[-1], dtype=b.dtype, device=b.device)
    n = b.shape[-1]
    if op.shape != (n, n):
        raise ValueError(f"A has shape {op.shape} but b has {n} entries")
    if op.dtype != b.dtype:
        raise TypeError(f"A has dtype {op.dtype} but b has {b.dtype}")
    rtol, atol = _check_float("rtol", rtol), _check_float("atol", atol)
    if maxiter is not None and (isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1):
        raise ValueError(f"maxiter must be a positive int or None, got {maxiter!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    squeeze = b.dim() == 1
    B = b.unsqueeze(0) if squeeze else b
    if x0 is None:
        X = torch.zeros_like(B)
    else:
        if not isinstance(x0, torch.Tensor) or x0.shape != b.shape:
            raise ValueError(f"x0 must be a tensor of the shape of b {tuple(b.shape)}, got "
                             f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}")
        if not bool(torch.isfinite(x0).all()):
            raise ValueError("x0 must be finite")
        X = (x0.unsqueeze(0) if squeeze else x0).to(b.dtype).clone()
    precond = as_preconditioner(M, n, b.dtype, b.device)
    tol = torch.clamp(rtol * B.norm(dim=-1), min=atol)
    return Problem(Counted(op, precond), B, X, tol, maxiter if maxiter is not None else default_maxiter(n),
                   squeeze, callback, x0 is not None)


def finish(problem: Problem, x: torch.Tensor, status: torch.Tensor, nit: torch.Tensor,
           residual_norm: torch.Tensor, history: list[float] | None = None) -> KrylovResult:
    """Build the result; members whose residual is not finite are NONFINITE whatever happened."""
    status = torch.where(torch.isfinite(residual_norm), status, torch.full_like(status, int(Status.NONFINITE)))
    success = status == int(Status.SUCCESS)
    info = torch.where(success, torch.zeros_like(nit), torch.where(
        (status == int(Status.MAX_ITER)) | (status == int(Status.CALLBACK_STOP)), nit.clamp(min=1), -torch.ones_like(nit)))
    codes = sorted({int(s) for s in status.tolist()})
    message = "; ".join(Status(c).message for c in codes)
    if problem.squeeze:
        return KrylovResult(x=x[0], success=bool(success[0]), status=Status(int(status[0])), message=message,
                            nit=int(nit[0]), nmatvec=problem.ops.nmatvec, nprecond=problem.ops.nprecond,
                            residual_norm=float(residual_norm[0]), info=int(info[0]), history=history or [])
    return KrylovResult(x=x, success=success, status=status, message=message, nit=nit,
                        nmatvec=problem.ops.nmatvec, nprecond=problem.ops.nprecond,
                        residual_norm=residual_norm, info=info, history=history or [])


def accept_verified(problem: Problem, x: torch.Tensor, candidates: torch.Tensor, status: torch.Tensor,
                    true_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The true residual b − Ax of the whole batch (one product) for members whose recurrence
    residual met the tolerance. Those that meet it on the true residual too are marked SUCCESS in
    ``status``; returns (b − Ax, which candidates converged, ``true_norm`` updated for them). The
    other candidates drifted: their recurrence restarts from the true residual."""
    r_true = problem.b - problem.ops.A(x)
    norm = r_true.norm(dim=-1)
    ok = candidates & (norm <= problem.tol)
    status.masked_fill_(ok, int(Status.SUCCESS))
    return r_true, ok, torch.where(ok, norm, true_norm)


def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise uᵀv of (B, n) tensors; a batched matrix product, several times faster on CPU than
    the elementwise product and sum (no n-sized temporary)."""
    return torch.bmm(u.unsqueeze(1), v.unsqueeze(2)).view(-1)


def col(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(-1)


def call_back(problem: Problem, x: torch.Tensor) -> bool:
    """Run the callback on the current iterate; True means the caller asked to stop."""
    if problem.callback is None:
        return False
    return problem.callback(x[0] if problem.squeeze else x) is True
