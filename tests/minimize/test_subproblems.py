"""The globalization kernels: exact trust-region and cubic subproblems, strong-Wolfe search."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchnewton.globalize.cubic import cubic_model_decrease, cubic_step
from torchnewton.globalize.hessian_modification import shifted_cholesky
from torchnewton.globalize.secular import EigenHessian
from torchnewton.globalize.trust_region_exact import exact_trust_region_step
from torchnewton.globalize.wolfe import strong_wolfe

F64 = torch.float64


def _random_problem(seed: int, n: int, batch: int = 4):
    gen = torch.Generator().manual_seed(seed)
    M = torch.randn(batch, n, n, generator=gen, dtype=F64)
    H = 0.5 * (M + M.transpose(-1, -2))
    g = torch.randn(batch, n, generator=gen, dtype=F64)
    return H, g, gen


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 8))
def test_trust_region_step_is_global_minimizer(seed, n):
    H, g, gen = _random_problem(seed, n)
    radius = torch.rand(4, generator=gen, dtype=F64) * 2 + 0.1
    s = exact_trust_region_step(EigenHessian.of(H), g, radius)
    assert (s.norm(dim=-1) <= radius * (1 + 1e-8)).all()
    model = lambda p: (g.unsqueeze(1) * p).sum(-1) + 0.5 * torch.einsum("bki,bij,bkj->bk", p, H, p)
    samples = torch.randn(4, 2000, n, generator=gen, dtype=F64)
    samples = samples / samples.norm(dim=-1, keepdim=True) * radius.view(-1, 1, 1) * torch.rand(4, 2000, 1, generator=gen, dtype=F64) ** (1 / n)
    assert (model(s.unsqueeze(1))[:, 0] <= model(samples).min(-1).values + 1e-9).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 8))
def test_cubic_step_satisfies_global_optimality(seed, n):
    H, g, gen = _random_problem(seed, n)
    sigma = torch.rand(4, generator=gen, dtype=F64) * 3 + 0.05
    eig = EigenHessian.of(H)
    s = cubic_step(eig, g, sigma)
    lam = sigma * s.norm(dim=-1)
    eye = torch.eye(n, dtype=F64)
    # (H + σ‖s‖I)s = −g with H + σ‖s‖I ⪰ 0 characterizes the global minimizer
    residual = torch.einsum("bij,bj->bi", H + lam.view(-1, 1, 1) * eye, s) + g
    assert residual.norm(dim=-1).max() <= 1e-7 * (1 + g.norm(dim=-1).max())
    assert (torch.linalg.eigvalsh(H).min(-1).values + lam >= -1e-7).all()
    assert (cubic_model_decrease(eig, g, sigma, s) >= 0).all()


def test_hard_case_trust_region():
    H = torch.diag(torch.tensor([-2.0, 1.0, 3.0], dtype=F64)).unsqueeze(0)
    g = torch.tensor([[0.0, 1.0, 1.0]], dtype=F64)
    s = exact_trust_region_step(EigenHessian.of(H), g, torch.tensor([2.0], dtype=F64))
    assert abs(float(s.norm()) - 2.0) < 1e-10
    # λ = 2: the components off e₁ are −gᵢ/(hᵢ + 2); the rest of the length lies along e₁
    assert torch.allclose(s[0, 1:], torch.tensor([-1 / 3, -1 / 5], dtype=F64))


def test_interior_trust_region_step_is_newton_step():
    H = torch.tensor([[[4.0, 1.0], [1.0, 3.0]]], dtype=F64)
    g = torch.tensor([[1.0, 2.0]], dtype=F64)
    s = exact_trust_region_step(EigenHessian.of(H), g, torch.tensor([10.0], dtype=F64))
    assert torch.allclose(s, -torch.linalg.solve(H, g), atol=1e-14)


def _badly_scaled_spd(seed: int, n: int = 6):
    """H = D C D with C well conditioned and D spanning 1e-3..1e4.5: κ(H) ≈ 1e15, every eigenvalue
    below ε‖H‖ is rounding noise in a computed eigendecomposition, yet H⁻¹g = D⁻¹C⁻¹D⁻¹g exactly."""
    gen = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=gen, dtype=F64)
    C = M @ M.T / n + torch.eye(n, dtype=F64)
    d = torch.logspace(-3, 4.5, n, dtype=F64)
    H = (d[:, None] * C * d[None, :]).unsqueeze(0)
    g = torch.randn(1, n, generator=gen, dtype=F64)
    newton = -(torch.linalg.solve(C, (g / d).T).T / d)
    return H, g, newton


def test_ill_conditioned_interior_step_is_accurate_newton_step():
    for seed in range(5):
        H, g, newton = _badly_scaled_spd(seed)
        radius = 2 * newton.norm(dim=-1)
        s = exact_trust_region_step(EigenHessian.of(H), g, radius)
        # not padded along a "hard-case" null vector, and accurate in the small-curvature directions
        assert torch.allclose(s, newton, rtol=1e-6, atol=1e-9 * float(newton.norm())), seed


def test_ill_conditioned_boundary_step_decreases_the_model():
    for seed in range(5):
        H, g, newton = _badly_scaled_spd(seed)
        radius = 0.1 * newton.norm(dim=-1)
        s = exact_trust_region_step(EigenHessian.of(H), g, radius)
        assert (s.norm(dim=-1) <= radius * (1 + 1e-8)).all()
        decrease = -((g * s).sum(-1) + 0.5 * torch.einsum("bi,bij,bj->b", s, H, s))
        cauchy_length = torch.clamp(g.norm(dim=-1) ** 3 / torch.einsum("bi,bij,bj->b", g, H, g), max=radius * g.norm(dim=-1))
        cauchy = (cauchy_length / g.norm(dim=-1)).unsqueeze(-1) * -g / g.norm(dim=-1, keepdim=True)
        cauchy_decrease = -((g * cauchy).sum(-1) + 0.5 * torch.einsum("bi,bij,bj->b", cauchy, H, cauchy))
        assert (decrease >= cauchy_decrease * (1 - 1e-8)).all(), seed
        # the model value is computed from H itself, not from the noisy eigenpairs
        eig = EigenHessian.of(H)
        assert torch.allclose(eig.quadratic(s), torch.einsum("bi,bij,bj->b", s, H, s), rtol=1e-12)


def test_shifted_cholesky_shifts_only_when_needed():
    H = torch.stack([torch.diag(torch.tensor([2.0, 1.0], dtype=F64)), torch.diag(torch.tensor([2.0, -1.0], dtype=F64))])
    factor, tau = shifted_cholesky(H)
    assert factor.ok.all() and tau[0] == 0 and tau[1] > 1
    assert (torch.linalg.eigvalsh(factor.matrix).min(-1).values > 0).all()


def test_strong_wolfe_conditions_hold_per_member():
    # φ(α) = f(x + αd) for f = ¼x⁴ − x with different scales per member
    scale = torch.tensor([1.0, 10.0, 0.01], dtype=F64)

    def phi(alpha):
        x = alpha
        return scale * (0.25 * x**4 - x), scale * (x**3 - 1), x.unsqueeze(-1)

    phi0, slope = torch.zeros(3, dtype=F64), -scale
    result = strong_wolfe(phi, phi0, slope, torch.zeros(3, 1, dtype=F64), alpha0=torch.tensor([0.1, 5.0, 1.0], dtype=F64))
    a = result.alpha
    value, deriv, _ = phi(a)
    assert result.success.all() and result.curvature.all()
    assert (value <= phi0 + 1e-4 * a * slope).all()
    assert (deriv.abs() <= 0.9 * scale).all()


def test_strong_wolfe_rejects_nan_and_fails_on_ascent():
    def phi(alpha):
        value = (alpha - 1) ** 2
        value = torch.where(alpha > 1.5, torch.full_like(value, float("nan")), value)
        return value, 2 * (alpha - 1), alpha.unsqueeze(-1)

    result = strong_wolfe(phi, torch.ones(1, dtype=F64), -2 * torch.ones(1, dtype=F64), torch.zeros(1, 1, dtype=F64),
                          alpha0=4.0)
    assert result.success.all() and 0 < float(result.alpha) <= 1.5
    up = strong_wolfe(lambda a: (a, torch.ones_like(a), a.unsqueeze(-1)), torch.zeros(1, dtype=F64),
                      -torch.ones(1, dtype=F64), torch.zeros(1, 1, dtype=F64), max_steps=10)
    assert not up.success.any() and float(up.alpha) == 0.0


def test_trust_region_noise_level_negative_curvature_is_not_followed():
    """λ₁ = −1e-7 on ‖H‖ = 1e10 is below eigh's backward error n·ε·‖H‖ ≈ 4e-6 and g ⟂ v₁: no
    curvature and no slope along v₁, so the step stays the Newton step on the range of H
    (−gᵢ/λᵢ there) instead of being completed along v₁ to the boundary. A real negative
    eigenvalue (−1e-3) with the same g is still the hard case: the step reaches the boundary."""
    g = torch.tensor([[0.0, 1.0]], dtype=F64)
    radius = torch.tensor([1.0], dtype=F64)
    noise = exact_trust_region_step(EigenHessian.of(torch.diag(torch.tensor([-1e-7, 1e10], dtype=F64))[None]), g, radius)
    assert abs(float(noise[0, 1]) + 1e-10) <= 1e-14 and float(noise.norm()) <= 1e-9
    real = exact_trust_region_step(EigenHessian.of(torch.diag(torch.tensor([-1e-3, 1e10], dtype=F64))[None]), g, radius)
    assert abs(float(real.norm()) - 1.0) <= 1e-12
