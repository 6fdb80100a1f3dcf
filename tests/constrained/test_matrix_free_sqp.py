"""Matrix-free sqp: the Lagrangian Hessian-vector product equals the dense ∇²ₓL times the block, the
KKT step through a KKTOperator equals the dense one (inertia ladder included), and sqp with
``sketch="projected-cg"`` never forms ∇²ₓL yet takes the dense path's iterates (same iteration
counts, x to rounding) on the Hock–Schittkowski equality problems and the constrained logistic
regression of the bench."""
import sys
from pathlib import Path

import pytest
import torch

from torchnewton.bench.suites.constrained_logistic import LogisticProblem, synthetic
from torchnewton.core.status import Status
from torchnewton.solvers.constrained.entry import minimize_constrained
from torchnewton.solvers.constrained.kkt import KKTSolver
from torchnewton.solvers.constrained.problem import ConstrainedProblem
from torchnewton.solvers.constrained.spec import NonlinearConstraint, build_spec
from torchnewton.solvers.objective.minimize import minimize

sys.path.insert(0, str(Path(__file__).parent))
from hock_schittkowski import EQUALITY  # noqa: E402

DT = torch.float64
PCG = {"kkt_solver": "sketch", "sketch": "projected-cg"}


def _objective(x):
    return (x[..., 0] - 1) ** 4 + torch.sin(x[..., 1]) * x[..., 2] ** 2 + (x * x).sum(-1)


def _constraint(x):
    return torch.stack([x[..., 0] * x[..., 1] * x[..., 2] - 1, x[..., 0] ** 2 + torch.exp(x[..., 2])], -1)


def _constraint_hess(x, v):  # Σ vᵢ∇²cᵢ for one problem, x (3,), v (2,)
    a, b, c = x
    H1 = torch.stack([torch.stack([0 * a, c, b]), torch.stack([c, 0 * a, a]), torch.stack([b, a, 0 * a])])
    H2 = torch.diag(torch.stack([2 + 0 * a, 0 * a, torch.exp(c)]))
    return v[0] * H1 + v[1] * H2


def _objective_hess(x):
    return torch.func.hessian(_objective)(x)


def _objective_hessp(x, v):
    return _objective_hess(x) @ v


def _problem(variant: str, x: torch.Tensor) -> ConstrainedProblem:
    """One (B, n) problem with its derivatives from autodiff or from the user, per ``variant``."""
    batched = lambda fun: (lambda z, *v: torch.stack([fun(zi, *(vi[i] for vi in v)) for i, zi in enumerate(z)]))  # noqa: E731
    constraint = NonlinearConstraint(_constraint, 0.0, 0.0,
                                     hess=batched(_constraint_hess) if variant == "constraint hess" else None)
    spec = build_spec(constraint, None, x, (), batch=True)
    return ConstrainedProblem(_objective, spec, hess=batched(_objective_hess) if variant == "hess" else None,
                              hessp=batched(_objective_hessp) if variant == "hessp" else None)


@pytest.mark.parametrize("variant", ["autodiff", "hess", "hessp", "constraint hess"])
def test_lagrangian_hessp_equals_the_dense_hessian_on_blocks(variant):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, generator=g, dtype=DT)
    lam = torch.randn(3, 2, generator=g, dtype=DT)
    V = torch.randn(3, 3, 4, generator=g, dtype=DT)
    problem = _problem(variant, x)
    problem.scale = torch.tensor([1.0, 0.5, 2.0], dtype=DT)  # the objective scaling reaches the product too
    with torch.no_grad():
        dense = problem.lagrangian_hessian(x, lam)
        before = problem.counters.nhev
        product = problem.lagrangian_hessp(x, lam)(V)
    torch.testing.assert_close(product, dense @ V, rtol=1e-12, atol=1e-12)
    assert problem.nhvp == 4
    # only a user Hessian is formed (once, for all four columns); autodiff and hessp form none
    assert problem.counters.nhev - before == (1 if variant in ("hess", "constraint hess") else 0)


def _kkt_inputs(seed: int, n: int = 12, m: int = 3, shift: float = -0.3):
    """H symmetric with some negative curvature on null(J) (shift < 0 needs the inertia ladder)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(2, n, n, generator=g, dtype=DT)
    H = A @ A.transpose(-1, -2) / n + shift * torch.eye(n, dtype=DT)
    J = torch.randn(2, m, n, generator=g, dtype=DT)
    return H, J, torch.randn(2, n, generator=g, dtype=DT), torch.randn(2, m, generator=g, dtype=DT)


@pytest.mark.parametrize("shift", [0.5, -0.3])
def test_kkt_step_through_an_operator_equals_the_dense_one(shift):
    H, J, r_x, r_c = _kkt_inputs(1, shift=shift)
    theta = torch.tensor([1e-10, 1e-3], dtype=DT)
    delta_last = torch.tensor([0.0, 1e-2], dtype=DT)
    dense = KKTSolver("sketch", sketch="projected-cg").solve(H, J, r_x, r_c, delta_last, theta)
    free = KKTSolver("sketch", sketch="projected-cg").solve(lambda V: H @ V, J, r_x, r_c, delta_last, theta)
    if shift < 0:  # the curvature test raised δ through the product, as through the matrix
        assert bool((dense.delta > 0).all())
    assert dense.status.tolist() == free.status.tolist() == [int(Status.SUCCESS)] * 2
    torch.testing.assert_close(free.delta, dense.delta, rtol=0, atol=0)
    assert free.iterations.tolist() == dense.iterations.tolist()
    torch.testing.assert_close(free.dx, dense.dx, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(free.dlam, dense.dlam, rtol=1e-9, atol=1e-11)
    # and each meets its accuracy on the regularized system
    W = H + free.delta.view(-1, 1, 1) * torch.eye(H.shape[-1], dtype=DT)
    residual = torch.cat([(W @ free.dx.unsqueeze(-1)).squeeze(-1) + (J.transpose(-1, -2) @ free.dlam.unsqueeze(-1)).squeeze(-1)
                          - r_x, (J @ free.dx.unsqueeze(-1)).squeeze(-1) - r_c], -1).norm(dim=-1)
    assert bool((residual <= theta * torch.cat([r_x, r_c], -1).norm(dim=-1) * (1 + 1e-8)).all())


def _run(f, cons, x0, options, **kwargs):
    deltas = []
    result = minimize_constrained(f, x0, method="sqp", constraints=cons, tol=1e-9, max_iter=100,
                                  options=options, callback=lambda s: deltas.append(float(s.delta.max())), **kwargs)
    return result, max(deltas, default=0.0)


@pytest.mark.parametrize("merit", ["augmented-lagrangian", "l1"])
def test_hock_schittkowski_iterates_equal_the_dense_path(merit):
    corrected = 0
    for name, (f, cons, _, x0, f_star) in EQUALITY.items():
        x0 = torch.tensor(x0, dtype=DT)
        dense, _ = _run(f, cons, x0, {**PCG, "merit": merit, "matrix_free": False})
        free, delta = _run(f, cons, x0, {**PCG, "merit": merit})  # matrix-free by default
        corrected += delta > 0
        assert free.nit == dense.nit and free.status == dense.status, name
        torch.testing.assert_close(free.x, dense.x, rtol=1e-9, atol=1e-9, msg=name)
        assert free.nhev == 0 and free.nhvp > 0 and dense.nhev > 0 and dense.nhvp == 0, name
        if dense.success:
            assert abs(float(free.fun) - f_star) <= 1e-6 * max(1.0, abs(f_star)), name
    assert corrected > 0  # some run needed the inertia-free curvature test to raise δ


def test_batched_members_equal_the_dense_path():
    f, cons, _, x0, _ = EQUALITY["HS40"]
    x0 = torch.tensor(x0, dtype=DT)
    X0 = torch.stack([x0, x0 + 0.05, x0 - 0.1])
    batch_cons = [{"type": "eq", "fun": (lambda fun: lambda X: torch.stack([fun(x) for x in X]).unsqueeze(-1))(c["fun"])}
                  for c in cons]
    fb = lambda X: torch.stack([f(x) for x in X])  # noqa: E731
    dense, _ = _run(fb, batch_cons, X0, {**PCG, "matrix_free": False}, batch=True)
    free, _ = _run(fb, batch_cons, X0, PCG, batch=True)
    assert free.nit.tolist() == dense.nit.tolist() and bool(free.success.all())
    torch.testing.assert_close(free.x, dense.x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("derivatives", ["autodiff", "hessp"])
def test_logistic_regression_equals_the_dense_path(derivatives):
    problem = LogisticProblem(*synthetic(60, 0), seed=0)

    def hessp(w, v):
        s = torch.sigmoid(problem.y * (problem.X @ w))
        return problem.X.T @ (s * (1 - s) * (problem.X @ v)) / problem.X.shape[0]

    runs = {}
    for mode in (False, True):
        kwargs = {"hessp": hessp} if derivatives == "hessp" else {}
        runs[mode] = minimize(problem.objective, problem.x0.clone(), method="sqp",
                              constraints={"type": "eq", "fun": problem.constraints}, tol=1e-10, max_iter=50,
                              options={**PCG, "accuracy": 0.1, "sharpen": 1.0, "matrix_free": mode}, **kwargs)
    dense, free = runs[False], runs[True]
    assert dense.success and free.success and free.nit == dense.nit
    torch.testing.assert_close(free.x, dense.x, rtol=1e-10, atol=1e-10)
    assert problem.kkt(free.x) <= 1e-9
    assert free.nhev == 0 and free.nhvp > 0


def test_bad_options_are_rejected_before_work():
    f, cons, _, x0, _ = EQUALITY["HS6"]
    x0 = torch.tensor(x0, dtype=DT)
    calls = []
    counted = lambda x: (calls.append(1), f(x))[1]  # noqa: E731
    with pytest.raises(ValueError, match="matrix_free"):
        minimize_constrained(counted, x0, constraints=cons, options={"kkt_solver": "direct", "matrix_free": True})
    with pytest.raises(ValueError, match="matrix_free"):
        minimize_constrained(counted, x0, constraints=cons, options={**PCG, "hessian": "bfgs", "matrix_free": True})
    with pytest.raises(TypeError, match="matrix_free"):
        minimize_constrained(counted, x0, constraints=cons, options={**PCG, "matrix_free": "yes"})
    with pytest.raises(ValueError, match="matrix_free"):
        minimize_constrained(counted, x0, bounds=(-5.0, 5.0), constraints=cons, options={**PCG, "matrix_free": True})
    assert len(calls) == 4  # the input check of f at x0 only: no iteration
    H, J, r_x, r_c = _kkt_inputs(2)
    with pytest.raises(ValueError, match="kkt_solver='sketch'"):
        KKTSolver("direct").solve(lambda V: H @ V, J, r_x, r_c, torch.zeros(2, dtype=DT))
