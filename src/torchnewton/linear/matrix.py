"""One square matrix shared by a batch of right-hand sides: the operator of the public solvers.

The internal :class:`~torchnewton.linear.operator.LinearOperator` holds a *batch of matrices*
(B, n, n); a sequence of PDE systems instead has one large sparse n×n matrix and one or several
right-hand sides. :func:`aslinearoperator` turns whatever a user holds — a dense tensor, a
``torch.sparse_csr`` tensor, a ``scipy.sparse`` matrix (converted to CSR once), a
``scipy.sparse.linalg.LinearOperator`` or a callable — into a :class:`SquareOperator` whose
``matvec`` maps (B, n) to (B, n).

Example:
    >>> import scipy.sparse as sp
    >>> A = aslinearoperator(sp.diags([1.0, 2.0, 4.0]).tocsr())
    >>> A.matvec(torch.ones(1, 3, dtype=torch.float64))
    tensor([[1., 2., 4.]], dtype=torch.float64)
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np
import torch


class SquareOperator(ABC):
    """An n×n linear map applied to a batch of vectors (B, n) → (B, n)."""

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    @abstractmethod
    def matvec(self, X: torch.Tensor) -> torch.Tensor:
        """A x for every row x of X (B, n)."""

    def diagonal(self) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} does not know its diagonal; pass a matrix for "
                        "Jacobi/SOR-type preconditioners")

    def to_scipy(self) -> Any:
        raise TypeError(f"{type(self).__name__} has no matrix entries; ILU and AMG need a sparse matrix")

    def mv(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """A x for one vector x (n,), written into ``out`` when given (the single right-hand-side
        solvers call this once per iteration with a preallocated buffer)."""
        y = self.matvec(x.unsqueeze(0))[0]
        return y if out is None else out.copy_(y)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return self.matvec(X)


class MatrixOperator(SquareOperator):
    """A dense (n, n) or ``torch.sparse_csr`` matrix."""

    def __init__(self, matrix: torch.Tensor):
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"A must be a square (n, n) matrix, got shape {tuple(matrix.shape)}")
        if not matrix.dtype.is_floating_point:
            raise TypeError(f"A must have a floating dtype, got {matrix.dtype}")
        if matrix.layout == torch.sparse_csr and matrix.crow_indices().dtype == torch.int64 \
                and matrix.values().numel() < 2**31 - 1 and matrix.device.type == "cpu":
            # 32-bit indices: the CSR product reads half the index bytes (see _csr_from_scipy)
            matrix = torch.sparse_csr_tensor(matrix.crow_indices().int(), matrix.col_indices().int(),
                                             matrix.values(), size=matrix.shape, check_invariants=False)
        self.matrix = matrix
        self.sparse = matrix.layout == torch.sparse_csr
        self.shape = (int(matrix.shape[0]), int(matrix.shape[1]))
        self.dtype, self.device = matrix.dtype, matrix.device
        self._scipy: Any = None

    def matvec(self, X: torch.Tensor) -> torch.Tensor:
        if X.shape[0] == 1:  # the 1-D sparse product is the fastest kernel for one vector
            return self.mv(X[0]).unsqueeze(0)
        return (self.matrix @ X.T).T

    def mv(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            return torch.mv(self.matrix, x)
        # addmv with β = 0 into a preallocated buffer: no allocation, as fast as scipy's CSR kernel
        return torch.addmv(out, self.matrix, x, beta=0, out=out)

    def diagonal(self) -> torch.Tensor:
        if not self.sparse:
            return torch.diagonal(self.matrix)
        return torch.from_numpy(self.to_scipy().diagonal()).to(self.dtype)

    def to_scipy(self) -> Any:
        import scipy.sparse as sp

        if self._scipy is None:
            if self.sparse:
                m = self.matrix
                self._scipy = sp.csr_matrix((m.values().cpu().numpy(), m.col_indices().cpu().numpy(),
                                             m.crow_indices().cpu().numpy()), shape=self.shape)
            else:
                self._scipy = sp.csr_matrix(self.matrix.cpu().numpy())
        return self._scipy


class CallableOperator(SquareOperator):
    """A matrix-free operator. ``matvec`` takes (B, n) when ``vectorized`` (the default), else
    one vector (n,) at a time."""

    def __init__(self, matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *, dtype: torch.dtype,
                 device: torch.device | str = "cpu", vectorized: bool = True,
                 diagonal: torch.Tensor | None = None):
        self._matvec, self._vectorized, self._diagonal = matvec, vectorized, diagonal
        self.shape, self.dtype, self.device = (n, n), dtype, torch.device(device)

    def matvec(self, X: torch.Tensor) -> torch.Tensor:
        if self._vectorized:
            return self._matvec(X)
        return torch.stack([self._matvec(x) for x in X])

    def diagonal(self) -> torch.Tensor:
        return self._diagonal if self._diagonal is not None else super().diagonal()


def _csr_from_scipy(matrix: Any, dtype: torch.dtype | None, device: torch.device | str | None) -> torch.Tensor:
    csr = matrix.tocsr()
    csr.sort_indices()
    values = torch.from_numpy(np.ascontiguousarray(csr.data))
    if not values.dtype.is_floating_point:
        values = values.to(torch.float64)
    # 32-bit indices when they fit: torch's CSR product reads half the index bytes and runs
    # about 1.6x faster on one CPU thread (on par with scipy's kernel, measured at n = 127²)
    index = np.int32 if csr.nnz < 2**31 - 1 else np.int64
    return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(index)),
                                   torch.from_numpy(csr.indices.astype(index)),
                                   values.to(dtype or values.dtype), size=csr.shape, device=device,
                                   check_invariants=False)


def aslinearoperator(A: Any, *, n: int | None = None, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> SquareOperator:
    """Wrap A as a :class:`SquareOperator`.

    Accepts a :class:`SquareOperator` (returned as is), a dense or sparse (CSR/COO/CSC) torch
    tensor, a ``scipy.sparse`` matrix or array (converted to ``torch.sparse_csr`` once), a numpy
    array, a ``scipy.sparse.linalg.LinearOperator``, or a callable (B, n) → (B, n) with ``n``
    and ``dtype`` given.
    """
    if isinstance(A, SquareOperator):
        return A
    if isinstance(A, torch.Tensor):
        if A.layout in (torch.sparse_coo, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
            A = A.to_sparse_csr()
        if dtype is not None or device is not None:
            A = A.to(dtype=dtype or A.dtype, device=device or A.device)
        return MatrixOperator(A)
    if isinstance(A, np.ndarray):
        return MatrixOperator(torch.as_tensor(A, dtype=dtype, device=device))
    try:
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla
    except ImportError:  # scipy is optional for tensor inputs
        sp = spla = None
    if sp is not None and sp.issparse(A):
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be square, got shape {A.shape}")
        return MatrixOperator(_csr_from_scipy(A, dtype, device))
    if spla is not None and isinstance(A, spla.LinearOperator):
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be square, got shape {A.shape}")
        dt = dtype or torch.float64

        def apply(x: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(np.asarray(A.matvec(x.cpu().numpy())).ravel(), dtype=dt, device=x.device)
        return CallableOperator(apply, A.shape[0], dtype=dt, device=device or "cpu", vectorized=False)
    if callable(A):
        if n is None or dtype is None:
            raise ValueError("a callable A needs n= (the dimension) and dtype=")
        return CallableOperator(A, n, dtype=dtype, device=device or "cpu")
    raise TypeError(f"A must be a tensor, a scipy.sparse matrix, a LinearOperator or a callable, "
                    f"got {type(A).__name__}")
