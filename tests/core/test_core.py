import pytest
import torch

from torchnewton.core.result import Result
from torchnewton.core.status import Status
from torchnewton.core.validate import check_method, check_options, check_positive, check_tensor


def test_result_prints_readably_and_exposes_extras():
    result = Result(x=torch.ones(2), success=True, status=Status.SUCCESS, message=Status.SUCCESS.message,
                    nit=3, extras={"cost": torch.tensor(0.5)})
    text = repr(result)
    assert "SUCCESS" in text and "cost" in text and "nit: 3" in text
    assert result.cost.item() == 0.5
    with pytest.raises(AttributeError):
        result.multipliers


def test_validation_messages_name_the_argument():
    with pytest.raises(TypeError, match="x0"):
        check_tensor(torch.ones(2, dtype=torch.int32), "x0")
    with pytest.raises(ValueError, match="x0.*dimension"):
        check_tensor(torch.ones(2, 2), "x0", ndim=1)
    with pytest.raises(ValueError, match="x0.*non-finite"):
        check_tensor(torch.tensor([float("inf")]), "x0")
    assert check_method("Newton_CG", ["newton-cg"]) == "newton-cg"
    with pytest.raises(ValueError, match="valid choices: a, b"):
        check_method("c", ["a", "b"])
    with pytest.raises(ValueError, match="unknown options"):
        check_options({"x": 1}, ["y"])
    with pytest.raises(ValueError, match="tol"):
        check_positive(0.0, "tol")
    with pytest.raises(TypeError, match="max_iter"):
        check_positive(1.5, "max_iter", integer=True)
