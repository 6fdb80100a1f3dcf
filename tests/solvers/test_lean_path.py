"""The lean path (one problem on the CPU) and the batched path take the same iterates.

A single solve runs the loop and the line searches on Python floats; member 0 of a batch of two
runs the masked tensor code. In float64 the arithmetic is the same, so the histories must agree
bitwise; in float32 the scalar path rounds in double, so they agree to round-off. Statuses too.
"""
import math

import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.globalize.linesearch import armijo
from torchnewton.globalize.wolfe import strong_wolfe
from torchnewton.solvers.objective.minimize import METHODS, minimize
from torchnewton.solvers.residual.least_squares import least_squares
from torchnewton.solvers.residual.root import root

rosenbrock = lambda x: (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2
X0 = torch.tensor([-1.2, 1.0], dtype=torch.float64)
OTHER = torch.tensor([2.0, -1.5], dtype=torch.float64)


def _pair(solve, x0, other, **kwargs):
    one = solve(x0, record_history=True, **kwargs)
    many = solve(torch.stack([x0, other]), batch=True, record_history=True, **kwargs)
    return one, many


# the exact trust region sums ‖s(λ)‖² of its secular equation on Python floats for one problem:
# the same formulas, rounded differently (1/√ against torch's rsqrt), so its iterates agree to round-off
ROUND_OFF = ("trust-exact",)


@pytest.mark.parametrize("method", METHODS)
def test_minimize_lean_equals_batched_bitwise(method):
    one, many = _pair(lambda x, **k: minimize(rosenbrock, x, method=method, **k), X0, OTHER)
    assert one.status == Status(int(many.status[0])) and one.nit == int(many.nit[0])
    fa = torch.tensor([h["fun"] for h in one.history], dtype=torch.float64)
    fb = torch.stack([h["fun"][0] for h in many.history[:len(fa)]])
    if method in ROUND_OFF:
        assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-12)
        assert torch.allclose(fa, fb, rtol=1e-10, atol=1e-20)
    else:
        assert torch.equal(one.x, many.x[0])
        assert torch.equal(fa, fb)
        if "radius" in one.history[0]:
            assert [h["radius"] for h in one.history] == [float(h["radius"][0]) for h in many.history[:len(fa)]]


@pytest.mark.parametrize("method", ["trust-exact", "cubic", "trust-ncg"])
def test_trust_region_statuses_unchanged(method):
    # NaN beyond x₀ > 0.5 (steps into it are rejected, the radius shrinks), and a small budget
    f = lambda x: torch.where(x[..., 0] > 0.5, torch.full_like(x[..., 0], float("nan")), rosenbrock(x))
    one, many = _pair(lambda x, **k: minimize(f, x, method=method, **k), X0, OTHER)
    assert one.status == Status(int(many.status[0])) and one.nit == int(many.nit[0])
    assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-12)
    one, many = _pair(lambda x, **k: minimize(rosenbrock, x, method=method, max_iter=4, **k), X0, OTHER)
    assert one.status == Status.MAX_ITER == Status(int(many.status[0])) and one.nit == 4


def test_trust_exact_float32_round_off():
    one, many = _pair(lambda x, **k: minimize(rosenbrock, x, method="trust-exact", **k), X0.float(), OTHER.float())
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS
    assert torch.allclose(one.x, many.x[0], atol=1e-4)


@pytest.mark.parametrize("search", ["armijo", "wolfe"])
def test_newton_line_searches_float32_round_off(search):
    x0 = X0.float()
    one, many = _pair(lambda x, **k: minimize(rosenbrock, x, method="newton", options={"line_search": search}, **k),
                      x0, OTHER.float())
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS
    assert torch.allclose(one.x, many.x[0], atol=1e-4)


def test_statuses_unchanged_on_failures():
    # a NaN objective away from the start, and an iteration budget too small
    f = lambda x: torch.where(x[..., 0] > 0.5, torch.full_like(x[..., 0], float("nan")), rosenbrock(x))
    one, many = _pair(lambda x, **k: minimize(f, x, method="bfgs", **k), X0, OTHER)
    assert one.status == Status(int(many.status[0])) and one.nit == int(many.nit[0])
    one, many = _pair(lambda x, **k: minimize(rosenbrock, x, method="bfgs", max_iter=3, **k), X0, OTHER)
    assert one.status == Status.MAX_ITER == Status(int(many.status[0])) and one.nit == 3


@pytest.mark.parametrize("method", ["levenberg-marquardt", "gauss-newton", "dogleg"])
def test_least_squares_lean_equals_batched(method):
    t = torch.linspace(0, 2, 12, dtype=torch.float64)
    y = 2.0 * torch.exp(-1.3 * t) + 0.5
    r = lambda p: p[..., :1] * torch.exp(-p[..., 1:2] * t) + p[..., 2:3] - y
    x0, other = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), torch.tensor([3.0, 0.5, 1.0], dtype=torch.float64)
    one, many = _pair(lambda x, **k: least_squares(r, x, method=method, **k), x0, other)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-12)


def _exponential_fit():
    t = torch.linspace(0, 2, 12, dtype=torch.float64)
    y = 2.0 * torch.exp(-1.3 * t) + 0.5
    r = lambda p: p[..., :1] * torch.exp(-p[..., 1:2] * t) + p[..., 2:3] - y

    def jac(p):
        e = torch.exp(-p[1] * t)
        return torch.stack([e, -p[0] * t * e, torch.ones_like(t)], dim=-1)

    return r, jac


def test_levenberg_marquardt_lean_history_and_analytic_jacobian(monkeypatch):
    r, jac = _exponential_fit()
    x0, other = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), torch.tensor([3.0, 0.5, 1.0], dtype=torch.float64)
    one, many = _pair(lambda x, **k: least_squares(r, x, **k), x0, other)
    fa = torch.tensor([h["cost"] for h in one.history], dtype=torch.float64)
    fb = torch.stack([h["cost"][0] for h in many.history[:len(fa)]])
    assert torch.allclose(fa, fb, rtol=1e-12, atol=1e-30) and one.nit == int(many.nit[0])
    # with jac= the lean path never touches autodiff, and takes the same iterates
    from torchnewton.derivatives import autodiff

    def forbidden(*args, **kwargs):
        raise AssertionError("autodiff called although jac= was given")

    monkeypatch.setattr(autodiff, "jacobian", forbidden)
    monkeypatch.setattr(autodiff, "vjp", forbidden)
    monkeypatch.setattr(autodiff, "jvp", forbidden)
    analytic = least_squares(r, x0, jac=jac)
    assert analytic.status == one.status == Status.SUCCESS and analytic.nit == one.nit
    assert torch.allclose(analytic.x, one.x, rtol=0, atol=1e-10)


def test_levenberg_marquardt_statuses_unchanged():
    r, _ = _exponential_fit()
    x0, other = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), torch.tensor([3.0, 0.5, 1.0], dtype=torch.float64)
    one, many = _pair(lambda x, **k: least_squares(r, x, max_iter=2, **k), x0, other)
    assert one.status == Status.MAX_ITER == Status(int(many.status[0])) and one.nit == 2
    # residuals that turn NaN past p₁ > 1.2: trial steps there are rejected, statuses agree
    bad = lambda p: torch.where(p[..., 1:2] > 1.2, torch.full_like(r(p), float("nan")), r(p))
    one, many = _pair(lambda x, **k: least_squares(bad, x, **k), x0, other)
    assert one.status == Status(int(many.status[0])) and one.nit == int(many.nit[0])
    assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["newton", "broyden", "levenberg-marquardt", "dogleg"])
def test_root_lean_equals_batched(method):
    F = lambda x: torch.stack([x[..., 0] ** 2 + x[..., 1] ** 2 - 4, x[..., 0] - x[..., 1]], dim=-1)
    x0, other = torch.tensor([1.0, 0.5], dtype=torch.float64), torch.tensor([3.0, 1.0], dtype=torch.float64)
    one, many = _pair(lambda x, **k: root(F, x, method=method, **k), x0, other)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-14)


def _phi_pair(g):
    """φ on a batch (tensors) and on one member (floats) of the same 1-D function."""
    def batched(a):
        v, d = g(a)
        return v, d, a.unsqueeze(-1)

    def scalar(a):
        v, d = g(torch.tensor([a], dtype=torch.float64))
        return float(v), float(d), a

    return batched, scalar


@pytest.mark.parametrize("case", range(6))
def test_searches_take_the_same_decisions_on_floats(case):
    gen = torch.Generator().manual_seed(case)
    c = 0.2 + 5 * torch.rand(3, generator=gen, dtype=torch.float64)
    # a quartic with a minimum along a descent direction: φ(α) = c0(α − c1)² + c2(α − c1)⁴
    g = lambda a: (c[0] * (a - c[1]) ** 2 + c[2] * (a - c[1]) ** 4,
                   2 * c[0] * (a - c[1]) + 4 * c[2] * (a - c[1]) ** 3)
    v0, s0 = g(torch.zeros(1, dtype=torch.float64))
    batched, scalar = _phi_pair(g)
    for alpha0 in (1.0, 10.0, 1e-3):
        t = strong_wolfe(batched, v0, s0, torch.zeros(1, 1, dtype=torch.float64), alpha0=alpha0)
        f = strong_wolfe(scalar, float(v0), float(s0), 0.0, alpha0=alpha0)
        assert float(t.alpha) == f.alpha and bool(t.curvature) == f.curvature and t.evaluations == f.evaluations
        ta = armijo(lambda a: (g(a)[0], None), v0, s0, alpha0=alpha0)
        fa = armijo(lambda a: (float(g(torch.tensor([a], dtype=torch.float64))[0]), None), float(v0), float(s0),
                    alpha0=alpha0)
        assert float(ta.alpha) == fa.alpha and bool(ta.success) == fa.success and ta.evaluations == fa.evaluations
        assert math.isfinite(fa.value)
