import pytest
import torch
from hypothesis import given, settings, strategies as st

from scan_reference import loop
from torchnewton.recurrence import linear_scan


def random_coefficients(structure, batch, T, d, k, dtype, gen):
    if structure == "diagonal":
        A = torch.rand(*batch, T, d, generator=gen, dtype=dtype) * 1.8 - 0.9
    elif structure == "block":
        A = (torch.rand(*batch, T, d // k, k, k, generator=gen, dtype=dtype) - 0.5) / k
    else:
        A = (torch.rand(*batch, T, d, d, generator=gen, dtype=dtype) - 0.5) / d
    return A


@settings(max_examples=40, deadline=None)
@given(structure=st.sampled_from(["diagonal", "block", "dense"]), T=st.integers(1, 300),
       nb=st.integers(1, 3), k=st.sampled_from([1, 2, 3, 5]), batch=st.sampled_from([(), (2,), (2, 3)]),
       algorithm=st.sampled_from(["auto", "chunked", "associative", "sequential"]),
       chunk=st.one_of(st.none(), st.integers(1, 17)), reverse=st.booleans(), seed=st.integers(0, 2**16))
def test_scan_matches_loop(structure, T, nb, k, batch, algorithm, chunk, reverse, seed):
    gen = torch.Generator().manual_seed(seed)
    d = nb * k
    A = random_coefficients(structure, batch, T, d, k, torch.float64, gen)
    b = torch.randn(*batch, T, d, generator=gen, dtype=torch.float64)
    h0 = torch.randn(*batch, d, generator=gen, dtype=torch.float64)
    h = linear_scan(A, b, h0, structure=structure, algorithm=algorithm, chunk_size=chunk, reverse=reverse)
    expected = loop(A, b, h0, structure, reverse)
    assert h.shape == expected.shape
    assert torch.allclose(h, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 2000), seed=st.integers(0, 2**16))
def test_scan_float32_relative(T, seed):
    gen = torch.Generator().manual_seed(seed)
    A = torch.rand(2, T, 4, generator=gen) * 1.9 - 0.95
    b = torch.randn(2, T, 4, generator=gen)
    h = linear_scan(A, b)
    expected = loop(A.double(), b.double(), torch.zeros(2, 4, dtype=torch.float64), "diagonal", False)
    assert ((h.double() - expected).abs().max() / expected.abs().max()).item() < 1e-5


def test_broadcast_batch_and_default_h0():
    A = torch.full((50, 3), 0.5, dtype=torch.float64)
    b = torch.randn(4, 50, 3, dtype=torch.float64)
    h = linear_scan(A, b)
    assert torch.allclose(h, loop(A.expand(4, 50, 3), b, torch.zeros(4, 3, dtype=torch.float64), "diagonal", False))


@pytest.mark.parametrize("structure", ["diagonal", "block", "dense"])
@pytest.mark.parametrize("algorithm", ["auto", "chunked", "associative"])
def test_scan_gradients(structure, algorithm):
    gen = torch.Generator().manual_seed(0)
    A = random_coefficients(structure, (1,), 11, 4, 2, torch.float64, gen).requires_grad_()
    b = torch.randn(1, 11, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    for reverse in (False, True):
        def f(A, b, h0):
            return linear_scan(A, b, h0, structure=structure, algorithm=algorithm, chunk_size=3, reverse=reverse)
        assert torch.autograd.gradcheck(f, (A, b, h0))
    # the adjoint is itself a scan, so second derivatives work
    assert torch.autograd.gradgradcheck(lambda A, b, h0: linear_scan(A, b, h0, structure=structure, chunk_size=3),
                                        (A, b, h0))


def test_scan_bad_inputs():
    b = torch.randn(10, 4)
    with pytest.raises(ValueError, match="A must have shape"):
        linear_scan(torch.randn(10, 3), b)
    with pytest.raises(ValueError, match="A must have shape"):
        linear_scan(torch.randn(10, 3, 2, 2), b, structure="block")
    with pytest.raises(ValueError, match="h0"):
        linear_scan(torch.randn(10, 4), b, torch.zeros(5))
    with pytest.raises(TypeError, match="A has dtype"):
        linear_scan(torch.randn(10, 4, dtype=torch.float64), b)
    with pytest.raises(ValueError, match="unknown structure"):
        linear_scan(torch.randn(10, 4), b, structure="banded")
    with pytest.raises(ValueError, match="unknown algorithm"):
        linear_scan(torch.randn(10, 4), b, algorithm="fast")
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        linear_scan(torch.randn(10, 4), [1.0])
    with pytest.raises(ValueError, match="do not broadcast"):
        linear_scan(torch.randn(3, 10, 4), torch.randn(2, 10, 4))
