"""sketch_solve: the returned residual meets the requested accuracy on SPD and KKT systems,
dense and matrix-free, and the bookkeeping (status, iterations, warm start, errors) is honest."""
import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.linear.sketch import KKTOperator, sketch_solve

DT = torch.float64


def spd(batch: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(batch, size, size, generator=g, dtype=DT)
    return A @ A.transpose(-1, -2) / size + 0.5 * torch.eye(size, dtype=DT)


def kkt(batch: int, n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(H SPD (B, n, n), J full rank (B, m, n), K (B, n + m, n + m))."""
    g = torch.Generator().manual_seed(seed + 1)
    H = spd(batch, n, seed)
    J = torch.randn(batch, m, n, generator=g, dtype=DT)
    K = torch.cat([torch.cat([H, J.transpose(-1, -2)], -1), torch.cat([J, torch.zeros(batch, m, m, dtype=DT)], -1)], -2)
    return H, J, K


def relative_residual(K, x, b):
    return ((K @ x.unsqueeze(-1)).squeeze(-1) - b).norm(dim=-1) / b.norm(dim=-1)


THETA = torch.tensor([1e-9, 1e-5, 1e-2], dtype=DT)


@pytest.mark.parametrize("sketch", ["coordinate", "gaussian"])
@pytest.mark.parametrize("matrix_free", [False, True])
def test_spd_residual_meets_accuracy_per_member(sketch, matrix_free):
    K = spd(3, 40, 0)
    b = torch.randn(3, 40, generator=torch.Generator().manual_seed(5), dtype=DT)
    operator = (lambda V: K @ V) if matrix_free else K
    out = sketch_solve(operator, b, THETA, sketch=sketch, sketch_size=8, max_iter=20_000,
                       generator=torch.Generator().manual_seed(0))
    assert out.status.tolist() == [int(Status.SUCCESS)] * 3
    true = relative_residual(K, out.x, b)
    assert bool((true <= THETA).all())
    torch.testing.assert_close(out.residual_norm / b.norm(dim=-1), true)
    # looser accuracy, fewer iterations; the tightest one is the solution
    assert out.iterations[0] >= out.iterations[1] >= out.iterations[2] > 0
    torch.testing.assert_close(out.x[0], torch.linalg.solve(K[0], b[0]), atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("sketch", ["coordinate", "gaussian"])
def test_kkt_dense_and_matrix_free_meet_accuracy(sketch):
    H, J, K = kkt(2, 24, 4, 3)
    b = torch.randn(2, 28, generator=torch.Generator().manual_seed(7), dtype=DT)
    theta = torch.tensor([1e-8, 1e-3], dtype=DT)
    exact = torch.linalg.solve(K, b)
    for operator in (K, KKTOperator(lambda V: H @ V, J)):
        out = sketch_solve(operator, b, theta, sketch=sketch, sketch_size=6, max_iter=200_000,
                           generator=torch.Generator().manual_seed(1))
        assert out.status.tolist() == [int(Status.SUCCESS)] * 2
        assert bool((relative_residual(K, out.x, b) <= theta).all())
        torch.testing.assert_close(out.x[0], exact[0], atol=1e-5, rtol=1e-5)


def test_kkt_operator_is_the_kkt_matrix_with_its_shift():
    H, J, K = kkt(2, 5, 2, 0)
    shift = torch.tensor([0.0, 0.7], dtype=DT)
    V = torch.randn(2, 7, 3, dtype=DT)
    shifted = K + torch.diag_embed(shift.unsqueeze(-1) * torch.cat([torch.ones(5), torch.zeros(2)]).to(DT))
    torch.testing.assert_close(KKTOperator(lambda W: H @ W, J, shift)(V), shifted @ V)


def test_iteration_cap_reports_max_iter_and_the_true_residual():
    H, J, K = kkt(1, 30, 5, 1)
    b = torch.randn(1, 35, dtype=DT)
    out = sketch_solve(K, b, 1e-12, sketch="coordinate", sketch_size=4, max_iter=10)
    assert int(out.status[0]) == int(Status.MAX_ITER)
    assert int(out.iterations[0]) == 10
    torch.testing.assert_close(out.residual_norm, relative_residual(K, out.x, b) * b.norm(dim=-1))


def test_warm_start_at_the_solution_takes_no_iteration():
    K = spd(2, 12, 4)
    b = torch.randn(2, 12, dtype=DT)
    out = sketch_solve(K, b, 1e-8, x0=torch.linalg.solve(K, b), sketch="coordinate")
    assert out.iterations.tolist() == [0, 0] and out.status.tolist() == [int(Status.SUCCESS)] * 2


def test_same_generator_seed_same_result():
    K = spd(1, 20, 2)
    b = torch.randn(1, 20, dtype=DT)
    runs = [sketch_solve(K, b, 1e-6, sketch="gaussian", sketch_size=3, generator=torch.Generator().manual_seed(9))
            for _ in range(2)]
    torch.testing.assert_close(runs[0].x, runs[1].x)


def test_bad_input_is_rejected_before_work():
    K = spd(1, 4, 0)
    b = torch.ones(1, 4, dtype=DT)
    with pytest.raises(ValueError, match="sketch="):
        sketch_solve(K, b, 0.1, sketch="hadamard")
    with pytest.raises(ValueError, match="K must be"):
        sketch_solve(K[:, :3, :3], b, 0.1)
    with pytest.raises(ValueError, match="sketch_size"):
        sketch_solve(K, b, 0.1, sketch_size=0)
    with pytest.raises(ValueError, match="check_every"):
        sketch_solve(K, b, 0.1, check_every=0)
    with pytest.raises(ValueError, match="x0"):
        sketch_solve(K, b, 0.1, x0=torch.ones(1, 3, dtype=DT))
    with pytest.raises(TypeError, match="K must be"):
        sketch_solve("K", b, 0.1)
