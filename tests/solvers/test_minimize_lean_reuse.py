"""The single-solve shortcuts of ``minimize`` keep every number: a trust-ncg step rejected by the
one-problem path reuses the curvature of its unchanged x (one Hessian per distinct iterate, the
same iterates as the batch), a Cholesky factor reads its success flag once and still falls back
where a member failed, one member's CG tolerance formed on floats stops where the batch's does,
and one member's cubic model value summed on floats equals the tensor sums to round-off."""
import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.globalize.cubic import cubic_model_decrease
from torchnewton.globalize.hessian_modification import shifted_cholesky
from torchnewton.globalize.secular import EigenHessian
from torchnewton.linear import CholeskyFactor
from torchnewton.linear.krylov import cg
from torchnewton.solvers.objective.minimize import minimize

F64 = dict(dtype=torch.float64)


def rosenbrock(x):
    return (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2


def rosenbrock_hessian(x):
    a, b = x[..., 0], x[..., 1]
    row0 = torch.stack([1200 * a * a - 400 * b + 2, -400 * a], -1)
    row1 = torch.stack([-400 * a, torch.full_like(a, 200.0)], -1)
    return torch.stack([row0, row1], -2)


def rosenbrock_gradient(x):
    a, b = x[..., 0], x[..., 1]
    return torch.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], -1)


def test_trust_ncg_evaluates_one_hessian_per_distinct_iterate():
    calls = []

    def hess(x):
        calls.append(x.clone())
        return rosenbrock_hessian(x)

    x0 = torch.tensor([-1.2, 1.0], **F64)
    one = minimize(rosenbrock, x0, method="trust-ncg", jac=rosenbrock_gradient, hess=hess, record_history=True)
    rejected = sum(float(h["step_norm"]) == 0.0 for h in one.history)
    assert one.status == Status.SUCCESS and rejected > 0
    # every call at a new point: a rejected step's subproblem reused the Hessian of its x
    assert len(calls) == one.nhev == one.nit - rejected
    assert all(not torch.equal(a, b) for a, b in zip(calls, calls[1:]))
    many = minimize(rosenbrock, torch.stack([x0, x0 + 0.3]), method="trust-ncg", jac=rosenbrock_gradient,
                    hess=rosenbrock_hessian, batch=True)
    assert int(many.nit[0]) == one.nit and torch.equal(many.x[0], one.x) and torch.equal(many.grad[0], one.grad)
    assert torch.allclose(one.x, torch.ones(2, **F64), atol=1e-6)


def test_trust_ncg_on_autodiff_curvature_reuses_the_graph_of_a_rejected_steps_x():
    x0 = torch.tensor([-1.2, 1.0], **F64)
    one = minimize(rosenbrock, x0, method="trust-ncg", record_history=True)
    many = minimize(rosenbrock, torch.stack([x0, x0 + 0.3]), method="trust-ncg", batch=True, record_history=True)
    assert sum(float(h["step_norm"]) == 0.0 for h in one.history) > 0  # some steps were rejected
    assert one.status == Status.SUCCESS and int(many.nit[0]) == one.nit
    assert torch.equal(many.x[0], one.x) and torch.equal(many.grad[0], one.grad)
    radii = torch.tensor([float(h["radius"]) for h in one.history], **F64)
    assert torch.equal(radii, torch.stack([h["radius"][0] for h in many.history[:len(one.history)]]))


def test_cholesky_factor_falls_back_on_every_solve_of_a_failed_member():
    H = torch.tensor([[[4.0, 1.0], [1.0, 3.0]], [[1.0, 2.0], [2.0, 1.0]]], **F64)  # SPD, indefinite
    factor = CholeskyFactor.factor(H)
    b = torch.tensor([[1.0, 2.0], [3.0, -1.0]], **F64)
    first, second = factor.solve(b), factor.solve(b)
    assert factor.ok.tolist() == [True, False] and torch.equal(first, second)
    assert torch.allclose(first[0], torch.linalg.solve(H[0], b[0]), rtol=1e-12)
    # the failed member took the regularized least-squares fallback: finite, near the solution of
    # the (regular) indefinite system
    assert torch.isfinite(first[1]).all() and torch.allclose(first[1], torch.linalg.solve(H[1], b[1]), rtol=1e-6)


def test_shifted_cholesky_of_one_problem_solves_like_the_batch():
    H = torch.tensor([[[1.0, 3.0], [3.0, 2.0]]], **F64)
    g = torch.tensor([[1.0, -2.0]], **F64)
    one, tau = shifted_cholesky(H)
    batch, tau_b = shifted_cholesky(torch.cat([H, torch.eye(2, **F64)[None]]))
    assert bool(one.ok.all()) and float(tau) == float(tau_b[0]) > 0
    assert torch.equal(one.solve(g)[0], batch.solve(torch.cat([g, g]))[0])
    # τ = 0: H itself is factored, and solves as the batch's H + 0·I does
    spd = torch.tensor([[[2.0, 0.5], [0.5, 3.0]]], **F64)
    unshifted, tau0 = shifted_cholesky(spd)
    batch0, _ = shifted_cholesky(torch.cat([spd, spd]))
    assert float(tau0) == 0.0 and unshifted.matrix is spd
    assert torch.equal(unshifted.solve(g)[0], batch0.solve(torch.cat([g, g]))[0])
    assert torch.allclose(unshifted.solve(g)[0], torch.linalg.solve(spd[0], g[0]), rtol=1e-14)


@pytest.mark.parametrize("rtol", [0.5, 1e-3, 0.123456789])
@pytest.mark.parametrize("radius", [None, 0.3])
def test_one_member_cg_stops_where_the_batch_does(rtol, radius):
    gen = torch.Generator().manual_seed(3)
    M = torch.randn(6, 6, generator=gen, **F64)
    A = (M @ M.T + 0.1 * torch.eye(6, **F64))[None]
    b = torch.randn(1, 6, generator=gen, **F64)
    kwargs = {} if radius is None else {"radius": torch.full((1,), radius, **F64)}
    one = cg(A, b, rtol=rtol, **kwargs)
    kwargs2 = {} if radius is None else {"radius": torch.full((2,), radius, **F64)}
    both = cg(torch.cat([A, A]), torch.cat([b, b]), rtol=rtol, **kwargs2)
    assert torch.equal(one.x[0], both.x[0]) and int(one.iterations) == int(both.iterations[0])
    assert int(one.status) == int(both.status[0])
    if radius is None and int(one.status) == int(Status.SUCCESS):
        assert float(one.residual_norm) <= rtol * float(b.norm())
    # a zero right-hand side is solved at once, as by the batch
    zero = cg(A, torch.zeros_like(b), rtol=rtol, **kwargs)
    assert int(zero.status) == int(Status.SUCCESS) and int(zero.iterations) == 0 and not zero.x.any()


@pytest.mark.parametrize("n", [2, 7, 16, 20])
def test_one_member_cubic_model_value_on_floats_equals_the_tensor_sums(n):
    gen = torch.Generator().manual_seed(n)
    M = torch.randn(n, n, generator=gen, **F64)
    eig = EigenHessian.of((M + M.T)[None])
    g, s = torch.randn(1, n, generator=gen, **F64), torch.randn(1, n, generator=gen, **F64)
    sigma = 0.7
    as_float = cubic_model_decrease(eig, g, sigma, s)
    as_tensor = cubic_model_decrease(eig, g, torch.full((1,), sigma, **F64), s)
    H = eig.matrix[0]
    exact = -(g[0] @ s[0] + 0.5 * s[0] @ H @ s[0] + sigma / 3 * s[0].norm() ** 3)
    value = as_float if isinstance(as_float, float) else float(as_float)
    assert isinstance(as_float, float) == (n <= 16)
    assert value == pytest.approx(float(as_tensor), rel=1e-13, abs=1e-13 * float(H.abs().max()))
    assert value == pytest.approx(float(exact), rel=1e-12, abs=1e-12 * float(H.abs().max()))


@pytest.mark.parametrize("method", ["cubic", "trust-exact"])
def test_lean_model_values_keep_larger_problems_solving(method):
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(60, 20, generator=gen, **F64)
    fun = lambda w: torch.nn.functional.softplus(A @ w).sum() + 0.05 * w @ w
    res = minimize(fun, torch.zeros(20, **F64), method=method)
    assert res.success
    assert float(torch.func.grad(fun)(res.x).abs().max()) <= 1e-6 * max(1.0, abs(float(res.fun)))
