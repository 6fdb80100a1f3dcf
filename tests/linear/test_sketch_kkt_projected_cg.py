"""The "projected-cg" sketch: projected CG on KKT systems meets its accuracy per member against a
dense solve, agrees dense / KKTOperator / callable, certifies negative curvature, and drives sqp to
the same KKT residual as direct solves."""
import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.linear.sketch import KKTOperator, projected_cg, sketch_solve, trailing_zero_block
from torchnewton.solvers.objective.minimize import minimize

DT = torch.float64


def kkt(batch: int, n: int, m: int, seed: int, shift: float = 0.5):
    """(H symmetric (B, n, n) with spectrum shifted by ``shift``, J (B, m, n), K (B, n + m, n + m))."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(batch, n, n, generator=g, dtype=DT)
    H = A @ A.transpose(-1, -2) / n + shift * torch.eye(n, dtype=DT)
    J = torch.randn(batch, m, n, generator=g, dtype=DT)
    K = torch.cat([torch.cat([H, J.transpose(-1, -2)], -1), torch.cat([J, torch.zeros(batch, m, m, dtype=DT)], -1)], -2)
    return H, J, K


def relative_residual(K, z, b):
    return ((K @ z.unsqueeze(-1)).squeeze(-1) - b).norm(dim=-1) / b.norm(dim=-1)


def test_meets_accuracy_per_member_and_tightest_is_the_solution():
    H, J, K = kkt(3, 60, 5, 0)
    b = torch.randn(3, 65, generator=torch.Generator().manual_seed(1), dtype=DT)
    theta = torch.tensor([1e-11, 1e-5, 1e-1], dtype=DT)
    out = sketch_solve(K, b, theta, sketch="projected-cg", max_iter=500)
    assert out.status.tolist() == [int(Status.SUCCESS)] * 3
    true = relative_residual(K, out.x, b)
    assert bool((true <= theta * (1 + 1e-6)).all())
    torch.testing.assert_close(out.residual_norm / b.norm(dim=-1), true)
    assert out.iterations[0] > out.iterations[1] > out.iterations[2] > 0
    # the constraint rows hold to rounding at any accuracy: the residual is the projected one
    for i in range(3):
        torch.testing.assert_close(J[i] @ out.x[i, :60], b[i, 60:], atol=1e-10, rtol=0)
    torch.testing.assert_close(out.x[0], torch.linalg.solve(K[0], b[0]), atol=1e-9, rtol=1e-9)


def test_cg_iterations_follow_the_reduced_condition_number():
    # H = I + low rank of rank 4 on null(J): CG ends in at most 5 steps in exact arithmetic
    n, m = 80, 6
    g = torch.Generator().manual_seed(3)
    U = torch.randn(1, n, 4, generator=g, dtype=DT)
    H = torch.eye(n, dtype=DT) + U @ U.transpose(-1, -2)
    J = torch.randn(1, m, n, generator=g, dtype=DT)
    b = torch.randn(1, n + m, generator=g, dtype=DT)
    out = projected_cg(KKTOperator(lambda V: H @ V, J), b, 1e-10)
    assert out.status.item() == int(Status.SUCCESS) and out.iterations.item() <= 6


def test_dense_operator_and_callable_agree():
    H, J, K = kkt(2, 30, 4, 5)
    b = torch.randn(2, 34, generator=torch.Generator().manual_seed(6), dtype=DT)
    shift = torch.tensor([0.0, 0.3], dtype=DT)
    Ks = K + torch.diag_embed(shift.unsqueeze(-1) * torch.cat([torch.ones(30, dtype=DT), torch.zeros(4, dtype=DT)]))
    dense = sketch_solve(Ks, b, 1e-10, sketch="projected-cg")
    operator = sketch_solve(KKTOperator(lambda V: H @ V, J, shift), b, 1e-10, sketch="projected-cg")
    callable_ = sketch_solve(lambda V: Ks @ V, b, 1e-10, sketch="projected-cg", constraint_rows=4)
    exact = torch.linalg.solve(Ks, b)
    for out in (dense, operator, callable_):
        assert out.status.tolist() == [int(Status.SUCCESS)] * 2
        torch.testing.assert_close(out.x, exact, atol=1e-8, rtol=1e-8)
    assert dense.iterations.tolist() == operator.iterations.tolist() == callable_.iterations.tolist()


def test_warm_start_from_the_solution_needs_no_iteration():
    _, _, K = kkt(1, 25, 3, 8)
    b = torch.randn(1, 28, generator=torch.Generator().manual_seed(9), dtype=DT)
    exact = torch.linalg.solve(K, b)
    out = projected_cg(K, b, 1e-8, x0=exact)
    assert out.iterations.item() == 0 and out.status.item() == int(Status.SUCCESS)
    torch.testing.assert_close(out.x, exact, atol=1e-10, rtol=1e-10)


def test_trailing_zero_block_finds_the_constraint_rows():
    _, _, K = kkt(2, 12, 3, 2)
    assert trailing_zero_block(K) == 3
    assert trailing_zero_block(torch.eye(4, dtype=DT).expand(1, 4, 4)) == 0


def test_negative_curvature_on_the_null_space_is_certified():
    # H indefinite on null(J): CG stops with a direction d, Jd = 0, dᵀHd ≤ 0, as x and as `direction`
    H, J, K = kkt(2, 40, 3, 11, shift=0.5)
    H = H.clone()
    H[1] -= 3.0 * torch.eye(40, dtype=DT)
    K = K.clone()
    K[:, :40, :40] = H
    b = torch.randn(2, 43, generator=torch.Generator().manual_seed(12), dtype=DT)
    out = sketch_solve(K, b, 1e-10, sketch="projected-cg")
    assert out.status.tolist() == [int(Status.SUCCESS), int(Status.NEGATIVE_CURVATURE)]
    d = out.direction[1, :40]
    assert float(d @ H[1] @ d) <= 1e-8 * float(d @ d) and float(d.norm()) > 0
    torch.testing.assert_close(J[1] @ d, torch.zeros(3, dtype=DT), atol=1e-10, rtol=0)
    torch.testing.assert_close(out.x[1], out.direction[1])
    torch.testing.assert_close(out.x[0], torch.linalg.solve(K[0], b[0]), atol=1e-8, rtol=1e-8)


def test_bad_inputs_are_rejected_before_work():
    _, _, K = kkt(1, 10, 2, 0)
    b = torch.ones(1, 12, dtype=DT)
    with pytest.raises(ValueError, match="constraint_rows"):
        sketch_solve(lambda V: K @ V, b, 0.1, sketch="projected-cg")
    with pytest.raises(ValueError, match="constraint_rows"):
        sketch_solve(K, b, 0.1, sketch="projected-cg", constraint_rows=12)
    with pytest.raises(ValueError, match="trailing"):
        sketch_solve(torch.eye(12, dtype=DT).expand(1, 12, 12), b, 0.1, sketch="projected-cg", constraint_rows=2)
    with pytest.raises(ValueError, match="sketch="):
        sketch_solve(K, b, 0.1, sketch="projected")


def logistic(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(2 * n, n, generator=g, dtype=DT)
    y = torch.sign(X @ torch.randn(n, generator=g, dtype=DT))
    A = torch.randn(4, n, generator=g, dtype=DT) / n ** 0.5
    w_bar = torch.randn(n, generator=g, dtype=DT)
    b = A @ (w_bar / w_bar.norm())

    def f(w):
        return torch.nn.functional.softplus(-y * (X @ w)).mean()

    def c(w):
        return torch.cat([A @ w - b, (w @ w - 1.0).reshape(1)])

    return f, c, torch.randn(n, generator=g, dtype=DT) / n ** 0.5


@pytest.mark.parametrize("sharpen", [0.0, 1.0])
def test_sqp_with_projected_cg_reaches_the_direct_solution(sharpen):
    f, c, x0 = logistic(40, 0)
    runs = {}
    for name, options in (("direct", {"kkt_solver": "direct"}),
                          ("pcg", {"kkt_solver": "sketch", "sketch": "projected-cg", "accuracy": 0.1,
                                   "sharpen": sharpen})):
        runs[name] = minimize(f, x0.clone(), method="sqp", constraints={"type": "eq", "fun": c}, tol=1e-9,
                              max_iter=200, options=options)
    direct, pcg = runs["direct"], runs["pcg"]
    assert direct.success and pcg.success
    torch.testing.assert_close(pcg.x, direct.x, atol=1e-7, rtol=0)
    assert float(pcg.extras["optimality"]) <= 1e-9 and float(pcg.extras["constraint_violation"]) <= 1e-9
    # sharpened θ keeps Newton's iteration count; fixed θ = 0.1 is linear, so it needs more
    if sharpen > 0:
        assert int(pcg.nit) <= int(direct.nit) + 2
    else:
        assert int(pcg.nit) > int(direct.nit)
