import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.linear import (CholeskyFactor, DenseOperator, DiagonalOperator, LowRankPlusDiagonal,
                                MatrixFreeOperator, solve_dense)


def test_solve_dense_cholesky_lu_and_singular_fallback():
    torch.manual_seed(0)
    M = torch.randn(4, 6, 6, dtype=torch.float64)
    A = M @ M.transpose(-1, -2) + torch.eye(6, dtype=torch.float64)
    b = torch.randn(4, 6, dtype=torch.float64)
    for symmetric in (True, False):
        solution = solve_dense(A, b, symmetric=symmetric)
        assert torch.allclose(solution.x, torch.linalg.solve(A, b))
        assert (solution.status == int(Status.SUCCESS)).all()
    singular = A.clone()
    singular[1] = 0
    singular[2, :, 0] = 0
    solution = solve_dense(singular, b)
    assert solution.status.tolist() == [int(Status.SUCCESS), int(Status.SINGULAR), int(Status.SINGULAR), int(Status.SUCCESS)]
    assert torch.isfinite(solution.x).all()
    # the regularized solution of a consistent singular system still nearly solves it
    consistent = torch.einsum("bij,bj->bi", singular, torch.ones(4, 6, dtype=torch.float64))
    fallback = solve_dense(singular, consistent)
    residual = consistent - torch.einsum("bij,bj->bi", singular, fallback.x)
    assert residual[2].norm() < 1e-5 * consistent[2].norm()


def test_cholesky_factor_reuse_and_indefinite_flag():
    torch.manual_seed(1)
    M = torch.randn(2, 5, 5, dtype=torch.float64)
    A = M @ M.transpose(-1, -2) + torch.eye(5, dtype=torch.float64)
    A[1] = -A[1]
    factor = CholeskyFactor.factor(A)
    assert factor.ok.tolist() == [True, False]
    b = torch.randn(2, 5, dtype=torch.float64)
    x = factor.solve(b)
    assert torch.allclose(x[0], torch.linalg.solve(A[0], b[0]))
    assert torch.isfinite(x).all()


def test_operators_agree_with_their_dense_form():
    torch.manual_seed(2)
    d = torch.rand(3, 7, dtype=torch.float64) + 1
    U, V = torch.randn(3, 7, 2, dtype=torch.float64), torch.randn(3, 7, 2, dtype=torch.float64)
    v = torch.randn(3, 7, dtype=torch.float64)
    low_rank = LowRankPlusDiagonal(d, U, V)
    dense = low_rank.to_dense()
    assert torch.allclose(low_rank.matvec(v), torch.einsum("bij,bj->bi", dense, v))
    assert torch.allclose(low_rank.rmatvec(v), torch.einsum("bji,bj->bi", dense, v))
    assert torch.allclose(low_rank.solve(v), torch.linalg.solve(dense, v))
    assert torch.allclose(low_rank.diagonal(), torch.diagonal(dense, dim1=-2, dim2=-1))
    diagonal = DiagonalOperator(d)
    assert torch.allclose(diagonal.solve(diagonal.matvec(v)), v)
    shifted = DenseOperator(dense).shifted(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    assert torch.allclose(shifted.to_dense()[2], dense[2] + 2 * torch.eye(7, dtype=torch.float64))
    assert torch.allclose(DenseOperator(dense).T.matvec(v), low_rank.rmatvec(v))


def test_bad_operator_inputs():
    with pytest.raises(ValueError, match="matrix"):
        DenseOperator(torch.ones(3, 3))
    op = MatrixFreeOperator(lambda v: v, (1, 2, 2), dtype=torch.float64, device="cpu")
    with pytest.raises(TypeError, match="rmatvec"):
        op.rmatvec(torch.ones(1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        solve_dense(torch.ones(1, 2, 3), torch.ones(1, 2))
