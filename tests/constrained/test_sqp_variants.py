"""SQP's composable parts: the ℓ₁ merit (trial points cost f and c only) and the damped BFGS
Lagrangian Hessian (no second derivatives) — optimal values, evaluation counts, failures."""
import sys
from pathlib import Path

import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.solvers.constrained.quasi_newton import damped_bfgs_update
from torchnewton.solvers.constrained.spec import NonlinearConstraint
from torchnewton.solvers.objective.minimize import minimize

sys.path.insert(0, str(Path(__file__).parent))
from hock_schittkowski import EQUALITY, solve  # noqa: E402

D = torch.float64
VARIANTS = [{"merit": "l1"}, {"hessian": "bfgs"}, {"merit": "l1", "hessian": "bfgs"}]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "+".join(o.values()))
@pytest.mark.parametrize("name", ["HS6", "HS7", "HS27", "HS39", "HS40", "HS42", "HS77", "HS79"])
def test_variants_reach_published_optima(name, options):
    res, optimum = solve(name, method="sqp", tol=1e-8, options=options)
    assert res.success and res.method == "sqp", (name, options, res.status)
    assert float(res.fun) == pytest.approx(optimum, abs=1e-6 * max(1.0, abs(optimum)))
    assert float(res.constraint_violation) <= 1e-8 and float(res.optimality) <= 1e-8
    if options.get("hessian") == "bfgs":
        assert res.nhev == 0


def _counted(name):
    """HS problem with analytic derivatives wrapped in call counters."""
    f, constraints, _, x0, optimum = EQUALITY[name]
    calls = {"f": 0, "g": 0, "c": 0, "J": 0, "H": 0, "Hc": 0}

    def count(key, fn):
        def wrapped(*args):
            calls[key] += 1
            return fn(*args)
        return wrapped

    def grad(x):
        return torch.func.grad(f)(x)

    def c(x):
        return torch.stack([con["fun"](x) for con in constraints])

    def hess(x):
        return torch.func.hessian(f)(x)

    def weighted_hessian(x, v):
        return torch.func.hessian(lambda z: (v * c(z)).sum())(x)

    m = len(constraints)
    constraint = NonlinearConstraint(count("c", c), torch.zeros(m, dtype=D), torch.zeros(m, dtype=D),
                                     jac=count("J", torch.func.jacrev(c)), hess=count("Hc", weighted_hessian))
    return (count("f", f), constraint, count("g", grad), count("H", hess),
            torch.tensor(x0, dtype=D), optimum, calls)


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "+".join(o.values()))
@pytest.mark.parametrize("name", ["HS7", "HS39"])
def test_counters_match_the_calls_and_derivatives_only_at_accepted_points(name, options):
    f, constraint, grad, hess, x0, optimum, calls = _counted(name)
    res = minimize(f, x0, method="sqp", constraints=constraint, jac=grad, hess=hess, tol=1e-8, options=options)
    assert res.success and float(res.fun) == pytest.approx(optimum, abs=1e-6 * max(1.0, abs(optimum)))
    assert (res.nfev, res.njev, res.nhev) == (calls["f"], calls["g"], calls["H"])
    assert (res.ncev, res.njcev) == (calls["c"], calls["J"])
    assert res.nfev == res.ncev and res.njev == res.njcev
    if options.get("merit") == "l1":
        # the ℓ₁ merit needs no derivative at a rejected trial: one ∇f and J at x0, one per accepted step
        assert res.njev <= res.nit + 1
    if options.get("hessian") == "bfgs":
        assert calls["H"] == calls["Hc"] == 0
    else:
        assert res.nhev == res.nit == calls["Hc"]


def test_l1_merit_evaluates_derivatives_at_iterates_only():
    f, constraint, grad, hess, x0, _, calls = _counted("HS27")
    exact = minimize(f, x0, method="sqp", constraints=constraint, jac=grad, hess=hess, tol=1e-8)
    l1 = minimize(f, x0, method="sqp", constraints=constraint, jac=grad, hess=hess, tol=1e-8,
                  options={"merit": "l1"})
    assert exact.success and l1.success
    # every derivative call of the ℓ₁ run is at an iterate; the paper's merit pays ∇f, J at trials too
    assert l1.njev == l1.nit + 1 and l1.nfev > l1.njev
    assert exact.njev > exact.nit + 1


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "+".join(o.values()))
def test_variants_never_report_success_on_infeasible_or_unbounded(options):
    res = minimize(lambda x: (x ** 2).sum(), torch.zeros(2, dtype=D), method="sqp", max_iter=100, options=options,
                   constraints=[{"type": "eq", "fun": lambda x: x[0] + x[1] - 1},
                                {"type": "eq", "fun": lambda x: x[0] + x[1] - 2}])
    assert not res.success and res.status == Status.INFEASIBLE and res.nit < 100
    res = minimize(lambda x: (x ** 2).sum(), torch.tensor([1.0, 1.0], dtype=D), method="sqp", max_iter=200,
                   options=options, constraints={"type": "eq", "fun": lambda x: x[0] ** 2 + 1})
    assert not res.success and res.status == Status.LOCALLY_INFEASIBLE and res.nit < 200
    res = minimize(lambda x: -x[0] - x[1], torch.tensor([1.0, 1.0], dtype=D), method="sqp", max_iter=200,
                   options=options, constraints={"type": "eq", "fun": lambda x: x[0] - x[1]})
    assert not res.success and res.status == Status.UNBOUNDED


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "+".join(o.values()))
def test_batched_variants_match_single_solves(options):
    f = lambda x: (x[:, 0] - 1) ** 2 + (x[:, 1] - 2) ** 2 + x[:, 2] ** 2  # noqa: E731
    radius = torch.tensor([1.0, 2.0, 0.5], dtype=D)
    c = lambda x: (x ** 2).sum(-1, keepdim=True) - radius.unsqueeze(-1) ** 2  # noqa: E731
    x0 = torch.tensor([[1.0, 0.5, 0.5]] * 3, dtype=D)
    batched = minimize(f, x0, method="sqp", batch=True, tol=1e-10, options=options,
                       constraints={"type": "eq", "fun": c})
    assert bool(batched.success.all())
    for i in range(3):
        # the nearest point of the sphere to (1, 2, 0): f* = (√5 − r)²
        assert float(batched.fun[i]) == pytest.approx((5 ** 0.5 - float(radius[i])) ** 2, abs=1e-8)


def test_damped_bfgs_stays_positive_definite_on_negative_curvature():
    B = torch.eye(3, dtype=D).unsqueeze(0)
    s = torch.tensor([[1.0, 0.5, 0.0]], dtype=D)
    y = torch.tensor([[-2.0, 0.1, 0.0]], dtype=D)  # sᵀy < 0: plain BFGS would lose definiteness
    updated = damped_bfgs_update(B, s, y, torch.tensor([True]))
    assert float(torch.linalg.eigvalsh(updated).min()) > 0
    # the damped pair satisfies the secant equation B⁺s = r with sᵀr = 0.2 sᵀBs
    Bs = B[0] @ s[0]
    theta = 0.8 * (s[0] @ Bs) / ((s[0] @ Bs) - (s[0] @ y[0]))
    r = theta * y[0] + (1 - theta) * Bs
    assert torch.allclose(updated[0] @ s[0], r, atol=1e-12)
    frozen = damped_bfgs_update(B, s, y, torch.tensor([False]))
    assert torch.equal(frozen, B)


def test_bad_variant_options_raise():
    f = lambda x: (x ** 2).sum()  # noqa: E731
    con = {"type": "eq", "fun": lambda x: x.sum() - 1}
    with pytest.raises(ValueError, match="merit"):
        minimize(f, torch.zeros(2, dtype=D), method="sqp", constraints=con, options={"merit": "l2"})
    with pytest.raises(ValueError, match="hessian"):
        minimize(f, torch.zeros(2, dtype=D), method="sqp", constraints=con, options={"hessian": "sr1"})
    with pytest.raises(ValueError, match="merit"):
        minimize(f, torch.zeros(2, dtype=D), method="interior-point", constraints=con, options={"merit": "l1"})


def test_bench_variant_entries_use_their_options_and_are_judged_by_the_checker():
    from torchnewton.bench.problems import s2mpj_constrained
    from torchnewton.bench.suites.constrained_solvers import run_solver

    problem = s2mpj_constrained.load_problem("HS40")
    exact = run_solver("tn:sqp", problem, max_iter=200, time_cap=20.0)
    bfgs = run_solver("tn:sqp (damped BFGS, ℓ1 merit)", problem, max_iter=200, time_cap=20.0)
    assert exact["success"] and bfgs["success"]
    assert bfgs["fun"] == pytest.approx(exact["fun"], abs=1e-8) == pytest.approx(-0.25, abs=1e-8)
    assert exact["nhev"] > 0 and exact["nchev"] > 0 and bfgs["nhev"] == bfgs["nchev"] == 0
    assert bfgs["nfev"] == bfgs["ncev"] and bfgs["njev"] == bfgs["njcev"] <= bfgs["nit"] + 1


def test_goal_is_judged_per_entry_on_the_problems_it_and_every_peer_solve():
    from torchnewton.bench.suites.constrained_cutest import goal_check

    def run(success, evaluations):
        return {"success": success, "nfev": evaluations, "njev": 0, "nhev": 0, "ncev": 0, "njcev": 0, "nchev": 0}

    names = ["A", "B", "C"]
    results = {"tn:x": {"A": run(True, 10), "B": run(True, 10), "C": run(False, 1)},
               "scipy:SLSQP": {"A": run(True, 12), "B": run(True, 12), "C": run(True, 1)},
               "ipopt:exact": {"A": run(True, 5), "B": run(True, 5), "C": run(True, 1)}}
    goal = goal_check(results, names, "tn:x", ["scipy:SLSQP", "ipopt:exact"])
    # fewer evaluations than SLSQP on A and B, but one problem fewer solved than the peers
    assert goal["common"] == 2 and goal["median_evaluations"] == 10 and goal["scipy_medians"] == {"scipy:SLSQP": 12}
    assert not goal["met"]
    results["tn:x"]["C"] = run(True, 1)
    assert goal_check(results, names, "tn:x", ["scipy:SLSQP", "ipopt:exact"])["met"]
