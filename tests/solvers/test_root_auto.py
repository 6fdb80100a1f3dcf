"""root(method="auto") and root(fallback=...): the next method of the chain picks up where one
stalled, counts add up over the tries, Result.method names the method that produced the answer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnewton as tn
from torchnewton.core.status import Status
from torchnewton.solvers.residual.root import AUTO_CHAIN

s2mpj = pytest.importorskip("torchnewton.bench.problems.s2mpj")


@pytest.fixture(scope="module")
def hatfldg():
    """HATFLDG (S2MPJ): Powell's hybrid stalls (MINPACK's progress test, ‖F‖∞ = 0.2, as scipy's
    hybr); Levenberg–Marquardt from there solves it."""
    return s2mpj.load_problem("HATFLDG", "equations")


def test_auto_goes_on_where_dogleg_stalls(hatfldg):
    p = hatfldg
    first = tn.root(p.residual, p.x0.clone(), jac=p.residual_jacobian, method="dogleg", tol=1e-10)
    assert first.status == Status.STALLED and float(first.fun.abs().max()) > 0.1
    auto = tn.root(p.residual, p.x0.clone(), jac=p.residual_jacobian, method="auto", tol=1e-10)
    assert auto.success and auto.method == "levenberg-marquardt"
    assert np.abs(p.residual_np(auto.x.numpy())).max() <= 1e-10
    second = tn.root(p.residual, first.x.clone(), jac=p.residual_jacobian, method="levenberg-marquardt", tol=1e-10)
    assert torch.allclose(auto.x, second.x)
    # every try is counted; the shape check at x0 is counted once
    assert auto.nfev == first.nfev + second.nfev - 1
    assert auto.njev == first.njev + second.njev
    assert auto.nit == first.nit + second.nit


def test_explicit_fallback_chain(hatfldg):
    p = hatfldg
    alone = tn.root(p.residual, p.x0.clone(), jac=p.residual_jacobian, method="dogleg", tol=1e-10)
    chained = tn.root(p.residual, p.x0.clone(), jac=p.residual_jacobian, method="dogleg", tol=1e-10,
                      fallback=["newton-krylov"])
    assert not alone.success and alone.method == "dogleg"
    assert chained.success and chained.method == "newton-krylov"


def test_batched_members_keep_their_own_method_and_status():
    a = torch.tensor([[4.0], [-1.0], [9.0]], dtype=torch.float64)
    result = tn.root(lambda x, a: x**2 - a, torch.ones(3, 1, dtype=torch.float64), args=(a,), batch=True,
                     method="auto", tol=1e-12)
    assert result.success.tolist() == [True, False, True]
    assert result.method == ["dogleg", AUTO_CHAIN[-1], "dogleg"]
    assert torch.allclose(result.x[[0, 2], 0], torch.tensor([2.0, 3.0], dtype=torch.float64))
    # x² + 1 has no real root: every method of the chain ends without success, honestly
    assert result.status[1].item() in (int(Status.STALLED), int(Status.LINESEARCH_FAILED), int(Status.MAX_ITER))
    assert float((result.x[1] ** 2 + 1).abs()) >= 1.0
    alone = tn.root(lambda x: x**2 - 4, torch.ones(1, dtype=torch.float64), method="dogleg", tol=1e-12)
    assert int(result.nit[0]) == alone.nit


def test_no_root_ends_without_success_after_the_whole_chain():
    result = tn.root(lambda x: x**2 + 1, torch.tensor([1.0], dtype=torch.float64), method="auto", max_iter=50)
    assert not result.success and result.method == AUTO_CHAIN[-1]
    assert result.status != Status.SUCCESS


def test_callback_stop_is_not_retried():
    result = tn.root(lambda x: x**2 + 1, torch.tensor([1.0], dtype=torch.float64), method="auto",
                     callback=lambda state: True)
    assert result.status == Status.CALLBACK_STOP and result.method == AUTO_CHAIN[0] and result.nit == 1


def test_plain_methods_name_themselves():
    result = tn.root(lambda x: x**3 - 8, torch.ones(1, dtype=torch.float64), method="broyden")
    assert result.success and result.method == "broyden"


def test_bad_chains_raise_before_any_work():
    calls = []
    fun = lambda x: calls.append(1) or x
    x0 = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="fallback"):
        tn.root(fun, x0, method="auto", fallback=["newton"])
    with pytest.raises(ValueError, match="fallback method"):
        tn.root(fun, x0, fallback=["secant"])
    with pytest.raises(TypeError, match="fallback"):
        tn.root(fun, x0, fallback="dogleg")
    with pytest.raises(ValueError, match="options"):
        tn.root(fun, x0, method="auto", options={"restart": 3})
    assert calls == []
