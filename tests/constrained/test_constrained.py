"""torchnewton.minimize with constraints and bounds: SQP and interior point."""
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import torch

from torchnewton.core.status import Status
from torchnewton.solvers.constrained.spec import NonlinearConstraint
from torchnewton.solvers.objective.minimize import minimize

sys.path.insert(0, str(Path(__file__).parent))
from hock_schittkowski import solve  # noqa: E402

D = torch.float64


@pytest.mark.parametrize("name", ["HS6", "HS7", "HS27", "HS28", "HS39", "HS40", "HS42", "HS48", "HS52", "HS77",
                                  "HS78", "HS79"])
def test_sqp_hock_schittkowski_equalities(name):
    res, optimum = solve(name, method="sqp", tol=1e-8)
    assert res.success and res.method == "sqp", (name, res.status)
    assert float(res.fun) == pytest.approx(optimum, abs=1e-6 * max(1.0, abs(optimum)))
    assert float(res.constraint_violation) <= 1e-8 and float(res.optimality) <= 1e-8


@pytest.mark.parametrize("name", ["HS21", "HS35", "HS43", "HS71", "HS76"])
@pytest.mark.parametrize("barrier", ["monotone", "adaptive"])
def test_interior_point_hock_schittkowski_inequalities(name, barrier):
    res, optimum = solve(name, method="interior-point", tol=1e-8, options={"barrier": barrier})
    assert res.success, (name, res.status)
    assert float(res.fun) == pytest.approx(optimum, abs=1e-6 * max(1.0, abs(optimum)))
    assert float(res.constraint_violation) <= 1e-8


def test_sqp_with_inequalities_is_routed_to_interior_point():
    res, optimum = solve("HS71", method="sqp", tol=1e-8)
    assert res.method == "interior-point" and res.success
    assert float(res.fun) == pytest.approx(optimum, rel=1e-7)


@pytest.mark.parametrize("kkt_solver", ["minres", "sketch"])
def test_inexact_kkt_solves_reach_the_same_solution(kkt_solver):
    exact, _ = solve("HS40", method="sqp", tol=1e-8)
    inexact, _ = solve("HS40", method="sqp", tol=1e-8, options={"kkt_solver": kkt_solver, "sketch_size": 3})
    assert inexact.success
    assert torch.allclose(inexact.x, exact.x, atol=1e-7)


def _random_qp(seed, n=5, m_eq=2, m_ineq=3):
    g = np.random.default_rng(seed)
    A = g.standard_normal((n, n))
    Q = A @ A.T + n * np.eye(n)
    q = g.standard_normal(n)
    E, e = g.standard_normal((m_eq, n)), g.standard_normal(m_eq)
    G, h = g.standard_normal((m_ineq, n)), g.standard_normal(m_ineq) + 1.0
    return Q, q, E, e, G, h


@pytest.mark.parametrize("seed", range(4))
def test_random_qps_agree_with_scipy_slsqp(seed):
    Q, q, E, e, G, h = _random_qp(seed)
    ref = scipy.optimize.minimize(lambda x: 0.5 * x @ Q @ x + q @ x, np.zeros(5), jac=lambda x: Q @ x + q,
                                  method="SLSQP", constraints=[{"type": "eq", "fun": lambda x: E @ x - e},
                                                               {"type": "ineq", "fun": lambda x: h - G @ x}],
                                  options={"ftol": 1e-14, "maxiter": 500})
    assert ref.success
    T = lambda a: torch.tensor(a, dtype=D)
    Qt, qt, Et, et, Gt, ht = map(T, (Q, q, E, e, G, h))
    res = minimize(lambda x: 0.5 * x @ Qt @ x + qt @ x, torch.zeros(5, dtype=D), tol=1e-10,
                   constraints=[{"type": "eq", "fun": lambda x: Et @ x - et},
                                {"type": "ineq", "fun": lambda x: ht - Gt @ x}])
    assert res.success
    assert np.allclose(res.x.numpy(), ref.x, atol=1e-6)
    assert float(res.fun) == pytest.approx(ref.fun, abs=1e-8)


def test_multipliers_on_a_problem_with_known_multipliers():
    # min x0 + x1 s.t. x0² + x1² = 2, x0 ≥ -0.5 (bound, inactive), x1 ≤ -1.2 (bound, active)
    # solution x = (-0.8, -1.2)·... checked through ∇f + Jᵀλ + z = 0 and a closed form on the circle alone
    res = minimize(lambda x: x[0] + x[1], torch.tensor([0.5, -0.5], dtype=D), tol=1e-10,
                   constraints=NonlinearConstraint(lambda x: (x ** 2).sum(), 2.0, 2.0))
    assert res.success
    assert torch.allclose(res.x, torch.tensor([-1.0, -1.0], dtype=D), atol=1e-8)
    # ∇f + λ∇c = 0 at (-1, -1): 1 + λ(-2) = 0 → λ = 1/2
    assert float(res.multipliers["constraints"][0]) == pytest.approx(0.5, abs=1e-8)
    # an active lower bound: min (x0 - 2)² + x1² s.t. x0 ≤ 1 → z0 = 2 (positive at an upper limit)
    res = minimize(lambda x: (x[0] - 2) ** 2 + x[1] ** 2, torch.zeros(2, dtype=D), tol=1e-10,
                   bounds=(torch.tensor([-5.0, -5.0], dtype=D), torch.tensor([1.0, 5.0], dtype=D)))
    assert res.success
    assert torch.allclose(res.multipliers["bounds"], torch.tensor([2.0, 0.0], dtype=D), atol=1e-7)
    # an active ineq c(x) = x0 - 3 ≥ 0 for min x0²: λ = -6 (negative at a lower limit)
    res = minimize(lambda x: (x ** 2).sum(), torch.tensor([5.0, 1.0], dtype=D), tol=1e-10,
                   constraints={"type": "ineq", "fun": lambda x: x[0] - 3})
    assert res.success and float(res.multipliers["constraints"][0]) == pytest.approx(-6.0, abs=1e-6)


@pytest.mark.parametrize("method", ["sqp", "interior-point"])
def test_inconsistent_linear_equalities_are_infeasible(method):
    res = minimize(lambda x: (x ** 2).sum(), torch.zeros(2, dtype=D), method=method, max_iter=100,
                   constraints=[{"type": "eq", "fun": lambda x: x[0] + x[1] - 1},
                                {"type": "eq", "fun": lambda x: x[0] + x[1] - 2}])
    assert not res.success and res.status == Status.INFEASIBLE and res.nit < 100


def test_nonlinear_infeasible_is_locally_infeasible():
    res = minimize(lambda x: (x ** 2).sum(), torch.tensor([1.0, 1.0], dtype=D), max_iter=200,
                   constraints={"type": "eq", "fun": lambda x: x[0] ** 2 + 1})
    assert not res.success and res.status == Status.LOCALLY_INFEASIBLE and res.nit < 200


def test_infeasible_inequalities():
    res = minimize(lambda x: (x ** 2).sum(), torch.zeros(2, dtype=D), max_iter=200,
                   constraints=[{"type": "ineq", "fun": lambda x: x[0] - 1}, {"type": "ineq", "fun": lambda x: -x[0]}])
    assert not res.success and res.status in (Status.INFEASIBLE, Status.LOCALLY_INFEASIBLE) and res.nit < 200


@pytest.mark.parametrize("method", ["sqp", "interior-point"])
def test_unbounded_objective(method):
    res = minimize(lambda x: -x[0] - x[1], torch.tensor([1.0, 1.0], dtype=D), method=method, max_iter=100,
                   constraints={"type": "eq", "fun": lambda x: x[0] - x[1]})
    assert not res.success and res.status == Status.UNBOUNDED
    res = minimize(lambda x: -x[0], torch.tensor([1.0], dtype=D), bounds=(0.0, float("inf")), max_iter=100)
    assert res.status == Status.UNBOUNDED


def test_batch_of_mixed_problems_has_per_problem_status():
    # member 0: feasible circle; member 1: infeasible (radius² = -1); member 2: another circle
    radius = torch.tensor([[1.0], [-1.0], [4.0]], dtype=D)
    con = NonlinearConstraint(lambda x: (x ** 2).sum(-1, keepdim=True) - radius, 0.0, 0.0)
    x0 = torch.tensor([[1.0, 0.5], [1.0, 0.5], [1.0, 0.5]], dtype=D)
    res = minimize(lambda x: x[:, 0] + 2 * x[:, 1], x0, constraints=con, batch=True, tol=1e-10, max_iter=200)
    assert res.status.tolist() == [int(Status.SUCCESS), int(Status.LOCALLY_INFEASIBLE), int(Status.SUCCESS)]
    for i, r in ((0, 1.0), (2, 2.0)):
        expected = -r * torch.tensor([1.0, 2.0], dtype=D) / 5 ** 0.5
        assert torch.allclose(res.x[i], expected, atol=1e-8)
        single = minimize(lambda x: x[0] + 2 * x[1], x0[i], tol=1e-10,
                          constraints={"type": "eq", "fun": lambda x, r=r: (x ** 2).sum() - r ** 2})
        assert torch.allclose(res.x[i], single.x, atol=1e-8)


def test_batched_interior_point_matches_single_solves():
    shift = torch.tensor([[0.0], [0.5], [2.0]], dtype=D)
    f = lambda x: ((x - 1 - shift) ** 2).sum(-1)
    x0 = torch.zeros(3, 2, dtype=D)
    res = minimize(f, x0, batch=True, tol=1e-10, bounds=(-1.0, 1.5),
                   constraints={"type": "ineq", "fun": lambda x: (2.0 - x.sum(-1)).unsqueeze(-1)})
    assert bool(res.success.all())
    for i in range(3):
        single = minimize(lambda x, s=float(shift[i]): ((x - 1 - s) ** 2).sum(), x0[i], tol=1e-10, bounds=(-1.0, 1.5),
                          constraints={"type": "ineq", "fun": lambda x: 2.0 - x.sum()})
        assert torch.allclose(res.x[i], single.x, atol=1e-7)


@pytest.mark.parametrize("method", ["sqp", "interior-point"])
def test_implicit_gradient_matches_finite_differences(method):
    theta = torch.tensor([0.3, -0.2], dtype=D, requires_grad=True)

    def solution(t):
        return minimize(lambda x, p: ((x - p[0]) ** 2).sum() + p[1] * x[0] * x[1] + x[2] ** 4,
                        torch.tensor([1.0, 0.5, 0.2], dtype=D), method=method, args=(t,), tol=1e-12,
                        constraints=[{"type": "eq", "fun": lambda x, p: x[0] + 2 * x[1] + x[2] ** 2 - 1 - p[1]},
                                     {"type": "ineq", "fun": lambda x, p: x[2] - 0.5 - p[0]}]).x

    x = solution(theta)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    (grad,) = torch.autograd.grad((weights * x).sum(), theta)
    eps = 1e-6
    fd = []
    for k in range(2):
        e = torch.zeros(2, dtype=D)
        e[k] = eps
        with torch.no_grad():
            fd.append(float((weights * (solution(theta.detach() + e) - solution(theta.detach() - e))).sum() / (2 * eps)))
    assert torch.allclose(grad, torch.tensor(fd, dtype=D), atol=1e-5)


def test_bad_inputs_raise_before_work():
    x0 = torch.zeros(2, dtype=D)
    f = lambda x: (x ** 2).sum()
    with pytest.raises(ValueError, match="lower > upper"):
        minimize(f, x0, bounds=(torch.tensor([1.0, 0.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D)))
    with pytest.raises(ValueError, match="lower > upper"):
        minimize(f, x0, constraints=NonlinearConstraint(lambda x: x, torch.ones(2, dtype=D), torch.zeros(2, dtype=D)))
    with pytest.raises(ValueError, match="does not broadcast"):
        minimize(f, x0, bounds=(torch.zeros(3, dtype=D), 1.0))
    with pytest.raises(ValueError, match="not finite"):
        minimize(f, x0, constraints={"type": "eq", "fun": lambda x: torch.log(x[0]) - 1})
    with pytest.raises(TypeError, match="constraints\\[0\\] fun must be callable"):
        minimize(f, x0, constraints={"type": "eq", "fun": 3.0})
    with pytest.raises(TypeError, match="fun must be callable"):
        minimize("not a function", x0, constraints={"type": "eq", "fun": lambda x: x[0]})
    with pytest.raises(ValueError, match="must be 'eq' or 'ineq'"):
        minimize(f, x0, constraints={"type": "equal", "fun": lambda x: x[0]})
    with pytest.raises(ValueError, match="kkt_solver"):
        minimize(f, x0, constraints={"type": "eq", "fun": lambda x: x[0]}, options={"kkt_solver": "qr"})
    with pytest.raises(ValueError, match="unknown method"):
        minimize(f, x0, method="slsqp", constraints={"type": "eq", "fun": lambda x: x[0]})
    with pytest.raises(ValueError, match="returned shape"):
        minimize(lambda x: x[:, 0], torch.zeros(2, 2, dtype=D), batch=True,
                 constraints={"type": "eq", "fun": lambda x: x.sum()})
