"""The lean path of the residual methods (one problem on the CPU, scalars on Python floats) and
their batched path take the same iterates: bitwise where the arithmetic is the same sequence of
IEEE operations, to round-off where the lean path sums on floats (Levenberg–Marquardt's step from
the decomposition read back, the homotopy's norms).
"""
import math

import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.globalize.trust_region import dogleg
from torchnewton.linear import solve_dense
from torchnewton.solvers.residual.least_squares import least_squares
from torchnewton.solvers.residual.root import root

X0 = torch.tensor([-1.2, 1.0], dtype=torch.float64)
OTHER = torch.tensor([2.0, -1.5], dtype=torch.float64)


def _rosenbrock(x):
    return torch.stack([10 * (x[..., 1] - x[..., 0] ** 2), 1 - x[..., 0]], dim=-1)


def _rosenbrock_jacobian(x):
    one = torch.ones_like(x[0])
    return torch.stack([torch.stack([-20 * x[0], 10 * one]), torch.stack([-one, 0 * one])])


def _histories(one, many, key):
    a = torch.tensor([h[key] for h in one.history], dtype=torch.float64)
    return a, torch.stack([h[key][0] for h in many.history[:len(a)]])


@pytest.mark.parametrize("method", ["gauss-newton", "dogleg"])
@pytest.mark.parametrize("analytic", [False, True])
def test_least_squares_lean_histories(method, analytic):
    # Gauss–Newton: the same IEEE operations, bitwise; the dogleg sums ‖J g‖², J p and ‖p‖ on
    # floats (``_dogleg_one``): the iterates agree to round-off
    jac = _rosenbrock_jacobian if analytic else None
    one = least_squares(_rosenbrock, X0, method=method, jac=jac, record_history=True)
    many = least_squares(_rosenbrock, torch.stack([X0, OTHER]), method=method, batch=True, record_history=True)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    assert torch.allclose(one.x, many.x[0], rtol=1e-14, atol=0) if method == "dogleg" else torch.equal(one.x, many.x[0])
    for key in ("cost", "step_norm"):
        a, b = _histories(one, many, key)
        if method == "dogleg":
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-15 * float(a[0])), key
        else:
            assert torch.equal(a, b), key


@pytest.mark.parametrize("case", ["inside", "cauchy", "blend", "nan"])
def test_dogleg_floats_equal_the_batched_legs(case):
    # one problem's dogleg on floats against member 0 of a batch of two, on each of its three legs
    newton = torch.tensor([[3.0, 4.0], [1.0, 1.0]], dtype=torch.float64)
    gradient = torch.tensor([[-1.0, -0.5], [0.2, 0.3]], dtype=torch.float64)
    curvature = torch.tensor([2.0, 1.0], dtype=torch.float64)
    radius = {"inside": 6.0, "cauchy": 0.3, "blend": 2.0, "nan": 2.0}[case]
    if case == "nan":
        newton[0, 1] = float("nan")
    radius = torch.tensor([radius, 1.0], dtype=torch.float64)
    together = dogleg(newton, gradient, curvature, radius)
    alone = dogleg(newton[:1], gradient[:1], curvature[:1], radius[:1])
    assert torch.allclose(alone, together[:1], rtol=1e-15, atol=0, equal_nan=True)
    length = float(alone.norm())
    expected = {"inside": 5.0, "cauchy": 0.3, "blend": 2.0}.get(case)
    assert (math.isnan(length) if expected is None else length == pytest.approx(expected, rel=1e-14))
    if case == "cauchy":  # the steepest-descent direction, scaled to the boundary
        assert torch.allclose(alone / length, -gradient[:1] / gradient[:1].norm(), rtol=1e-15, atol=0)


def test_levenberg_marquardt_lean_round_off_on_a_tall_fit():
    # m = 30 residuals, n = 4 parameters, one badly scaled: the floats' step and model agree to round-off
    t = torch.linspace(0, 3, 30, dtype=torch.float64)
    y = 3.0 * torch.exp(-0.7 * t) + 0.01 * torch.sin(5 * t) + 2.0
    r = lambda p: p[..., :1] * torch.exp(-p[..., 1:2] * t) + 1e-3 * p[..., 2:3] * torch.sin(5 * t) + p[..., 3:4] - y
    x0 = torch.tensor([1.0, 0.1, 1.0, 0.0], dtype=torch.float64)
    other = torch.tensor([5.0, 2.0, 0.0, 1.0], dtype=torch.float64)
    one = least_squares(r, x0, record_history=True)
    many = least_squares(r, torch.stack([x0, other]), batch=True, record_history=True)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    assert torch.allclose(one.x, many.x[0], rtol=1e-10, atol=0)
    a, b = _histories(one, many, "cost")  # (a zero-residual fit: the last costs are rounding noise)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-14 * float(a[0]))
    assert torch.allclose(one.x, torch.tensor([3.0, 0.7, 10.0, 2.0], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("homotopy", ["newton", "fixed-point"])
def test_homotopy_lean_equals_batched(homotopy):
    F = lambda x: torch.stack([x[..., 0] ** 2 + x[..., 1] ** 2 - 4, x[..., 0] - x[..., 1]], dim=-1)
    x0, other = torch.tensor([1.0, 0.5], dtype=torch.float64), torch.tensor([3.0, 1.0], dtype=torch.float64)
    one = root(F, x0, method="homotopy", options={"homotopy": homotopy}, record_history=True)
    many = root(F, torch.stack([x0, other]), method="homotopy", batch=True, options={"homotopy": homotopy},
                record_history=True)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-14)
    # a root x₁ = x₂ = ±√2 (the fixed-point homotopy's curve from x₀ ends at the negative one)
    assert torch.allclose(one.x.abs(), torch.full((2,), 2 ** 0.5, dtype=torch.float64), atol=1e-10)
    for key in ("lam", "step_norm"):
        a, b = _histories(one, many, key)
        assert torch.allclose(a, b, rtol=1e-12, atol=0), key


def test_homotopy_lean_turning_point_and_failure_statuses():
    # x³ − 3x + 18 from x₀ = 2 passes a turning point of λ (F' = 0 at x = 1) on its way to −3;
    # x² + 1 has no real root: its curve is lost, in both paths with the same status
    f = lambda x: x**3 - 3 * x + 18
    one = root(f, torch.tensor([2.0], dtype=torch.float64), method="homotopy")
    many = root(f, torch.tensor([[2.0], [-1.0]], dtype=torch.float64), method="homotopy", batch=True)
    assert one.success and float(one.x) == pytest.approx(-3.0, abs=1e-12) and one.nit == int(many.nit[0])
    g = lambda x: x**2 + 1
    one = root(g, torch.tensor([1.0], dtype=torch.float64), method="homotopy", max_iter=60)
    many = root(g, torch.tensor([[1.0], [2.0]], dtype=torch.float64), method="homotopy", batch=True, max_iter=60)
    assert not one.success and one.status == Status(int(many.status[0])) and one.nit == int(many.nit[0])


def test_solve_dense_batch_of_one_equals_batch_member():
    torch.manual_seed(3)
    A = torch.randn(2, 4, 4, dtype=torch.float64)
    A[1, :, 2] = 0  # singular: regularized, SINGULAR
    b = torch.randn(2, 4, dtype=torch.float64)
    together = solve_dense(A, b)
    for i in range(2):
        alone = solve_dense(A[i:i + 1], b[i:i + 1])
        assert torch.equal(alone.x, together.x[i:i + 1]) and torch.equal(alone.status, together.status[i:i + 1])
        assert torch.allclose(alone.residual_norm, together.residual_norm[i:i + 1])
    assert together.status.tolist() == [int(Status.SUCCESS), int(Status.SINGULAR)]
    assert torch.allclose(together.residual_norm, (b - torch.einsum("bij,bj->bi", A, together.x)).norm(dim=-1))


@pytest.mark.parametrize("radius", [100.0, 0.5, 0.01])
@pytest.mark.parametrize("zero_pivot", [False, True])
def test_hybrid_dogleg_floats_equal_the_batched_step(radius, zero_pivot):
    # MINPACK's scaled dogleg of one problem on floats (back substitution, zero pivot substituted)
    # against member 0 of a batch: the step, ‖D p‖ and the model norm ‖QᵀF + R p‖ to round-off
    from torchnewton.solvers.residual.hybrid import scaled_dogleg, scaled_dogleg_floats
    torch.manual_seed(0)
    R = torch.randn(2, 3, 3, dtype=torch.float64).triu()
    if zero_pivot:
        R[0, 1, 1] = 0.0
    qtf, diag = torch.randn(2, 3, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64) + 0.5
    together = scaled_dogleg(R, qtf, diag, torch.tensor([radius, 1.0], dtype=torch.float64))
    p, p_norm, model_norm, pivots = scaled_dogleg_floats(R[0].tolist(), qtf[0].tolist(), diag[0].tolist(), radius,
                                                         torch.finfo(R.dtype).eps, torch.finfo(R.dtype).tiny)
    p = torch.tensor([p], dtype=torch.float64)
    assert torch.allclose(p, together[:1], rtol=1e-12, atol=0)
    assert p_norm == pytest.approx(float((diag[0] * p[0]).norm()), rel=1e-14)
    assert p_norm <= radius * (1 + 1e-12)
    assert model_norm == pytest.approx(float((qtf[0] + R[0] @ p[0]).norm()), rel=1e-12)
    assert pivots == pytest.approx(R[0].diagonal().abs().tolist(), rel=0, abs=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("m, n", [(9, 3), (6, 2), (37, 7), (250, 9), (3, 5)])
def test_scaled_jacobian_of_one_equals_the_batched_decomposition(dtype, m, n):
    # one problem's decomposition on the host arrays against ScaledJacobian.of and its read-back:
    # the same SVD and c = UᵀF, so the same bits, and a rank-deficient J (its last column a
    # multiple of the first; m < n too) keeps its significance mask
    from torchnewton.globalize.damping import ScaledJacobian
    torch.manual_seed(2)
    J = torch.randn(1, m, n, dtype=dtype) * 10.0 ** (4 * torch.rand(1, 1, n, dtype=dtype) - 2)
    J[0, :, -1] = 2 * J[0, :, 0]
    F = torch.randn(1, m, dtype=dtype)
    scale = J.norm(dim=-2)
    decomposition, spectrum = ScaledJacobian.of_one(J, F, scale.tolist()[0])
    reference = ScaledJacobian.of(J, F, scale)
    for name in ("singular", "vectors", "coefficients", "scale", "significant"):
        assert torch.equal(getattr(decomposition, name), getattr(reference, name)), name
    floats = reference.spectrum()
    assert spectrum.singular == floats.singular and spectrum.coefficients == floats.coefficients
    assert spectrum.vectors == floats.vectors and spectrum.scale == floats.scale
    assert spectrum.significant == floats.significant and not spectrum.full_rank
    assert sum(spectrum.significant) == min(m, n - 1)


def test_levenberg_marquardt_lean_float32_round_off():
    # float32: the trial point x + p is formed on the arrays in x's dtype, as the batch's x + p
    t = torch.linspace(0, 2, 12, dtype=torch.float32)
    y = 2.0 * torch.exp(-1.3 * t) + 0.5
    r = lambda p: p[..., :1] * torch.exp(-p[..., 1:2] * t) + p[..., 2:3] - y
    x0, other = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([3.0, 0.5, 1.0])
    one = least_squares(r, x0, ftol=1e-6, xtol=1e-6, gtol=1e-6)
    many = least_squares(r, torch.stack([x0, other]), batch=True, ftol=1e-6, xtol=1e-6, gtol=1e-6)
    assert one.x.dtype == torch.float32 and one.status == Status(int(many.status[0])) == Status.SUCCESS
    assert torch.allclose(one.x, many.x[0], rtol=1e-5, atol=0)
    assert torch.allclose(one.x, torch.tensor([2.0, 1.3, 0.5]), atol=1e-3)


def test_homotopy_lean_with_jacobian_equals_batched():
    # the lean corrector (one LU per correction, λ as a column, the tangent's sign on floats)
    # takes the batched path's iterates on Rosenbrock's system with its analytic Jacobian
    def jac(x):
        one, zero = torch.ones_like(x[..., 0]), torch.zeros_like(x[..., 0])
        return torch.stack([torch.stack([-20 * x[..., 0], 10 * one], -1), torch.stack([-one, zero], -1)], -2)

    one = root(_rosenbrock, X0, method="homotopy", jac=jac, record_history=True)
    many = root(_rosenbrock, torch.stack([X0, OTHER]), method="homotopy", jac=jac, batch=True, record_history=True)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    assert torch.equal(one.x, many.x[0]) and torch.allclose(one.x, torch.ones(2, dtype=torch.float64), atol=1e-12)
    for key in ("lam", "step_norm"):
        a, b = _histories(one, many, key)
        assert torch.allclose(a, b, rtol=1e-12, atol=0), key


def test_homotopy_tangent_of_one_equals_the_batched_tangent():
    from torchnewton.solvers.residual.homotopy_maps import tangent

    generator = torch.Generator().manual_seed(0)
    A = torch.randn(4, 3, 4, generator=generator, dtype=torch.float64)
    previous = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    for reference in (None, previous):
        many = tangent(A, previous=reference)
        for i in range(4):
            one = tangent(A[i:i + 1], previous=None if reference is None else reference[i:i + 1])
            assert torch.equal(one, many[i:i + 1])
        # unit null vectors of A, oriented along the reference (or towards increasing λ)
        assert torch.allclose((A @ many.unsqueeze(-1)).squeeze(-1), torch.zeros(4, 3, dtype=torch.float64), atol=1e-12)
        side = (many * reference).sum(-1) if reference is not None else many[:, -1]
        assert bool((side > 0).all()) and torch.allclose(many.norm(dim=-1), torch.ones(4, dtype=torch.float64))
