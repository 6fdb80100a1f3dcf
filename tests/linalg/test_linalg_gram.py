"""orthogonalize(gram=True): the fixed steps evaluated on the Gram matrix match the standard steps."""
import pytest
import torch

from linalg_helpers import FAMILIES, family, orthogonality_error, polar_error
from torchnewton.linalg import POLAR_METHODS, orthogonalize
from torchnewton.linalg.gram import gram_space_steps, use_gram
from torchnewton.linalg.polynomial import odd_polynomial_step

F64 = torch.float64


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", POLAR_METHODS)
def test_float32_gram_errors_match_the_standard_steps(name, method):
    # Measured at 128x512 and 256x1024 (2 seeds, 4 methods, 4 families): the polar and
    # orthogonality errors differ by at most 5e-6 relative, the iterates by at most 4.2e-4
    # (log-spectrum, whose singular values below sqrt(eps) the Gram matrix cannot resolve).
    A = family(name, 128, 512)
    standard = orthogonalize(A.float(), method=method, gram=False)
    gram = orthogonalize(A.float(), method=method, gram=True)
    assert polar_error(gram, A) == pytest.approx(polar_error(standard, A), rel=1e-4)
    assert orthogonality_error(gram) == pytest.approx(orthogonality_error(standard), rel=1e-4)
    assert float((gram - standard).norm() / standard.norm()) < 2e-3


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", POLAR_METHODS)
def test_float64_gram_equals_the_standard_steps(name, method):
    A = family(name, 48, 160)
    standard = orthogonalize(A, method=method, dtype=F64, gram=False)
    gram = orthogonalize(A, method=method, dtype=F64, gram=True)
    assert torch.allclose(gram, standard, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", [(40, 12), (3, 6, 20), (2, 2, 25, 7)])
def test_gram_handles_batches_and_tall_inputs(shape):
    A = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    gram = orthogonalize(A, gram=True, dtype=F64)
    assert gram.shape == A.shape
    assert torch.allclose(gram, orthogonalize(A, gram=False, dtype=F64), rtol=0, atol=1e-10)
    assert torch.equal(orthogonalize(torch.zeros(*shape), gram=True), torch.zeros(*shape))


def test_automatic_choice():
    wide, square = family("gaussian", 32, 64).float(), family("gaussian", 48, 64).float()
    assert use_gram(wide[None], 5) and not use_gram(square[None], 5) and not use_gram(wide[None].bfloat16(), 5)
    assert not use_gram(wide[None], 7)
    assert torch.equal(orthogonalize(wide), orthogonalize(wide, gram=True))
    assert torch.equal(orthogonalize(wide.mT), orthogonalize(wide.mT, gram=True))
    assert torch.equal(orthogonalize(square), orthogonalize(square, gram=False))


def test_gram_needs_float32_or_float64():
    with pytest.raises(ValueError, match="gram=True needs dtype"):
        orthogonalize(torch.randn(4, 16), dtype=torch.bfloat16, gram=True)


@pytest.mark.parametrize("coeffs", [[(1.5, -0.5)] * 3, [(3.4445, -4.7750, 2.0315)] * 2,
                                    [(2.0, -1.0, 0.5, -0.1), (1.875, -1.25, 0.375)]])
def test_gram_space_steps_equal_the_stepwise_kernel(coeffs):
    X = torch.randn(2, 5, 11, dtype=F64, generator=torch.Generator().manual_seed(4)) / 8
    Y = X
    for c in coeffs:
        Y = odd_polynomial_step(Y, Y @ Y.mT, c)
    assert torch.allclose(gram_space_steps(X, X @ X.mT, tuple(coeffs)), Y, rtol=0, atol=1e-12)


def test_automatic_choice_stays_finite_past_the_fixed_cost_budget():
    """More steps than the Gram evaluation tolerates in float32 fall back to the standard one."""
    A = family("log-spectrum", 64, 256).float()
    for steps in (6, 10, 12):
        singular_values = torch.linalg.svdvals(orthogonalize(A, steps=steps).double())
        assert singular_values.max() < 1.01
