"""sqrtm / inv_sqrtm / inv_root / sign / pinv against float64 eigh and torch.linalg.pinv."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linalg_helpers import eigh_function, relative_error, spd
from torchnewton.linalg import inv_root, inv_sqrtm, pinv, sign, sqrtm

F64 = torch.float64
KAPPAS = [1.0, 1e2, 1e4]


@pytest.mark.parametrize("kappa", KAPPAS)
@pytest.mark.parametrize("method", ["newton-schulz", "denman-beavers"])
def test_square_roots_float64(kappa, method):
    A = spd(40, kappa, batch=(2,))
    assert relative_error(sqrtm(A, method=method), eigh_function(A, torch.sqrt)) < 1e-10
    assert relative_error(inv_sqrtm(A, method=method), eigh_function(A, torch.rsqrt)) < 1e-10


@pytest.mark.parametrize("kappa", KAPPAS)
@pytest.mark.parametrize("p", [1, 2, 3, 4, 8])
def test_inverse_roots_float64(kappa, p):
    A = spd(32, kappa)
    assert relative_error(inv_root(A, p), eigh_function(A, lambda w: w ** (-1.0 / p))) < 1e-10


def test_roots_float32():
    A = spd(32, 1e3)
    assert relative_error(sqrtm(A.float()), eigh_function(A, torch.sqrt)) < 1e-5
    assert relative_error(inv_sqrtm(A.float()), eigh_function(A, torch.rsqrt)) < 1e-4
    assert relative_error(inv_root(A.float(), 4), eigh_function(A, lambda w: w**-0.25)) < 1e-4
    out = sqrtm(A.bfloat16())
    assert out.dtype == torch.bfloat16 and relative_error(out, eigh_function(A, torch.sqrt)) < 0.05


def test_singular_and_zero_inputs_stay_finite():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(8, 3, dtype=F64, generator=g)
    singular = B @ B.mT
    assert relative_error(sqrtm(singular), eigh_function(singular, lambda w: w.clamp_min(0).sqrt())) < 1e-6
    for fn in (inv_sqrtm, lambda A: inv_root(A, 2), lambda A: inv_root(A, 1)):
        for dtype in (F64, torch.float32):
            assert torch.isfinite(fn(singular.to(dtype))).all()
    assert torch.equal(sqrtm(torch.zeros(3, 3)), torch.zeros(3, 3))


@pytest.mark.parametrize("n", [1, 5, 16])
def test_sign_of_symmetric_matrices(n):
    g = torch.Generator().manual_seed(n)
    S = torch.randn(3, n, n, dtype=F64, generator=g)
    S = S + S.mT
    reference = eigh_function(S, torch.sign)
    assert relative_error(sign(S), reference) < 1e-10
    assert relative_error(sign(S, method="polar-express"), reference) < 1e-10


def test_sign_of_non_normal_matrix():
    # real eigenvalues of both signs, non-normal: sign(A) = V diag(sign(l)) V^{-1}
    g = torch.Generator().manual_seed(4)
    V = torch.eye(6, dtype=F64) + 0.3 * torch.randn(6, 6, dtype=F64, generator=g)
    lam = torch.tensor([3.0, 1.0, 0.5, -0.7, -2.0, -4.0], dtype=F64)
    A = V @ torch.diag(lam) @ torch.linalg.inv(V)
    reference = V @ torch.diag(torch.sign(lam)) @ torch.linalg.inv(V)
    assert relative_error(sign(A), reference) < 1e-9


def test_pinv_full_rank_and_rank_deficient():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(2, 20, 12, dtype=F64, generator=g)
    assert relative_error(pinv(A), torch.linalg.pinv(A)) < 1e-11
    assert relative_error(pinv(A.mT), torch.linalg.pinv(A.mT)) < 1e-11
    low = torch.randn(15, 4, dtype=F64, generator=g) @ torch.randn(4, 10, dtype=F64, generator=g)
    assert relative_error(pinv(low), torch.linalg.pinv(low)) < 1e-9
    assert torch.equal(pinv(torch.zeros(3, 4)), torch.zeros(4, 3))
    assert relative_error(pinv(A.float()), torch.linalg.pinv(A)) < 1e-5


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 10), n=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_property_pinv_penrose_conditions(m, n, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, dtype=F64, generator=g)
    s = torch.linalg.svdvals(A)
    if s.min() < 1e-4 * s.max():
        return
    X = pinv(A)
    assert torch.allclose(A @ X @ A, A, atol=1e-9)
    assert torch.allclose(X @ A @ X, X, atol=1e-9 / float(s.min()) ** 2)
    assert torch.allclose((A @ X).mT, A @ X, atol=1e-9)
