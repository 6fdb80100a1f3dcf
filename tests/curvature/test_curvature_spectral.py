"""Eigenvalues, trace, spectral density and inverse products against dense float64 linear algebra."""
import pytest
import torch

from curvature_helpers import F64, classification_batch, dense_gauss_newton, dense_hessian, mlp, relative_error
from torchnewton.core.status import Status
from torchnewton.curvature import (GaussNewtonOperator, HessianOperator, eigenvalues, inverse_hvp,
                                   lanczos_quadrature, spectral_density, trace)


@pytest.fixture(scope="module")
def hessian():
    model = mlp(sizes=(4, 10, 3))
    loss = torch.nn.CrossEntropyLoss()
    batch = classification_batch(n=20, features=4)
    return HessianOperator(model, loss, batch), dense_hessian(model, loss, [batch])


def _spectrum_matrix(eigs, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), dtype=F64, generator=g))
    return (Q * eigs) @ Q.T


@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_network_hessian_eigenvalues_match_eigvalsh(hessian, which):
    H, dense = hessian
    exact = torch.linalg.eigvalsh(dense)
    result = eigenvalues(H, k=5, which=which, krylov_dim=20, generator=torch.Generator().manual_seed(0))
    expected = {"largest": exact.flip(0)[:5], "smallest": exact[:5],
                "magnitude": exact[exact.abs().argsort(descending=True)][:5]}[which]
    assert result.success and bool(result.converged.all())
    assert float((result.eigenvalues - expected).abs().max()) < 1e-10 * float(exact.abs().max())
    # the vectors are eigenvectors: ‖Hy − λy‖ small, as reported
    residuals = (result.eigenvectors @ dense - result.eigenvalues[:, None] * result.eigenvectors).norm(dim=1)
    assert torch.allclose(residuals, result.residual_norms, atol=1e-9 * float(exact.abs().max()))


def test_eigenvalues_of_low_rank_gauss_newton_include_its_zeros():
    model = mlp(sizes=(3, 5, 2))
    loss = torch.nn.CrossEntropyLoss()
    batch = classification_batch(n=3, features=3, classes=2)  # rank ≤ 3 samples × 1 = 3
    G = GaussNewtonOperator(model, loss, batch)
    exact = torch.linalg.eigvalsh(dense_gauss_newton(model, loss, [batch])).flip(0)
    result = eigenvalues(G, k=5, generator=torch.Generator().manual_seed(1))
    assert result.success
    assert float((result.eigenvalues - exact[:5]).abs().max()) < 1e-10 * float(exact[0])


def test_eigenvalues_against_spread_spectrum_with_restarts():
    eigs = torch.cat([torch.tensor([3.0, 2.9, 2.8, 2.7, 2.6], dtype=F64),
                      torch.linspace(-1, 2.5, 295, dtype=F64)])
    A = _spectrum_matrix(eigs)
    result = eigenvalues(A, k=4, krylov_dim=12, generator=torch.Generator().manual_seed(0))
    assert result.success and result.num_products > 3 * 12  # needed several restarts
    assert float((result.eigenvalues - eigs[:4]).abs().max()) < 1e-10 * 3
    budget = eigenvalues(A, k=4, krylov_dim=12, max_products=12, generator=torch.Generator().manual_seed(0))
    assert budget.status == Status.MAX_ITER and not budget.success  # honest when out of budget


def test_exact_trace_and_hutchinson_unbiased(hessian):
    H, dense = hessian
    exact = torch.trace(dense)
    assert abs(float(trace(H, "exact") - exact)) < 1e-12 * float(dense.abs().sum())
    estimates = torch.stack([trace(H, "hutchinson", num_samples=30, generator=torch.Generator().manual_seed(s))
                             for s in range(8)])
    # Rademacher variance: 2(‖H‖_F² − Σ H_ii²) per sample
    std = (2 * (dense.square().sum() - dense.diagonal().square().sum()) / 30).sqrt()
    assert abs(float(estimates.mean() - exact)) < 4 * float(std) / 8**0.5


def test_hutch_plus_plus_beats_hutchinson_on_low_rank_dominated_matrix():
    bulk = 0.01 * torch.rand(190, dtype=F64, generator=torch.Generator().manual_seed(5))
    eigs = torch.cat([torch.logspace(3, 1, 10, dtype=F64), bulk])
    A = _spectrum_matrix(eigs)
    exact = float(eigs.sum())
    errors = {"hutchinson": [], "hutch++": []}
    for seed in range(10):
        for method in errors:
            estimate = trace(A, method, num_samples=30, generator=torch.Generator().manual_seed(seed))
            errors[method].append(abs(float(estimate) - exact) / exact)
    mean_error = {method: sum(e) / len(e) for method, e in errors.items()}
    assert mean_error["hutch++"] < 1e-3  # the 10 large eigenvalues sit in the 10-vector sketch
    assert mean_error["hutch++"] < mean_error["hutchinson"] / 20


def test_spectral_density_integrates_to_one_with_the_trace_as_mean(hessian):
    H, dense = hessian
    n = H.num_parameters
    result = spectral_density(H, num_probes=6, lanczos_steps=30, grid=2000,
                              generator=torch.Generator().manual_seed(0))
    assert abs(float(torch.trapezoid(result.density, result.grid)) - 1) < 1e-6
    assert torch.allclose(result.weights.sum(-1), torch.ones(6, dtype=F64))
    mean = float(torch.trapezoid(result.grid * result.density, result.grid))
    # the quadrature mean of each probe is its Rayleigh quotient: the Hutchinson estimate / n
    hutchinson = trace(H, "hutchinson", num_samples=6, generator=torch.Generator().manual_seed(0))
    assert abs(mean - float(hutchinson) / n) < 1e-6 * float(dense.abs().max())
    # and with many probes the mean approaches tr(H)/n
    many = spectral_density(H, num_probes=200, lanczos_steps=10, generator=torch.Generator().manual_seed(1))
    mean_many = float((many.weights * many.nodes).sum(-1).mean())
    std = (2 * (dense.square().sum() - dense.diagonal().square().sum()) / 200).sqrt() / n
    assert abs(mean_many - float(torch.trace(dense)) / n) < 4 * float(std)


def test_lanczos_quadrature_exact_for_low_degree_polynomials():
    A = _spectrum_matrix(torch.linspace(-2, 3, 60, dtype=F64))
    start = torch.randn(3, 60, dtype=F64, generator=torch.Generator().manual_seed(2))
    q = start / start.norm(dim=-1, keepdim=True)
    nodes, weights = lanczos_quadrature(A, start, steps=6)
    for power in range(12):  # Gauss quadrature with 6 nodes is exact to degree 11
        exact = (q * (torch.linalg.matrix_power(A, power) @ q.T).T).sum(-1)
        assert torch.allclose((weights * nodes**power).sum(-1), exact, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", ["cg", "minres"])
def test_inverse_hvp_residual(method):
    model = mlp(sizes=(3, 5, 3))
    loss = torch.nn.CrossEntropyLoss()
    batch = classification_batch(n=10)
    G = GaussNewtonOperator(model, loss, batch)
    dense = dense_gauss_newton(model, loss, [batch]) + 1e-2 * torch.eye(G.num_parameters, dtype=F64)
    v = [torch.randn_like(p) for p in model.parameters()]
    result = inverse_hvp(G, v, damping=1e-2, method=method, rtol=1e-10, max_iter=500)
    assert result.success
    x = G.flatten(result.x)
    b = G.flatten(v)
    assert float((dense @ x - b).norm()) < 1e-9 * float(b.norm())
    assert relative_error(x, torch.linalg.solve(dense, b)) < 1e-7
    assert float(result.residual_norm[0]) < 1e-9 * float(b.norm())


def test_inverse_hvp_indefinite_hessian_needs_minres(hessian):
    H, dense = hessian
    b = torch.randn(2, H.num_parameters, dtype=F64, generator=torch.Generator().manual_seed(0))
    shifted = torch.linalg.eigvalsh(dense) + 0.05
    # still indefinite, but away from singular (a softmax Hessian has an exact null space)
    assert float(shifted[0]) < 0 and float(shifted.abs().min()) > 1e-2
    result = inverse_hvp(H, b, damping=0.05, method="minres", rtol=1e-11, max_iter=2000)
    assert result.success
    system = dense + 0.05 * torch.eye(H.num_parameters, dtype=F64)
    assert float((result.x @ system - b).norm()) < 1e-9 * float(b.norm())
    with_cg = inverse_hvp(H, b, damping=0.05, method="cg", max_iter=2000)
    assert not with_cg.success and bool((with_cg.status == int(Status.NEGATIVE_CURVATURE)).any())
