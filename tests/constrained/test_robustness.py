"""The fixes of the second pass: adaptive ν of the merit, LDLᵀ inertia, stagnation status, reuse of trial values."""
import math

import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.solvers.constrained.kkt import KKTSolver, block_eigenvalues
from torchnewton.solvers.constrained.merit import update_penalty
from torchnewton.solvers.constrained.spec import NonlinearConstraint
from torchnewton.solvers.objective.minimize import minimize

D = torch.float64


def _hs56():
    """HS56 (Hock & Schittkowski 1981): degenerate start (c(x0) ≈ 2e-8, indefinite ∇²L), f* = −3.456."""
    a, b = math.asin(math.sqrt(1 / 4.2)), math.asin(math.sqrt(5 / 7.2))

    def c(x):
        s = torch.sin(x[3:6]) ** 2
        return torch.stack([x[0] - 4.2 * s[0], x[1] - 4.2 * s[1], x[2] - 4.2 * s[2],
                            x[0] + 2 * x[1] + 2 * x[2] - 7.2 * torch.sin(x[6]) ** 2])

    x0 = torch.tensor([1.0, 1.0, 1.0, a, a, a, b], dtype=D)
    return (lambda x: -x[0] * x[1] * x[2]), c, x0


def test_sqp_solves_hs56_from_its_nearly_feasible_start():
    # with ν fixed the penalty μ climbed to ~1e15 at the first step (q = ‖c‖² ≈ 1e-16) and the
    # line search crawled until any time limit; lowering ν instead gives a Newton descent step
    f, c, x0 = _hs56()
    res = minimize(f, x0, constraints={"type": "eq", "fun": c}, tol=1e-9, max_iter=60)
    assert res.success and res.method == "sqp", res.status
    assert abs(float(res.fun) + 3.456) < 1e-8
    assert res.nit < 30


def test_update_penalty_lowers_nu_when_c_vanishes():
    # q = 0 (feasible), a < 0 (descent without ν), b large (inertia correction): ν must drop, μ stay
    mu, nu = torch.tensor([1.0]), torch.tensor([0.1])
    a, b, q, g2 = torch.tensor([-1.0]), torch.tensor([50.0]), torch.tensor([0.0]), torch.tensor([1.0])
    mu_new, nu_new, descent = update_penalty(mu, nu, a, b, q, g2)
    assert bool(descent) and float(mu_new) == 1.0
    assert a + nu_new * b - mu_new * q <= -0.5 * (nu_new * g2 + mu_new * q)
    assert float(nu_new) < 0.1


@pytest.mark.parametrize("size", [2, 3, 6, 11])
def test_block_eigenvalues_give_the_inertia_of_eigh(size):
    generator = torch.Generator().manual_seed(size)
    A = torch.randn(300, size, size, dtype=D, generator=generator)
    A = A + A.mT
    LD, pivots, _ = torch.linalg.ldl_factor_ex(A)
    values = block_eigenvalues(LD, pivots)
    exact = torch.linalg.eigvalsh(A)
    assert torch.equal((values > 0).sum(-1), (exact > 0).sum(-1))
    assert torch.equal((values < 0).sum(-1), (exact < 0).sum(-1))
    assert bool((pivots < 0).any())  # 2×2 blocks were exercised


def test_direct_kkt_solve_matches_dense_solve_and_pinv_fallback():
    generator = torch.Generator().manual_seed(0)
    n, m = 5, 2
    W = torch.randn(3, n, n, dtype=D, generator=generator)
    W = W @ W.mT + torch.eye(n, dtype=D)
    J = torch.randn(3, m, n, dtype=D, generator=generator)
    J[2, 1] = J[2, 0]  # member 2: dependent constraints, K singular
    r_x, r_c = torch.randn(3, n, dtype=D, generator=generator), torch.randn(3, m, dtype=D, generator=generator)
    r_c[2, 1] = r_c[2, 0]  # consistent, so the least-squares step solves it
    step = KKTSolver().solve(W, J, r_x, r_c, torch.zeros(3, dtype=D))
    K = torch.cat([torch.cat([W, J.mT], -1), torch.cat([J, torch.zeros(3, m, m, dtype=D)], -1)], -2)
    rhs = torch.cat([r_x, r_c], -1)
    z = torch.cat([step.dx, step.dlam], -1)
    assert torch.allclose(z[:2], torch.linalg.solve(K[:2], rhs[:2]), atol=1e-10)
    assert torch.allclose(z[2], torch.linalg.pinv(K[2]) @ rhs[2], atol=1e-10)
    assert torch.equal(step.status, torch.zeros(3, dtype=torch.long))


def test_degenerate_problem_stops_stalled_not_at_max_iter():
    # min x₂ s.t. x₁² + x₂² = 0 ... LICQ fails at the only feasible point (0, 0) and there is no
    # multiplier: the KKT error cannot fall below a floor, so the solve must end STALLED (or with
    # another failure status) long before max_iter, and never SUCCESS
    res = minimize(lambda x: x[1], torch.tensor([1.0, 1.0], dtype=D),
                   constraints={"type": "eq", "fun": lambda x: x[0] ** 2 + x[1] ** 2}, tol=1e-12, max_iter=2000)
    assert not res.success
    assert res.status != Status.MAX_ITER and res.nit < 500, (res.status, res.nit)


def test_accepted_trial_values_are_reused():
    # a quadratic with a linear equality: one full Newton step solves it; f is called at x0 and
    # at the trial only, and ∇f twice — the accepted trial's values are the new iterate's
    calls = {"f": 0, "g": 0, "c": 0, "J": 0}
    counted = _counter(calls)

    target = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    con = NonlinearConstraint(counted("c", lambda x: x.sum(-1, keepdim=True)), 1.0, 1.0,
                              jac=counted("J", lambda x: torch.ones(1, 3, dtype=D)),
                              hess=lambda x, v: torch.zeros(3, 3, dtype=D))
    res = minimize(counted("f", lambda x: ((x - target) ** 2).sum()), torch.zeros(3, dtype=D), constraints=con,
                   jac=counted("g", lambda x: 2 * (x - target)), hess=lambda x: 2 * torch.eye(3, dtype=D), tol=1e-10)
    assert res.success and res.nit == 1
    assert torch.allclose(res.x, target - (target.sum() - 1) / 3)
    # f and c: at x0 by the entry point's input checks (whose values the solver reuses) and at
    # the trial; ∇f and J at x0 and at the trial — nothing evaluated twice at one point
    assert calls == {"f": 2, "g": 2, "c": 2, "J": 2}, calls
    # the Result's counters are the calls the user saw
    assert (res.nfev, res.njev, res.extras["ncev"], res.extras["njcev"]) == (2, 2, 2, 2)


@pytest.mark.parametrize("x0", [[0.5, 0.5], [0.0, 0.0]])
def test_interior_point_reuses_the_checked_values_at_x0(x0):
    # the entry point's checks evaluate f and c at x0 once; the interior point's first iterate is
    # x0 itself (strictly inside) or x0 pushed into the bounds (on the bound): at x0 nothing is
    # called again, and the Result's counters are exactly the calls the user's callables saw
    calls = {"f": 0, "g": 0, "c": 0, "J": 0}
    counted = _counter(calls)

    con = NonlinearConstraint(counted("c", lambda x: (x[0] - x[1]).reshape(1)), 0.0, float("inf"),
                              jac=counted("J", lambda x: torch.tensor([[1.0, -1.0]], dtype=D)),
                              hess=lambda x, v: torch.zeros(2, 2, dtype=D))
    target = torch.tensor([2.0, -1.0], dtype=D)
    res = minimize(counted("f", lambda x: ((x - target) ** 2).sum()), torch.tensor(x0, dtype=D), constraints=con,
                   bounds=(0.0, 1.0), jac=counted("g", lambda x: 2 * (x - target)),
                   hess=lambda x: 2 * torch.eye(2, dtype=D), tol=1e-9)
    assert res.success and torch.allclose(res.x, torch.tensor([1.0, 0.0], dtype=D), atol=1e-7)
    assert (res.nfev, res.njev, res.extras["ncev"], res.extras["njcev"]) == \
        (calls["f"], calls["g"], calls["c"], calls["J"]), calls
    # no iteration: f and c at x0 once (the checks), once more only where x0 had to be pushed inside
    for key in calls:
        calls[key] = 0
    minimize(counted("f", lambda x: ((x - target) ** 2).sum()), torch.tensor(x0, dtype=D), constraints=con,
             bounds=(0.0, 1.0), jac=counted("g", lambda x: 2 * (x - target)),
             hess=lambda x: 2 * torch.eye(2, dtype=D), max_iter=0)
    pushed = int(x0 == [0.0, 0.0])
    assert calls == {"f": 1 + pushed, "g": 1, "c": 1 + pushed, "J": 1}, calls


@pytest.mark.parametrize("method", ["sqp", "interior-point"])
def test_objective_scaling_reports_unscaled_values(method):
    # f = 1e6‖x − t‖² s.t. Σx = 1: the solver works on s·f (s = 100/‖∇f(x₀)‖∞) but the result's f,
    # ∇f and multiplier are the unscaled ones: λ = 2e6(Σt − 1)/3 from ∇f + λ·1 = 0
    target = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    res = minimize(lambda x: 1e6 * ((x - target) ** 2).sum(), torch.zeros(3, dtype=D), method=method,
                   constraints={"type": "eq", "fun": lambda x: x.sum() - 1}, tol=1e-9)
    x_star = target - (target.sum() - 1) / 3
    assert res.success
    assert torch.allclose(res.x, x_star, atol=1e-8)
    assert float(res.fun) == pytest.approx(1e6 * float(((x_star - target) ** 2).sum()), rel=1e-10)
    assert torch.allclose(res.grad, 2e6 * (x_star - target), rtol=1e-8)
    assert float(res.multipliers["constraints"][0]) == pytest.approx(2e6 * 5 / 3, rel=1e-8)
    assert float(res.optimality) < 1e-9 * 2e6


def _counter(calls: dict[str, int]):
    """``counted(key, fn)``: fn, counting its calls in ``calls[key]``."""
    def counted(key, fn):
        def wrapped(*args):
            calls[key] += 1
            return fn(*args)
        return wrapped
    return counted
