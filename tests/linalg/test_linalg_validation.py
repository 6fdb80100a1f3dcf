"""Bad inputs raise TypeError/ValueError naming the argument; doctests run."""
import doctest
import importlib

import pytest
import torch

from torchnewton import linalg
from torchnewton.linalg import inv_root, inv_sqrtm, orthogonalize, pinv, polar, sign, sqrtm

SQUARE_FUNCTIONS = [sign, sqrtm, inv_sqrtm, lambda A: inv_root(A, 2)]
ALL_FUNCTIONS = [polar, orthogonalize, pinv] + SQUARE_FUNCTIONS


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_integer_and_complex_dtypes_raise_type_error(fn):
    with pytest.raises(TypeError, match="floating dtype"):
        fn(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating dtype"):
        fn(torch.ones(3, 3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        fn([[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_non_finite_and_bad_shapes_raise_value_error(fn):
    A = torch.eye(3)
    A[0, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fn(A)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fn(torch.ones(3))
    with pytest.raises(ValueError, match="non-empty"):
        fn(torch.ones(0, 0))


@pytest.mark.parametrize("fn", SQUARE_FUNCTIONS)
def test_non_square_raises_naming_the_argument(fn):
    with pytest.raises(ValueError, match="A must be square"):
        fn(torch.ones(3, 4))


def test_bad_options():
    A = torch.randn(4, 6)
    with pytest.raises(ValueError, match="method must be one of"):
        polar(A, method="svd")
    with pytest.raises(ValueError, match="does not converge"):
        polar(A, method="quintic", tol=1e-3)
    with pytest.raises(ValueError, match="steps"):
        polar(A, steps=-1)
    with pytest.raises(ValueError, match="lower"):
        polar(A, lower=0.0)
    with pytest.raises(ValueError, match="tol"):
        polar(A, tol=0.0)
    with pytest.raises(TypeError, match="dtype"):
        orthogonalize(A, dtype=torch.int32)
    with pytest.raises(ValueError, match="p must be a positive int"):
        inv_root(torch.eye(3), 0)
    with pytest.raises(ValueError, match="method must be one of"):
        sqrtm(torch.eye(3), method="eig")
    with pytest.raises(TypeError, match="denman-beavers"):
        sqrtm(torch.eye(3, dtype=torch.bfloat16), method="denman-beavers")
    with pytest.raises(ValueError, match="rtol"):
        pinv(A, rtol=2.0)
    with pytest.raises(ValueError, match="G has non-finite"):
        orthogonalize(torch.full((2, 2), float("inf")))


def test_check_finite_can_be_skipped_in_the_optimizer_path():
    out = orthogonalize(torch.full((2, 3), float("nan")), check_finite=False)
    assert out.shape == (2, 3)


MODULES = ["", ".aol", ".backward", ".coefficients", ".gram", ".iteration", ".norms", ".pinv", ".polar",
           ".polynomial", ".roots", ".sign", ".validate"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module("torchnewton.linalg" + name)
    torch.manual_seed(0)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert linalg.__all__
