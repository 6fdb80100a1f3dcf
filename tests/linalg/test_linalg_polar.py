"""polar / orthogonalize: both error measures against a float64 SVD, every method and input family."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linalg_helpers import FAMILIES, family, orthogonality_error, polar_error, svd_polar
from torchnewton.linalg import POLAR_METHODS, orthogonalize, polar
from torchnewton.linalg.polynomial import odd_polynomial_step

F64 = torch.float64


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", ["polar-express", "newton-schulz"])
def test_converged_polar_factor_float64(name, method):
    A = family(name, 48, 96)
    X = polar(A, method=method)
    assert orthogonality_error(X) < 1e-12
    # the log spectrum reaches 1e-6, where the polar factor itself is conditioned like 1e6
    assert polar_error(X, A) < (1e-8 if name == "log-spectrum" else 1e-11)


@pytest.mark.parametrize("name", ["gaussian", "levy"])
def test_converged_polar_factor_float32(name):
    A = family(name, 40, 64)
    X = polar(A.float())
    assert X.dtype == torch.float32
    assert orthogonality_error(X) < 1e-5
    assert polar_error(X, A) < 1e-4


@pytest.mark.parametrize("name", FAMILIES)
def test_polar_express_beats_the_fixed_quintic_at_equal_cost(name):
    # 5 quintic steps each: 15 matrix products for both
    A = family(name, 64, 128).float()
    pe = polar(A, method="polar-express", steps=5)
    quintic = polar(A, method="quintic", steps=5)
    assert polar_error(pe, A) < polar_error(quintic, A)
    assert orthogonality_error(pe) < orthogonality_error(quintic)


def test_fixed_cost_errors_on_gaussian_input():
    # orthogonalize's defaults: 5 quintic-type steps (15 products), 4 after AOL (12), 7 cubic (14)
    A = family("gaussian", 64, 128).float()
    errors = {m: polar_error(orthogonalize(A, method=m), A) for m in POLAR_METHODS}
    assert errors["aol"] < 0.05
    assert errors["polar-express"] < 0.1
    assert errors["quintic"] < 0.25
    assert errors["newton-schulz"] < 0.2
    assert errors["aol"] < errors["polar-express"] < errors["quintic"]


def test_aol_converges_to_the_polar_factor_of_the_rescaled_matrix():
    A = family("gaussian", 32, 64)
    X = polar(A, method="aol", steps=40)
    d = (A @ A.mT).abs().sum(-1).rsqrt()
    assert polar_error(X, d[:, None] * A) < 1e-10
    assert orthogonality_error(X) < 1e-12


@pytest.mark.parametrize("shape", [(7, 7), (9, 4), (4, 9), (2, 3, 6, 5), (3, 5, 8)])
def test_batches_and_orientations(shape):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(*shape, dtype=F64, generator=g)
    X = polar(A)
    assert X.shape == A.shape
    assert torch.allclose(X, svd_polar(A), atol=1e-11)


def test_rank_deficient_and_zero_inputs_give_partial_isometries():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(10, 3, dtype=F64, generator=g) @ torch.randn(3, 8, dtype=F64, generator=g)
    U, _, Vh = torch.linalg.svd(A)
    for method in POLAR_METHODS:
        X = polar(A, method=method)
        assert torch.isfinite(X).all()
    assert torch.allclose(polar(A), U[:, :3] @ Vh[:3], atol=1e-10)
    for method in POLAR_METHODS:
        assert torch.equal(polar(torch.zeros(2, 4, 6), method=method), torch.zeros(2, 4, 6))
        assert torch.equal(orthogonalize(torch.zeros(5, 3), method=method), torch.zeros(5, 3))
    tiny = 1e-30 * family("gaussian", 8, 12).float()
    assert polar_error(polar(tiny), tiny.double()) < 1e-4


def test_orthogonalize_dtype_rules():
    G = family("gaussian", 32, 96).float()
    out = orthogonalize(G)
    assert out.dtype == torch.float32 and out.shape == G.shape
    assert polar_error(out, G) == pytest.approx(polar_error(polar(G, steps=5), G), rel=1e-4)
    low = orthogonalize(G.double(), dtype=torch.bfloat16)
    assert low.dtype == torch.float64
    assert polar_error(low, G) < 0.15
    assert polar_error(orthogonalize(G.bfloat16(), method="aol"), G) < 0.1


def test_bfloat16_polar_express_steps():
    A = family("gaussian", 32, 64)
    X = polar(A.bfloat16(), steps=8)
    assert X.dtype == torch.bfloat16
    assert polar_error(X, A) < 0.05


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 12), n=st.integers(1, 12), seed=st.integers(0, 2**16), scale=st.floats(1e-6, 1e6))
def test_property_converged_polar_matches_svd(m, n, seed, scale):
    g = torch.Generator().manual_seed(seed)
    A = scale * torch.randn(m, n, dtype=F64, generator=g)
    s = torch.linalg.svdvals(A)
    if s.min() < 1e-6 * s.max():  # the polar factor of a nearly singular matrix is ill-posed
        return
    X = polar(A)
    assert orthogonality_error(X) < 1e-12
    assert polar_error(X, A) < 1e-7


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 6), n=st.integers(1, 9), seed=st.integers(0, 2**16),
       coeffs=st.lists(st.floats(-3, 3), min_size=2, max_size=4))
def test_property_odd_polynomial_step_acts_on_singular_values(m, n, seed, coeffs):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(1, m, n, dtype=F64, generator=g) / (m * n) ** 0.5
    Y = odd_polynomial_step(X, X @ X.mT, tuple(coeffs))
    U, s, Vh = torch.linalg.svd(X[0], full_matrices=False)
    p = sum(c * s ** (2 * j + 1) for j, c in enumerate(coeffs))
    assert torch.allclose(Y[0], (U * p) @ Vh, atol=1e-12)
