"""torchnewton's monotone_inclusion: known saddle points of small finite-sum games (a linear solve,
scipy's LP for matrix games), exact oracle counts, honest statuses, bad input."""
import numpy as np
import pytest
import scipy.optimize
import torch

from torchnewton.core.status import Status
from torchnewton.solvers.monotone.operator import FiniteSumOperator
from torchnewton.solvers.monotone.solve import METHODS, monotone_inclusion

DOUBLE = torch.float64


def bilinear_game(n: int, d: int, lam: float, seed: int = 0):
    """F_i(x, y) = (A_i y + λx + b_i, −A_iᵀx + λy + c_i), the operator of
    min_x max_y (1/n) Σ xᵀA_i y + b_iᵀx − c_iᵀy + λ/2(‖x‖² − ‖y‖²); also the counting wrapper."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, dtype=DOUBLE, generator=g) / d ** 0.5 + 0.3 * torch.randn(n, d, d, dtype=DOUBLE, generator=g)
    shift = torch.randn(n, 2 * d, dtype=DOUBLE, generator=g)
    counted = {"calls": 0}

    def components(z, idx):
        counted["calls"] += idx.numel()
        M = A[idx].mean(0)
        return torch.cat([M @ z[d:], -(z[:d] @ M)]) + lam * z + shift[idx].mean(0)

    mean = A.mean(0)
    full_matrix = torch.cat([torch.cat([lam * torch.eye(d, dtype=DOUBLE), mean], 1),
                             torch.cat([-mean.T, lam * torch.eye(d, dtype=DOUBLE)], 1)])
    lipschitz = float(torch.linalg.matrix_norm(A, 2).square().mean().sqrt()) + lam
    operator = FiniteSumOperator(components, n, lipschitz, float(torch.linalg.matrix_norm(full_matrix, 2)))
    solution = torch.linalg.solve(full_matrix, -shift.mean(0))
    return operator, solution, counted


@pytest.mark.parametrize("method,options", [("extragradient", {}), ("halpern", {"restart": True}),
                                            ("vr-halpern", {"restart": True})])
def test_regularized_bilinear_game_solution(method, options):
    operator, solution, counted = bilinear_game(200, 4, lam=0.2)
    result = monotone_inclusion(operator, torch.zeros(8, dtype=DOUBLE), method=method, tol=1e-8,
                                max_oracle_calls=10 ** 7, options=options)
    assert result.success and result.status == Status.SUCCESS, result
    assert float(result.residual_norm) <= 1e-8
    # strongly monotone with modulus λ: ‖x − x*‖ ≤ ‖F(x)‖/λ
    assert float((result.x - solution).norm()) <= 1e-8 / 0.2 * 1.01
    # every call is counted; the one extra is the input check of one component at x0
    assert result.oracle_calls == counted["calls"] - 1 == result.nfev


def test_exact_oracle_counts_of_the_deterministic_methods():
    operator, _, counted = bilinear_game(50, 3, lam=0.1)
    for method in ("extragradient", "halpern"):
        counted["calls"] = 0
        options = {"restart": True} if method == "halpern" else None
        result = monotone_inclusion(operator, torch.zeros(6, dtype=DOUBLE), method=method, tol=1e-6, options=options)
        assert result.success
        # F at x0, then two full evaluations per step; plus the one-component input check
        assert result.oracle_calls == 50 * (1 + 2 * result.nit) == counted["calls"] - 1


def simplex_projection(v: torch.Tensor) -> torch.Tensor:
    u, _ = torch.sort(v, descending=True)
    cumulative = u.cumsum(0) - 1
    ks = torch.arange(1, v.numel() + 1, dtype=v.dtype)
    rho = int((u - cumulative / ks > 0).nonzero().max())
    return (v - cumulative[rho] / (rho + 1)).clamp_min(0)


def test_matrix_game_on_simplices_matches_linear_programming():
    g = torch.Generator().manual_seed(3)
    m, k, n = 4, 3, 300
    mean = torch.randn(m, k, dtype=DOUBLE, generator=g)
    parts = mean + torch.randn(n, m, k, dtype=DOUBLE, generator=g)
    parts = parts - parts.mean(0) + mean  # (1/n) Σ A_i = mean exactly

    def components(z, idx):
        M = parts[idx].mean(0)
        return torch.cat([M @ z[m:], -(z[:m] @ M)])  # min_x max_y xᵀA y, x ∈ Δ_m, y ∈ Δ_k

    def resolvent(z, step):
        return torch.cat([simplex_projection(z[:m]), simplex_projection(z[m:])])

    lipschitz = float(torch.linalg.matrix_norm(parts, 2).square().mean().sqrt())
    operator = FiniteSumOperator(components, n, lipschitz, float(torch.linalg.matrix_norm(mean, 2)))
    # the LP of the row player: min v s.t. (Aᵀx)_j ≤ v, x ∈ Δ
    A = mean.numpy()
    lp = scipy.optimize.linprog(np.r_[np.zeros(m), 1.0], A_ub=np.c_[A.T, -np.ones(k)], b_ub=np.zeros(k),
                                A_eq=np.r_[np.ones(m), 0.0][None], b_eq=[1.0], bounds=[(0, None)] * m + [(None, None)])
    x0 = torch.cat([torch.full((m,), 1 / m), torch.full((k,), 1 / k)]).to(DOUBLE)
    for method in METHODS:
        result = monotone_inclusion(operator, x0, method=method, resolvent=resolvent, tol=1e-7,
                                    max_oracle_calls=2 * 10 ** 6, options=None if method == "extragradient"
                                    else {"restart": True})
        assert result.success, (method, result)
        x, y = result.x[:m], result.x[m:]
        value = float(x @ mean @ y)
        assert abs(value - lp.fun) < 1e-5, method
        # the equilibrium of this game is unique: x matches the LP's strategy
        assert np.allclose(x.numpy(), lp.x[:m], atol=1e-4), method


def test_honest_statuses():
    operator, _, _ = bilinear_game(100, 3, lam=0.01)
    x0 = torch.zeros(6, dtype=DOUBLE)
    for method in METHODS:
        result = monotone_inclusion(operator, x0, method=method, tol=1e-12, max_oracle_calls=5000)
        assert not result.success and result.status == Status.MAX_ITER
        assert float(result.residual_norm) > 1e-12
    # 0 ∈ F(x) has no solution for a constant F ≠ 0
    constant = FiniteSumOperator(lambda z, idx: torch.ones_like(z), n=10, lipschitz=1.0)
    result = monotone_inclusion(constant, x0, method="halpern", max_oracle_calls=10 ** 4)
    assert not result.success and float(result.residual_norm) == pytest.approx(6 ** 0.5)
    # NaN appearing away from x0
    nan_far = FiniteSumOperator(lambda z, idx: torch.where(z.abs().max() > 0.5, torch.nan, 1.0) * torch.ones_like(z),
                                n=10, lipschitz=1.0)
    result = monotone_inclusion(nan_far, x0, method="extragradient", max_oracle_calls=10 ** 4)
    assert not result.success and result.status == Status.NONFINITE


def test_bad_input():
    operator, _, _ = bilinear_game(10, 2, lam=0.1)
    x0 = torch.zeros(4, dtype=DOUBLE)
    with pytest.raises(TypeError, match="operator"):
        monotone_inclusion(lambda z: z, x0)
    with pytest.raises(ValueError, match="method"):
        monotone_inclusion(operator, x0, method="sgda")
    with pytest.raises(ValueError, match="options"):
        monotone_inclusion(operator, x0, method="extragradient", options={"restart": True})
    with pytest.raises(ValueError, match="components"):
        monotone_inclusion(operator, torch.zeros(3, dtype=DOUBLE))
    with pytest.raises(ValueError, match="x0"):
        monotone_inclusion(operator, torch.full((4,), torch.nan, dtype=DOUBLE))
    with pytest.raises(ValueError, match="lipschitz"):
        FiniteSumOperator(lambda z, i: z, n=3, lipschitz=-1.0)
    with pytest.raises(ValueError, match="snapshot_probability"):
        monotone_inclusion(operator, x0, options={"snapshot_probability": 1.5})
    with pytest.raises(TypeError, match="resolvent"):
        monotone_inclusion(operator, x0, resolvent=3)
