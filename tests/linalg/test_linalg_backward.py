"""Implicit gradients of polar / sqrtm / inv_sqrtm against autograd through float64 SVD / eigh."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linalg_helpers import eigh_function, svd_polar
from torchnewton.linalg import inv_sqrtm, polar, solve_lyapunov, sqrtm

F64 = torch.float64


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4), (2, 3, 7, 5)])
@pytest.mark.parametrize("method", ["polar-express", "newton-schulz"])
def test_polar_gradient_matches_svd(shape, method):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(*shape, dtype=F64, generator=g, requires_grad=True)
    W = torch.randn(*shape, dtype=F64, generator=g)
    (ours,) = torch.autograd.grad((polar(A, method=method) * W).sum(), A)
    (reference,) = torch.autograd.grad((svd_polar(A) * W).sum(), A)
    assert _relative(ours, reference) < 1e-10


def test_polar_gradient_float32_and_rank_deficient_input():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(5, 8, dtype=F64, generator=g)
    W = torch.randn(5, 8, dtype=F64, generator=g)
    A32 = A.float().requires_grad_(True)
    (ours,) = torch.autograd.grad((polar(A32) * W.float()).sum(), A32)
    A64 = A.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad((svd_polar(A64) * W).sum(), A64)
    assert ours.dtype == torch.float32 and _relative(ours.double(), reference) < 1e-4
    singular = (torch.randn(6, 2, dtype=F64, generator=g) @ torch.randn(2, 5, dtype=F64, generator=g))
    singular.requires_grad_(True)
    (grad,) = torch.autograd.grad(polar(singular).sum(), singular)
    assert torch.isfinite(grad).all()


def _spd_from(B: torch.Tensor) -> torch.Tensor:
    n = B.shape[-1]
    return B @ B.mT / n + 1e-2 * torch.eye(n, dtype=B.dtype)


@pytest.mark.parametrize("fn, f", [(sqrtm, torch.sqrt), (inv_sqrtm, torch.rsqrt)], ids=["sqrtm", "inv_sqrtm"])
def test_root_gradients_match_eigh(fn, f):
    g = torch.Generator().manual_seed(2)
    B = torch.randn(2, 12, 12, dtype=F64, generator=g, requires_grad=True)
    W = torch.randn(2, 12, 12, dtype=F64, generator=g)
    (ours,) = torch.autograd.grad((fn(_spd_from(B)) * W).sum(), B)
    (reference,) = torch.autograd.grad((eigh_function(_spd_from(B), f) * W).sum(), B)
    assert _relative(ours, reference) < 1e-9


def test_sqrtm_gradcheck():
    g = torch.Generator().manual_seed(3)
    B = torch.randn(4, 4, dtype=F64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda B: sqrtm(_spd_from(B)), (B,))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 2**16), kappa=st.floats(1.0, 1e6))
def test_property_lyapunov_solution(n, seed, kappa):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=g))
    w = torch.logspace(0, -torch.log10(torch.tensor(kappa)).item(), n, dtype=F64)
    H = (Q * w) @ Q.mT
    C = torch.randn(n, n, dtype=F64, generator=g)
    X = solve_lyapunov(H, C)
    residual = (H @ X + X @ H - C).norm() / (C.norm() + 1e-300)
    assert residual < 1e-9
