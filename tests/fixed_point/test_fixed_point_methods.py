"""torchnewton.fixed_point: known fixed points, evaluation counts, Halpern's certificate, batches."""
import math

import pytest
import torch

import torchnewton as tn
from torchnewton.core.status import Status
from torchnewton.solvers.fixed_point.solve import METHODS, fixed_point

DOUBLE = torch.float64


def spread_contraction(n: int, rho: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A = Q diag(λ) Qᵀ with λ spread evenly over [−ρ, ρ], and a random b."""
    generator = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=DOUBLE, generator=generator))
    A = (Q * (rho * torch.linspace(-1, 1, n, dtype=DOUBLE))) @ Q.T
    return A, torch.randn(n, dtype=DOUBLE, generator=generator)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_finds_known_fixed_points(method):
    # Halpern's anchor slows it to O(1/k) even on contractions: it gets a tolerance it can reach
    tol = 1e-3 if method == "halpern" else 1e-9
    # cos has the Dottie number as its only fixed point
    result = fixed_point(torch.cos, torch.ones(3, dtype=DOUBLE), method=method, max_iter=5000, tol=tol)
    assert result.success and result.status == Status.SUCCESS, result
    assert torch.allclose(result.x, torch.full((3,), 0.7390851332151607, dtype=DOUBLE), atol=10 * tol)
    assert float(result.fun.abs().max()) <= tol
    assert torch.allclose(result.fun, torch.cos(result.x) - result.x)
    # an affine contraction: z* = (I − A)⁻¹ b
    A, b = spread_contraction(6, 0.7)
    result = fixed_point(lambda z: A @ z + b, torch.zeros(6, dtype=DOUBLE), method=method, max_iter=20000, tol=tol)
    expected = torch.linalg.solve(torch.eye(6, dtype=DOUBLE) - A, b)
    assert result.success, result
    assert torch.allclose(result.x, expected, atol=10 * tol)


def test_exported_from_the_package():
    # the lead's integration exports these (torchnewton/__init__.py)
    from torchnewton.nn import DEQ

    assert tn.fixed_point is fixed_point and tn.nn.DEQ is DEQ


def test_float32_default_tolerance():
    result = fixed_point(lambda z: 0.5 * z + 1, torch.zeros(4))
    assert result.success and result.x.dtype == torch.float32
    assert torch.allclose(result.x, torch.full((4,), 2.0), atol=1e-5)
    assert float(result.residual_norm) <= torch.finfo(torch.float32).eps ** (2 / 3)


@pytest.mark.parametrize("rho", [0.99, 0.995])
def test_anderson_needs_several_times_fewer_evaluations_than_picard(rho):
    A, b = spread_contraction(60, rho)
    T = lambda z: A @ z + b
    picard = fixed_point(T, torch.zeros(60, dtype=DOUBLE), method="picard", tol=1e-10, max_iter=100_000)
    anderson = fixed_point(T, torch.zeros(60, dtype=DOUBLE), method="anderson", tol=1e-10, max_iter=100_000)
    assert picard.success and anderson.success
    # Picard's count is about what the spectral radius predicts: ρ^k ‖r₀‖ ≈ tol, r₀ = b
    predicted = math.log(1e-10 / float(b.abs().max())) / math.log(rho)
    assert 0.5 * predicted <= picard.nfev <= 1.5 * predicted
    assert anderson.nfev * 3 <= picard.nfev
    expected = torch.linalg.solve(torch.eye(60, dtype=DOUBLE) - A, b)
    assert torch.allclose(anderson.x, expected, atol=1e-7)
    # each Picard step costs one evaluation, plus the one at z0
    assert picard.nfev == picard.nit + 1


def test_anderson_memory_one_step_is_the_secant_method_on_a_scalar_map():
    # type-II Anderson with m = 1 on a scalar map is the secant method on g(z) = T(z) − z
    T = lambda z: torch.cos(z)
    result = fixed_point(T, torch.tensor([1.0], dtype=DOUBLE), method="anderson", options={"memory": 1, "regularization": 0.0},
                         tol=1e-12, record_history=True)
    z0 = 1.0
    z1 = math.cos(z0)
    g = lambda z: math.cos(z) - z
    z2 = z1 - g(z1) * (z1 - z0) / (g(z1) - g(z0))
    assert result.success
    assert result.history[2]["residual_norm"] == pytest.approx(abs(g(z2)), rel=1e-9)


def rotation(theta: float) -> torch.Tensor:
    return torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=DOUBLE)


@pytest.mark.parametrize("theta", [0.3, 1.0, 2.5])
def test_halpern_meets_its_certificate_on_rotations_where_picard_cycles(theta):
    R = rotation(theta)
    z0 = torch.tensor([1.0, 2.0], dtype=DOUBLE)
    distance = float(z0.norm())  # the only fixed point is 0
    picard = fixed_point(lambda z: R @ z, z0, method="picard", max_iter=2000, options={"norm": "2"})
    assert not picard.success and picard.status == Status.STALLED and picard.nit == 200
    assert float(picard.residual_norm) == pytest.approx(float((R @ z0 - z0).norm()), rel=1e-9)
    halpern = fixed_point(lambda z: R @ z, z0, method="halpern", max_iter=3000, tol=1e-12, record_history=True,
                          options={"norm": "2", "radius": distance})
    residuals = torch.tensor([h["residual_norm"] for h in halpern.history], dtype=DOUBLE)
    k = torch.arange(len(residuals), dtype=DOUBLE)
    assert bool((residuals <= 2 * distance / (k + 1) * (1 + 1e-12)).all())
    assert halpern.status == Status.MAX_ITER  # O(1/k): 1e-12 is out of reach in 3,000 steps
    assert float(halpern.certificate) == pytest.approx(2 / 3001)
    assert float(halpern.residual_bound) == pytest.approx(2 * distance / 3001)
    assert float(halpern.residual_norm) <= float(halpern.residual_bound)
    assert float(halpern.x.norm()) <= 3 * 2 * distance / 3001 / abs(2 * math.sin(theta / 2))
    km = fixed_point(lambda z: R @ z, z0, method="krasnoselskii-mann", max_iter=3000, tol=1e-8)
    assert km.success


def test_halpern_certificate_on_a_nonlinear_nonexpansive_map():
    # a rotation followed by the projection onto the box [−1, 1]²: nonexpansive, fixed point 0 only
    R = rotation(2.0)
    T = lambda z: torch.clamp(z @ R.T, -1.0, 1.0)
    z0 = 10 * torch.randn(6, 2, dtype=DOUBLE, generator=torch.Generator().manual_seed(3))
    result = fixed_point(T, z0, method="halpern", batch=True, max_iter=400, tol=1e-14, record_history=True,
                         options={"norm": "2"})
    distance = z0.norm(dim=-1)
    for k, record in enumerate(result.history):
        assert bool((record["residual_norm"] <= 2 * distance / (k + 1) * (1 + 1e-12)).all())
    assert torch.allclose(result.certificate, torch.full((6,), 2 / 401, dtype=DOUBLE))
    assert bool((result.residual_norm <= result.certificate * distance).all())


def test_batch_of_mixed_problems_keeps_per_member_statuses_and_freezes():
    # members: contraction (converges), rotation (Picard cycles), translation (no fixed point), NaN later
    def T(z, kind):
        contraction = 0.5 * z + 1
        rotated = torch.stack([-z[:, 1], z[:, 0]], dim=1)
        translated = z + 1
        nan_after = torch.where(z > 3, torch.full_like(z, float("nan")), z + 1)
        out = torch.where(kind == 0, contraction, torch.where(kind == 1, rotated, torch.where(kind == 2, translated, nan_after)))
        return out

    kind = torch.tensor([[0], [1], [2], [3]])
    z0 = torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], dtype=DOUBLE)
    result = fixed_point(T, z0, args=(kind,), method="picard", batch=True, max_iter=1000)
    assert result.status.tolist() == [int(Status.SUCCESS), int(Status.STALLED), int(Status.STALLED), int(Status.NONFINITE)]
    assert result.success.tolist() == [True, False, False, False]
    assert torch.allclose(result.x[0], torch.full((2,), 2.0, dtype=DOUBLE), atol=1e-9)
    assert int(result.nit[0]) < 50 and int(result.nit[1]) == 200
    assert bool(torch.isfinite(result.x).all())  # the best iterate, not the NaN one
    assert len(result.message) == 4
    # every iteration: the contraction converges, no false success for the translation or the NaN
    # member; the rotation's fixed point 0 is found by the methods that can (Anderson, KM)
    for method in ("anderson", "krasnoselskii-mann", "halpern"):
        tol = 1e-2 if method == "halpern" else 1e-10  # Halpern: O(1/k) even on a contraction
        result = fixed_point(T, z0, args=(kind,), method=method, batch=True, max_iter=1000, tol=tol)
        assert bool(result.success[0]) and not bool(result.success[2:].any()), (method, result.status)
        assert int(result.status[3]) == int(Status.NONFINITE)
        if bool(result.success[1]):
            assert float(result.x[1].abs().max()) <= 10 * tol
    # Halpern (the last): no stall test, so the translation runs to the limit; on the quarter turn
    # z₃ = (z₀ + Rz₀ + R²z₀ + R³z₀)/4 = 0 exactly
    assert int(result.status[2]) == int(Status.MAX_ITER)
    assert bool(result.success[1]) and int(result.nit[1]) == 3


def test_batched_solve_matches_solving_each_member_alone():
    A, b = spread_contraction(5, 0.9)
    scales = torch.tensor([[0.5], [1.0], [2.0]], dtype=DOUBLE)
    T_batch = lambda z, s: torch.tanh(z @ A.T) + s * b
    batch = fixed_point(T_batch, torch.zeros(3, 5, dtype=DOUBLE), args=(scales,), batch=True, tol=1e-11)
    assert bool(batch.success.all())
    for i in range(3):
        single = fixed_point(lambda z: torch.tanh(A @ z) + scales[i] * b, torch.zeros(5, dtype=DOUBLE), tol=1e-11)
        assert torch.allclose(batch.x[i], single.x, atol=1e-9)


def test_newton_and_broyden_are_root_on_the_residual():
    T = lambda z: torch.cos(z) + 0.1 * z**2
    z0 = torch.full((2,), 0.5, dtype=DOUBLE)
    result = fixed_point(T, z0, method="newton")
    reference = tn.root(lambda z: z - T(z), z0, method="newton")
    assert result.success and result.nit == reference.nit
    assert torch.equal(result.x, reference.x)
    assert torch.allclose(result.fun, T(result.x) - result.x)
    assert fixed_point(T, z0, method="broyden").success


def test_callback_stops_and_history_records():
    seen = []
    result = fixed_point(lambda z: 0.9 * z + 1, torch.zeros(2, dtype=DOUBLE), method="picard",
                         callback=lambda state: seen.append(float(state.residual[0])) or len(seen) >= 5)
    assert result.status == Status.CALLBACK_STOP and result.nit == 5 and len(seen) == 5
    assert seen == sorted(seen, reverse=True)


def test_anderson_safeguard_replaces_a_step_into_nan_by_the_plain_one():
    # secant extrapolation from z₀ = 0.01, z₁ = 0.1 on T = √· lands at z₂ ≈ −0.054, where √ is NaN
    z0 = torch.tensor([0.01], dtype=DOUBLE)
    guarded = fixed_point(torch.sqrt, z0, options={"memory": 1})
    assert guarded.success and float(guarded.x) == pytest.approx(1.0, abs=1e-10)
    assert int(guarded.safeguard_rejections) >= 1
    unguarded = fixed_point(torch.sqrt, z0, options={"memory": 1, "safeguard": None})
    assert unguarded.status == Status.NONFINITE and not unguarded.success
    assert unguarded.nit == 2 and float(unguarded.x) == 0.01  # the best finite iterate is returned
