"""root(method="homotopy"): pseudo-arclength continuation of the Newton and fixed-point homotopies."""
import numpy as np
import pytest
import scipy.optimize
import torch

import torchnewton as tn
from torchnewton.bench.problems.mgh import freudenstein_roth, helical_valley
from torchnewton.core.status import Status

f64 = dict(dtype=torch.float64)


def lambdas(result):
    return [h["lam"] for h in result.history]


def is_monotone(values):
    return all(b >= a for a, b in zip(values, values[1:]))


def test_freudenstein_roth_from_its_standard_start_where_newton_and_trust_regions_stop():
    x0 = torch.tensor([0.5, -2.0], **f64)
    for method in ("newton", "dogleg", "levenberg-marquardt"):
        # they all end at the local minimizer (11.41, −0.8968) of ½‖F‖², where F ≠ 0
        assert not tn.root(freudenstein_roth, x0, method=method, max_iter=200).success, method
    result = tn.root(freudenstein_roth, x0, method="homotopy", tol=1e-10, max_iter=200, record_history=True)
    assert result.success and result.status == Status.SUCCESS
    assert torch.allclose(result.x, torch.tensor([5.0, 4.0], **f64), atol=1e-9)
    assert freudenstein_roth(result.x).abs().max() <= 1e-10
    path = lambdas(result)
    # the curve goes up to λ ≈ 0.6, turns back below 0, and turns again to reach λ = 1
    assert path[-1] == 1.0 and not is_monotone(path) and min(path) < 0 < max(path[:10])


def test_cubic_with_two_turning_points():
    # F(x) = x³ − 3x + 18 = (x + 3)(x² − 3x + 6): one real root; from x = 2 the Newton homotopy
    # x³ − 3x + 18 = 20(1 − λ) turns at x = 1 (λ = 0.2) and at x = −1 (λ = 0)
    fun = lambda x: x**3 - 3 * x + 18
    x0 = torch.tensor([2.0], **f64)
    assert not tn.root(fun, x0, method="levenberg-marquardt").success  # stalls at x = 1, where F' = 0
    result = tn.root(fun, x0, method="homotopy", record_history=True)
    assert result.success and torch.allclose(result.x, torch.tensor([-3.0], **f64), atol=1e-12)
    path = lambdas(result)
    assert not is_monotone(path) and max(path[:-1]) > 0.15 and path[-1] == 1.0


@pytest.mark.parametrize("homotopy", ["newton", "fixed-point"])
def test_agrees_with_known_roots_and_with_scipy(homotopy):
    options = {"homotopy": homotopy}
    result = tn.root(helical_valley, torch.tensor([-1.0, 0.0, 0.0], **f64), method="homotopy", tol=1e-10,
                     options=options)
    assert result.success and torch.allclose(result.x, torch.tensor([1.0, 0.0, 0.0], **f64), atol=1e-9)

    def broyden_tridiagonal(x):
        padded = torch.nn.functional.pad(x, (1, 1))
        return (3 - 2 * x) * x - padded[:-2] - 2 * padded[2:] + 1

    x0 = -torch.ones(10, **f64)
    result = tn.root(broyden_tridiagonal, x0, method="homotopy", tol=1e-12, options=options)
    reference = scipy.optimize.root(lambda x: broyden_tridiagonal(torch.from_numpy(x)).numpy(), x0.numpy(),
                                    method="hybr", options={"xtol": 1e-14})
    assert result.success and reference.success
    np.testing.assert_allclose(result.x.numpy(), reference.x, atol=1e-10)
    assert broyden_tridiagonal(result.x).abs().max() <= 1e-12


@pytest.mark.parametrize("homotopy", ["newton", "fixed-point"])
def test_no_real_root_is_never_success(homotopy):
    result = tn.root(lambda x: x**2 + 1, torch.tensor([1.0], **f64), method="homotopy", max_iter=80,
                     options={"homotopy": homotopy}, record_history=True)
    assert not result.success
    assert result.status in (Status.STALLED, Status.MAX_ITER)
    assert torch.isfinite(result.x).all()
    if homotopy == "newton":  # x² = 1 − 2λ: the curve turns at λ = ½ and is lost towards λ → −∞
        assert result.status == Status.STALLED and max(lambdas(result)) < 0.51 and lambdas(result)[-1] < -1


def test_batched_members_agree_with_single_solves():
    c = torch.tensor([[18.0], [-18.0], [1.0], [30.0]], **f64)
    x0 = torch.tensor([[2.0], [-2.0], [0.3], [2.0]], **f64)
    fun = lambda x, c: x**3 - 3 * x + c
    batched = tn.root(fun, x0, args=(c,), method="homotopy", batch=True, tol=1e-11)
    for i in range(4):
        single = tn.root(fun, x0[i], args=(c[i],), method="homotopy", tol=1e-11)
        assert single.success and bool(batched.success[i])
        assert torch.allclose(batched.x[i], single.x, atol=1e-12)
        assert int(batched.nit[i]) == single.nit
        assert fun(single.x, c[i]).abs().max() <= 1e-11
    assert torch.allclose(batched.x[:2].squeeze(-1), torch.tensor([-3.0, 3.0], **f64), atol=1e-11)


def test_batch_mixing_a_solvable_and_an_unsolvable_member():
    fun = lambda x: x**2 + torch.tensor([[-4.0], [1.0]], **f64)
    result = tn.root(fun, torch.tensor([[1.0], [1.0]], **f64), method="homotopy", batch=True, max_iter=200)
    assert result.success.tolist() == [True, False]
    assert torch.allclose(result.x[0], torch.tensor([2.0], **f64))
    assert result.status[1].item() == int(Status.STALLED)


def test_user_jacobian_and_float32():
    fun = lambda x: x**3 - 3 * x + 18
    jac = lambda x: torch.diag(3 * x**2 - 3)
    result = tn.root(fun, torch.tensor([2.0]), method="homotopy", jac=jac, tol=1e-4)
    assert result.success and result.x.dtype == torch.float32
    assert abs(float(result.x) + 3) <= 1e-5 and result.njev >= 1


def test_bad_options_raise():
    fun, x0 = (lambda x: x), torch.ones(2)
    with pytest.raises(ValueError, match="homotopy"):
        tn.root(fun, x0, method="homotopy", options={"homotopy": "convex"})
    with pytest.raises(ValueError, match="initial_step"):
        tn.root(fun, x0, method="homotopy", options={"initial_step": 0.0})
    with pytest.raises(ValueError, match="max_corrector"):
        tn.root(fun, x0, method="homotopy", options={"max_corrector": 0})
    with pytest.raises(ValueError, match="min_lambda"):
        tn.root(fun, x0, method="homotopy", options={"min_lambda": 0.5})


def test_a_closed_curve_is_detected_not_followed_forever():
    # MGH's trigonometric function from 10·x₀: the Newton homotopy curve through (z₀, 0) is a
    # closed loop (λ between about −3.6 and 0.72) that never reaches λ = 1
    from torchnewton.bench.problems.mgh import trigonometric

    x0 = torch.full((10,), 1.0, **f64)
    result = tn.root(trigonometric, x0, method="homotopy", max_iter=400, record_history=True)
    path = lambdas(result)
    assert result.status == Status.STALLED and result.nit < 400
    assert max(path) < 1 and min(path) < -1 and sum(a * b < 0 for a, b in zip(path[1:], path[2:])) >= 2
