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
# the same formulas, rounded differently (1/√ against torch's rsqrt), so its iterates agree to round-off;
# L-BFGS runs its two-loop recursion for one small problem in coordinates of (∇f, s, y) (a Gram
# matrix, then Python floats): the same recursion, its inner products summed in another order, and
# Rosenbrock's valley amplifies that round-off to ~1e-9 relative in f before the iterates meet again
ROUND_OFF = {"trust-exact": 1e-10, "l-bfgs": 1e-7}


@pytest.mark.parametrize("method", METHODS)
def test_minimize_lean_equals_batched_bitwise(method):
    one, many = _pair(lambda x, **k: minimize(rosenbrock, x, method=method, **k), X0, OTHER)
    assert one.status == Status(int(many.status[0])) and one.nit == int(many.nit[0])
    fa = torch.tensor([h["fun"] for h in one.history], dtype=torch.float64)
    fb = torch.stack([h["fun"][0] for h in many.history[:len(fa)]])
    if method in ROUND_OFF:
        assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-12)
        assert torch.allclose(fa, fb, rtol=ROUND_OFF[method], atol=1e-20)
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


def _spd_pair(n, dtype=torch.float64, indefinite=False):
    gen = torch.Generator().manual_seed(n)
    Q = torch.linalg.qr(torch.randn(2, n, n, generator=gen, dtype=dtype))[0]
    eig = torch.linspace(0.5, 20.0, n, dtype=dtype).expand(2, n).clone()
    if indefinite:
        eig[:, 0] = -1.0
    A = Q @ torch.diag_embed(eig) @ Q.transpose(-1, -2)
    return A, torch.randn(2, n, generator=gen, dtype=dtype)


def _same_solution(one, many, exact=True):
    for field in ("x", "status", "iterations", "residual_norm", "direction", "on_boundary"):
        a, b = getattr(one, field), getattr(many, field)
        if a is None:
            assert b is None
            continue
        b = b[:1]
        assert a.shape == b.shape, field
        if exact or a.dtype in (torch.bool, torch.long):
            assert torch.equal(a, b), field
        else:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), field


@pytest.mark.parametrize("case", ["plain", "preconditioned", "x0", "radius", "negative", "negative-radius",
                                  "max-iter", "float32"])
def test_cg_lean_equals_batched(case):
    from torchnewton.linear.krylov import cg
    dtype = torch.float32 if case == "float32" else torch.float64
    A, b = _spd_pair(12, dtype, indefinite=case.startswith("negative"))
    kwargs = {}
    if case == "preconditioned":
        d = torch.diagonal(A, dim1=-2, dim2=-1)
        kwargs["preconditioner"] = lambda r: r / d[: r.shape[0]]
    if case == "x0":
        kwargs["x0"] = torch.ones_like(b)
    if case in ("radius", "negative-radius"):
        # a small ball is left by a CG step; a large one lets CG meet the negative curvature
        kwargs["radius"] = torch.tensor([0.05 if case == "radius" else 100.0, 1.0], dtype=dtype)
    if case == "max-iter":
        kwargs["max_iter"] = 3
    one_kwargs = {k: (v[:1] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    many = cg(A, b, rtol=torch.tensor([1e-10, 1e-3], dtype=dtype), **kwargs)
    one = cg(A[:1], b[:1], rtol=torch.tensor([1e-10], dtype=dtype), **one_kwargs)
    _same_solution(one, many, exact=dtype == torch.float64)
    expected = {"radius": Status.SUCCESS, "negative": Status.NEGATIVE_CURVATURE,
                "negative-radius": Status.NEGATIVE_CURVATURE, "max-iter": Status.MAX_ITER}.get(case, Status.SUCCESS)
    assert int(one.status) == int(expected)
    if case in ("radius", "negative-radius"):
        assert bool(one.on_boundary) and abs(float(one.x.norm()) - float(kwargs["radius"][0])) < 1e-10


@pytest.mark.parametrize("restart", [30, 4])
def test_gmres_lean_equals_batched(restart):
    from torchnewton.linear.krylov import gmres
    gen = torch.Generator().manual_seed(restart)
    A = torch.eye(10, dtype=torch.float64) * 8 + torch.randn(2, 10, 10, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    many = gmres(A, b, rtol=1e-10, restart=restart)
    one = gmres(A[:1], b[:1], rtol=1e-10, restart=restart)
    # GMRES is not bitwise reproducible even between two identical batched calls (its BLAS
    # products and least-squares solves round differently with the memory alignment): round-off
    assert torch.equal(one.status, many.status[:1]) and torch.equal(one.iterations, many.iterations[:1])
    assert torch.allclose(one.x, many.x[:1], rtol=0, atol=1e-12)
    assert int(one.status) == int(Status.SUCCESS) and float(one.residual_norm) <= 1e-9 * float(b[0].norm())
    few = gmres(A[:1], b[:1], rtol=1e-14, restart=restart, max_iter=3)
    assert int(few.status) == int(Status.MAX_ITER) and int(few.iterations) == 3


def _rosenbrock_residual(x):
    return torch.stack([10 * (x[..., 1] - x[..., 0] ** 2), 1 - x[..., 0]], dim=-1)


def _rosenbrock_jacobian(x):
    one = torch.ones_like(x[0])
    return torch.stack([torch.stack([-20 * x[0], 10 * one]), torch.stack([-one, 0 * one])])


@pytest.mark.parametrize("method", ["newton", "broyden", "dogleg"])
@pytest.mark.parametrize("analytic", [False, True])
def test_root_lean_histories_bitwise(method, analytic):
    # one problem (floats) and member 0 of two (masks): the same arithmetic, so the same bits
    # (the hybrid method's step, norms and Broyden update are summed on floats: equal to round-off)
    one = root(_rosenbrock_residual, X0, method=method, jac=_rosenbrock_jacobian if analytic else None,
               record_history=True)
    many = root(_rosenbrock_residual, torch.stack([X0, OTHER]), method=method, batch=True, record_history=True)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    bitwise = method != "dogleg"
    assert torch.equal(one.x, many.x[0]) if bitwise else torch.allclose(one.x, many.x[0], rtol=1e-14, atol=0)
    for key in ("cost", "step_norm"):
        a = torch.tensor([h[key] for h in one.history], dtype=torch.float64)
        b = torch.stack([h[key][0] for h in many.history[:len(a)]])
        assert torch.equal(a, b) if bitwise else torch.allclose(a, b, rtol=1e-12, atol=1e-15 * float(a[0])), key


@pytest.mark.parametrize("method", ["broyden", "dogleg"])
def test_root_lean_statuses_unchanged(method):
    # a circle and a line, NaN past x₀ > 1.45 (just beyond the root √2): the first steps from near
    # the origin overshoot into the NaN region and are cut back; and an iteration budget too small
    F = lambda x: torch.stack([x[..., 0] ** 2 + x[..., 1] ** 2 - 4, x[..., 0] - x[..., 1]], dim=-1)
    nonfinite = []

    def bad(x):
        out = torch.where(x[..., :1] > 1.45, torch.full_like(F(x), float("nan")), F(x))
        nonfinite.append(bool(torch.isnan(out).any()))
        return out

    for start in ([0.3, 0.1], [0.2, 0.3]):
        one, many = _pair(lambda x, **k: root(bad, x, method=method, **k),
                          torch.tensor(start, dtype=torch.float64), OTHER)
        assert one.status == Status(int(many.status[0])) and one.nit == int(many.nit[0])
        assert torch.equal(one.x, many.x[0])
    assert any(nonfinite)
    one, many = _pair(lambda x, **k: root(_rosenbrock_residual, x, method=method, max_iter=3, **k), X0, OTHER)
    assert one.status == Status.MAX_ITER == Status(int(many.status[0])) and one.nit == 3
    assert torch.equal(one.x, many.x[0])


@pytest.mark.parametrize("method", ["trust-ncg", "newton-cg"])
def test_krylov_minimizers_lean_with_hessian(method):
    # the dense-Hessian operator takes CG's lean path too: same iterates as the batched solve
    hess = lambda x: torch.stack([torch.stack([2 - 400 * (x[1] - 3 * x[0] ** 2), -400 * x[0]]),
                                  torch.stack([-400 * x[0], 200 * torch.ones_like(x[0])])])
    one = minimize(rosenbrock, X0, method=method, hess=hess)
    many = minimize(rosenbrock, torch.stack([X0, OTHER]), method=method, batch=True,
                    hess=lambda x: torch.stack([hess(xi) for xi in x]))
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    assert torch.equal(one.x, many.x[0])
    assert torch.allclose(one.x, torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_cg_under_autograd_keeps_the_differentiable_path():
    # with autograd recording, a single problem takes the tensor path: gradients flow through the
    # step lengths α = rᵀz/pᵀAp as they do for a member of a batch (Python floats would cut them)
    from torchnewton.linear.krylov import cg
    A, b = _spd_pair(6)
    grads = []
    for size in (1, 2):
        M = A[:size].clone().requires_grad_(True)
        cg(M, b[:size], rtol=1e-12).x[0].sum().backward()
        grads.append(M.grad[0])
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-12)
