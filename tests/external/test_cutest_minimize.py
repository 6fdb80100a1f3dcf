"""torchnewton.minimize on CUTEst problems through S2MPJ, with their own derivatives and known
optimal values (Moré, Garbow & Hillstrom 1981 and the CUTEst SIF headers)."""
import pytest

s2mpj = pytest.importorskip("torchnewton.bench.problems.s2mpj")

from torchnewton.solvers.objective.minimize import minimize  # noqa: E402

KNOWN = {"ROSENBR": 0.0, "BEALE": 0.0, "DENSCHNA": 0.0, "HIMMELBH": -1.0, "BOX3": 0.0, "HELIX": 0.0, "CUBE": 0.0}
METHODS = {"trust-exact": "hess", "newton": "hess", "cubic": "hess", "trust-ncg": "hessp"}


@pytest.fixture(scope="module")
def problems():
    return {name: s2mpj.load_problem(name, "unconstrained") for name in KNOWN}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", KNOWN)
def test_cutest_known_optimum(problems, name, method):
    problem = problems[name]
    second = {"hess": problem.hessian, "hessp": problem.hessp}[METHODS[method]]
    res = minimize(problem.objective, problem.x0.clone(), method=method, jac=problem.gradient, tol=1e-8,
                   max_iter=500, **{METHODS[method]: second})
    assert res.success, (name, method, res.status)
    assert abs(float(res.fun) - KNOWN[name]) <= 1e-8 * max(1.0, abs(KNOWN[name])) + 1e-10
    assert res.grad.abs().max() <= 1e-8 * max(1.0, abs(float(res.fun)))
    assert res.nhev > 0 and res.njev > 0


def test_ill_conditioned_coolhansls_trust_exact():
    """COOLHANSLS (n = 9): near the solution κ(∇²f) ≈ 1e15, so its smallest eigenvalues are below
    ε‖∇²f‖. The exact trust-region method must still take accurate Newton steps there (it used to
    treat them as a hard case and wander along the near-null direction for hundreds of steps)."""
    problem = s2mpj.load_problem("COOLHANSLS", "unconstrained")
    res = minimize(problem.objective, problem.x0.clone(), method="trust-exact", jac=problem.gradient,
                   hess=problem.hessian, tol=1e-6, max_iter=100)
    assert res.success, res.status
    assert float(res.fun) <= 1e-12
    assert res.grad.abs().max() <= 1e-6


def test_badly_scaled_brownbs_trust_exact():
    """BROWNBS (n = 2): the solution (1e6, 2e-6) lies 1e6 away from x0 = (1, 1). The radius must be
    allowed to grow past the problem's scale (scipy's cap of 1000 needs over 1000 steps)."""
    problem = s2mpj.load_problem("BROWNBS", "unconstrained")
    res = minimize(problem.objective, problem.x0.clone(), method="trust-exact", jac=problem.gradient,
                   hess=problem.hessian, tol=1e-6, max_iter=100)
    assert res.success, res.status
    assert float(res.fun) <= 1e-12
    assert abs(float(res.x[0]) - 1e6) <= 1e-6 * 1e6 and abs(float(res.x[1]) - 2e-6) <= 1e-6 * 2e-6


def test_rank_deficient_arglinb_trust_exact():
    """ARGLINB (n = 10, m = 400 residuals): a linear least-squares objective whose Hessian has rank
    one; its other eigenvalues are rounding noise of either sign (|λ| ≈ 1e-6 ≈ ε‖∇²f‖). The exact
    trust-region step must not follow that noise as negative curvature (the step used to be
    rejected until the radius collapsed: 9 iterations). Optimal value m(m−1)/(2(2m+1)) (Moré,
    Garbow & Hillstrom 1981, problem 33)."""
    m = 400
    f_star = m * (m - 1) / (2 * (2 * m + 1))
    problem = s2mpj.load_problem("ARGLINB", "unconstrained")
    res = minimize(problem.objective, problem.x0.clone(), method="trust-exact", jac=problem.gradient,
                   hess=problem.hessian, tol=1e-6, max_iter=100)
    assert res.success, res.status
    assert abs(float(res.fun) - f_star) <= 1e-10 * f_star
    assert res.nit <= 6
