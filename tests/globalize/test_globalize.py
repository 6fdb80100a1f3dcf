import torch

from torchnewton.globalize.damping import ScaledJacobian, levenberg_marquardt_parameter, levenberg_marquardt_step
from torchnewton.globalize.linesearch import armijo
from torchnewton.globalize.radius import gain_ratio, update_radius
from torchnewton.globalize.trust_region import dogleg


def test_armijo_per_member_steps_and_nonfinite_rejection():
    # φ_i(α) = (1 − α)² scaled; member 1 returns NaN beyond α = 0.3
    scale = torch.tensor([1.0, 1.0, 5.0], dtype=torch.float64)

    def phi(alpha):
        value = scale * (1 - alpha) ** 2
        value = torch.where((alpha > 0.3) & (torch.arange(3) == 1), torch.nan, value)
        return value, alpha.unsqueeze(-1)

    result = armijo(phi, scale.clone(), -2 * scale)
    assert result.success.all()
    assert result.alpha[0] == 1.0 and result.alpha[2] == 1.0
    assert 0 < result.alpha[1] <= 0.3
    assert torch.isfinite(result.value).all()
    assert torch.equal(result.aux[:, 0], result.alpha)


def test_armijo_fails_honestly_on_ascent():
    result = armijo(lambda a: (1 + a, None), torch.ones(1), -torch.ones(1), max_steps=5)
    assert not result.success.item()
    assert result.alpha.item() == 0.0


def test_dogleg_three_regimes():
    B = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
    g = torch.tensor([1.0, 1.0], dtype=torch.float64)
    newton = -torch.linalg.solve(B, g)
    curvature = g @ B @ g
    radii = torch.tensor([10.0, 0.05, 0.5], dtype=torch.float64)
    steps = dogleg(newton.expand(3, 2), g.expand(3, 2), curvature.expand(3), radii)
    assert torch.allclose(steps[0], newton)
    assert torch.allclose(steps[1], -0.05 * g / g.norm())
    assert torch.isclose(steps[2].norm(), torch.tensor(0.5, dtype=torch.float64))


def test_radius_update_and_gain_ratio():
    radius = torch.ones(3, dtype=torch.float64)
    rho = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    new = update_radius(radius, rho, torch.ones(3, dtype=torch.float64))
    assert new.tolist() == [0.25, 1.0, 2.0]
    assert gain_ratio(torch.tensor([torch.nan]), torch.tensor([1.0])).item() == -float("inf")


def test_scaled_jacobian_steps_match_the_qr_solve():
    torch.manual_seed(0)
    J = torch.randn(3, 8, 3, dtype=torch.float64)
    J[2, :, 2] = J[2, :, 0]  # rank-deficient member: the undamped step is the minimum-norm one
    F = torch.randn(3, 8, dtype=torch.float64)
    D = torch.rand(3, 3, dtype=torch.float64) + 0.5
    decomposition = ScaledJacobian.of(J, F, D)
    for lam in (torch.tensor([0.0, 0.7, 1e-3], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)):
        p, scaled_norm = decomposition.step(lam)
        reference = levenberg_marquardt_step(J, F, lam, D)
        if lam[2] == 0:  # the QR path's pinv gives the minimum-norm step in x, the SVD's is in D x
            reference[2] = D[2].reciprocal() * (torch.linalg.pinv(J[2] / D[2]) @ -F[2])
        assert torch.allclose(p, reference, atol=1e-10)
        assert torch.allclose(scaled_norm, (D * p).norm(dim=-1))


def test_levenberg_marquardt_parameter_meets_the_radius_within_ten_percent():
    torch.manual_seed(1)
    J = torch.randn(4, 10, 4, dtype=torch.float64) * torch.tensor([1.0, 1e-3, 10.0, 1.0], dtype=torch.float64)
    F = torch.randn(4, 10, dtype=torch.float64)
    D = torch.rand(4, 4, dtype=torch.float64) + 0.5
    decomposition = ScaledJacobian.of(J, F, D)
    gauss_newton = decomposition.step(torch.zeros(4, dtype=torch.float64))[1]
    radius = gauss_newton * torch.tensor([2.0, 0.5, 1e-2, 1e-6], dtype=torch.float64)
    lam = levenberg_marquardt_parameter(decomposition, radius, torch.zeros(4, dtype=torch.float64))
    assert lam[0] == 0  # the Gauss–Newton step is inside the region
    assert (lam[1:] > 0).all()
    length = decomposition.step(lam)[1]
    assert ((length[1:] - radius[1:]).abs() <= 0.1 * radius[1:]).all()
    # a warm start from the previous λ lands in the same window
    again = levenberg_marquardt_parameter(decomposition, radius, 10 * lam)
    assert ((decomposition.step(again)[1][1:] - radius[1:]).abs() <= 0.1 * radius[1:]).all()


def test_levenberg_marquardt_step_solves_damped_normal_equations():
    torch.manual_seed(0)
    J = torch.randn(2, 8, 3, dtype=torch.float64)
    F = torch.randn(2, 8, dtype=torch.float64)
    lam = torch.tensor([0.0, 0.7], dtype=torch.float64)
    D = torch.rand(2, 3, dtype=torch.float64) + 0.5
    p = levenberg_marquardt_step(J, F, lam, D)
    normal = J.transpose(-1, -2) @ J + lam.view(-1, 1, 1) * torch.diag_embed(D**2)
    assert torch.allclose(p, torch.linalg.solve(normal, -torch.einsum("bmn,bm->bn", J, F)))
    rank_deficient = torch.zeros(1, 4, 2, dtype=torch.float64)
    rank_deficient[0, :, 0] = 1.0
    step = levenberg_marquardt_step(rank_deficient, torch.ones(1, 4, dtype=torch.float64),
                                    torch.zeros(1, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64))
    assert torch.allclose(step, torch.tensor([[-1.0, 0.0]], dtype=torch.float64))


def _subproblems():
    """(H, g, Δ) of one member each: interior, boundary, indefinite, hard case, singular, tiny radius."""
    gen = torch.Generator().manual_seed(7)
    Q = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))[0]
    spd = Q @ torch.diag(torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0], dtype=torch.float64)) @ Q.T
    indefinite = Q @ torch.diag(torch.tensor([-3.0, -1.0, 2.0, 4.0, 8.0], dtype=torch.float64)) @ Q.T
    singular = Q @ torch.diag(torch.tensor([0.0, 0.0, 2.0, 4.0, 8.0], dtype=torch.float64)) @ Q.T
    g = torch.randn(5, generator=gen, dtype=torch.float64)
    hard_g = Q[:, 2:] @ torch.randn(3, generator=gen, dtype=torch.float64)  # ⟂ the negative eigenvectors
    return [(spd, g, 100.0), (spd, g, 0.1), (indefinite, g, 1.0), (indefinite, hard_g, 10.0),
            (singular, hard_g, 0.3), (spd, g, 1e-9)]


def test_exact_step_of_one_member_equals_the_batch():
    from torchnewton.globalize.secular import EigenHessian
    from torchnewton.globalize.trust_region_exact import exact_trust_region_step
    cases = _subproblems()
    H = torch.stack([c[0] for c in cases])
    G = torch.stack([c[1] for c in cases])
    radius = torch.tensor([c[2] for c in cases], dtype=torch.float64)
    batched = exact_trust_region_step(EigenHessian.of(H), G, radius)
    for i, (Hi, gi, ri) in enumerate(cases):
        one = exact_trust_region_step(EigenHessian.of(Hi.unsqueeze(0)), gi.unsqueeze(0), radius[i:i + 1])
        # λ is found on Python floats for one member (sums in another order): round-off
        assert torch.allclose(one[0], batched[i], rtol=1e-10, atol=1e-14 * float(gi.norm()) / float(Hi.norm()))
        s = batched[i]
        assert float(s.norm()) <= ri * (1 + 1e-12)
        # the global minimizer: no lower model value along the boundary / inside than a dense reference
        lam = torch.linalg.eigvalsh(Hi)
        model = lambda v: float(gi @ v + 0.5 * v @ Hi @ v)
        if lam[0] > 0 and float(torch.linalg.solve(Hi, gi).norm()) <= ri:
            assert torch.allclose(s, -torch.linalg.solve(Hi, gi), rtol=1e-10, atol=1e-14)
        else:
            assert abs(float(s.norm()) - ri) <= 1e-8 * ri
            probes = torch.randn(200, 5, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
            probes = ri * probes / probes.norm(dim=-1, keepdim=True)
            assert model(s) <= min(model(p) for p in probes) + 1e-10 * max(1.0, abs(model(s)))


def test_eigen_hessian_of_one_member_and_products_equal_the_batch():
    from torchnewton.globalize.secular import EigenHessian
    H, g, _ = _subproblems()[2]
    bad = H.clone(); bad[1, 2] = float("inf")
    for matrix in (H, bad):
        one = EigenHessian.of(matrix.unsqueeze(0))
        batched = EigenHessian.of(torch.stack([matrix, torch.eye(5, dtype=torch.float64)]))
        assert torch.equal(one.values[0], batched.values[0]) or torch.isnan(one.values).all()
        assert torch.isnan(one.values).all() == torch.isnan(batched.values[0]).all() == bool(matrix is bad)
    eig = EigenHessian.of(H.unsqueeze(0))
    G = g.unsqueeze(0)
    assert torch.equal(eig.coordinates(G), (G.unsqueeze(-2) @ eig.vectors).squeeze(-2))
    assert torch.equal(eig.expand(G), (eig.vectors @ G.unsqueeze(-1)).squeeze(-1))
    assert torch.equal(eig.quadratic(G), (G * (H @ g)).sum(-1))
