"""Forward mode and vmap of the linear scan: the tangent scan against the forward-mode derivative of
a plain Python loop, finite differences and reverse mode, in float64 to round-off."""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from scan_reference import loop
from torchnewton.recurrence import linear_scan

F64 = torch.float64
# (structure, k): diagonal; 2x2 blocks (native kernel); 3x3 blocks (torch scan); dense
CASES = [("diagonal", 1), ("block", 2), ("block", 3), ("dense", 1)]


def random_coefficients(structure, batch, T, d, k, dtype, gen):
    """Stable transitions: spectral radius below one."""
    if structure == "diagonal":
        return torch.rand(*batch, T, d, generator=gen, dtype=dtype) * 1.8 - 0.9
    if structure == "block":
        return (torch.rand(*batch, T, d // k, k, k, generator=gen, dtype=dtype) - 0.5) / k
    return (torch.rand(*batch, T, d, d, generator=gen, dtype=dtype) - 0.5) / d




def inputs(structure, k, batch, T, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    d = 2 * k if structure == "block" else 4
    A = random_coefficients(structure, batch, T, d, k, dtype, gen)
    b = torch.randn(*batch, T, d, generator=gen, dtype=dtype)
    h0 = torch.randn(*batch, d, generator=gen, dtype=dtype)
    tangents = tuple(torch.randn(x.shape, generator=gen, dtype=dtype) for x in (A, b, h0))
    return (A, b, h0), tangents


@pytest.mark.parametrize("structure,k", CASES)
@pytest.mark.parametrize("algorithm", ["auto", "chunked", "associative", "sequential"])
@pytest.mark.parametrize("reverse", [False, True])
def test_jvp_equals_the_jvp_of_a_python_loop(structure, k, algorithm, reverse):
    primals, tangents = inputs(structure, k, (2,), 150)
    scan = lambda A, b, h0: linear_scan(A, b, h0, structure=structure, algorithm=algorithm, chunk_size=16,
                                        reverse=reverse)
    value, tangent = torch.func.jvp(scan, primals, tangents)
    expected_value, expected_tangent = torch.func.jvp(lambda A, b, h0: loop(A, b, h0, structure, reverse),
                                                      primals, tangents)
    torch.testing.assert_close(value, expected_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tangent, expected_tangent, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("structure,k", CASES)
def test_dual_tensors_with_some_inputs_constant_match_finite_differences(structure, k):
    """forward_ad with a tangent on one input at a time (the others constant, no tangent),
    under no_grad, broadcast batch dims, against central differences."""
    (A, b, h0), (tA, tb, th0) = inputs(structure, k, (3,), 40, seed=1)
    h0 = h0[0]  # broadcast over the batch
    th0 = th0[0]
    scan = lambda A, b, h0: linear_scan(A, b, h0, structure=structure)
    eps = 1e-6
    for which, tangent in enumerate((tA, tb, th0)):
        args = [A, b, h0]
        with torch.no_grad(), fwAD.dual_level():
            dual = list(args)
            dual[which] = fwAD.make_dual(args[which], tangent)
            jvp = fwAD.unpack_dual(scan(*dual)).tangent
        plus, minus = list(args), list(args)
        plus[which], minus[which] = args[which] + eps * tangent, args[which] - eps * tangent
        difference = (scan(*plus) - scan(*minus)) / (2 * eps)
        assert jvp is not None and jvp.shape == (3, 40, b.shape[-1])
        torch.testing.assert_close(jvp, difference, rtol=1e-7, atol=1e-8)


def test_float32_tangent_is_accurate_relative_to_float64():
    (A, b, h0), tangents = inputs("diagonal", 1, (2,), 1000, seed=2)
    scan = lambda A, b, h0: linear_scan(A, b, h0)
    _, exact = torch.func.jvp(scan, (A, b, h0), tangents)
    _, single = torch.func.jvp(scan, tuple(x.float() for x in (A, b, h0)), tuple(t.float() for t in tangents))
    assert single.dtype == torch.float32
    assert float((single.double() - exact).norm() / exact.norm()) < 1e-5


@pytest.mark.parametrize("structure,k", CASES)
def test_jacfwd_equals_jacrev_and_vmap_equals_a_loop_over_the_batch(structure, k):
    (A, b, h0), _ = inputs(structure, k, (), 30, seed=3)
    scan = lambda A, b, h0: linear_scan(A, b, h0, structure=structure)
    for argnum in (0, 1, 2):
        forward = torch.func.jacfwd(scan, argnums=argnum)(A, b, h0)
        backward = torch.func.jacrev(lambda *xs: loop(*xs, structure, False), argnums=argnum)(A, b, h0)
        torch.testing.assert_close(forward, backward, rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(4)
    bs = torch.randn(5, *b.shape, generator=gen, dtype=F64)
    h0s = torch.randn(5, *h0.shape, generator=gen, dtype=F64)
    mapped = torch.vmap(scan, in_dims=(None, 0, 0))(A, bs, h0s)
    torch.testing.assert_close(mapped, torch.stack([loop(A, bb, hh, structure, False) for bb, hh in zip(bs, h0s)]),
                               rtol=1e-12, atol=1e-12)
    # vmap over a batch dim that is not the first, and the batched states' reverse-mode gradient
    mapped_A = torch.vmap(lambda a: scan(a, b, h0), in_dims=1)(torch.stack([A, 0.5 * A], 1))
    torch.testing.assert_close(mapped_A[1], loop(0.5 * A, b, h0, structure, False), rtol=1e-12, atol=1e-12)


def test_hessian_by_forward_over_reverse_equals_the_loop():
    """torch.func.hessian is jacfwd(jacrev): the tangent of the adjoint scan."""
    (A, b, h0), _ = inputs("diagonal", 1, (), 25, seed=5)
    weights = torch.linspace(-1.0, 1.0, 25 * 4, dtype=F64).reshape(25, 4)
    loss = lambda a: (weights * linear_scan(a, b, h0) ** 2).sum()
    reference = lambda a: (weights * loop(a, b, h0, "diagonal", False) ** 2).sum()
    H = torch.func.hessian(loss)(A)
    torch.testing.assert_close(H, torch.autograd.functional.hessian(reference, A), rtol=1e-11, atol=1e-11)
