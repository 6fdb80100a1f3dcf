"""∇f, J and ∇²ₓL from one autodiff pass (ConstrainedProblem.derivatives_and_hessian) and the
interior point that uses it: the same numbers as the separate passes, counted once each."""
import math

import pytest
import torch

from torchnewton.bench.suites import constrained_batch
from torchnewton.solvers.constrained.problem import ConstrainedProblem
from torchnewton.solvers.constrained.spec import NonlinearConstraint, build_spec
from torchnewton.solvers.objective.minimize import minimize

D = torch.float64


def _hs71_batch(batch: int, seed: int = 0):
    x0, a, e = constrained_batch.instances(batch, seed)
    a, e = torch.as_tensor(a), torch.as_tensor(e)
    constraint = NonlinearConstraint(lambda x: constrained_batch.constraints(x, a, e),
                                     torch.tensor([0.0, 0.0], dtype=D), torch.tensor([math.inf, 0.0], dtype=D))
    return torch.as_tensor(x0), constraint


def _problem(objective, constraint, x, **kwargs):
    spec = build_spec(constraint, None, x, (), batch=True)
    return ConstrainedProblem(objective, spec, **kwargs)


@pytest.mark.parametrize("factor", [1.0, 1e4])  # 1e4: ‖∇f‖∞ > 100, so the objective is scaled (s < 1)
def test_one_pass_equals_separate_passes(factor):
    x, constraint = _hs71_batch(6)
    objective = lambda z: factor * constrained_batch.objective(z)  # noqa: E731
    lam = torch.randn(6, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    fused, separate = _problem(objective, constraint, x), _problem(objective, constraint, x)
    with torch.no_grad():
        for problem in (fused, separate):
            problem.evaluate(x)  # fixes the objective scale s, as a solver's first call does
        assert fused.fuses_hessian()
        before = (fused.counters.njev, fused.njcev, fused.counters.nhev)
        g, J, H = fused.derivatives_and_hessian(x, lam)
        g_ref, J_ref = separate.derivatives(x)
        H_ref = separate.lagrangian_hessian(x, lam)
    if factor > 1:
        assert bool((fused.scale < 1).all())
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-10 * factor)
    torch.testing.assert_close(J, J_ref, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(H, H_ref, rtol=1e-12, atol=1e-12)
    assert (fused.counters.njev, fused.njcev, fused.counters.nhev) == tuple(v + 1 for v in before)


def test_one_pass_without_constraints_and_with_affine_ones():
    x = torch.tensor([[1.0, 2.0, -0.5], [0.3, -1.0, 2.0]], dtype=D)
    objective = lambda z: (z ** 4).sum(-1) + z[:, 0] * z[:, 1]  # noqa: E731
    dense_H = torch.stack([torch.autograd.functional.hessian(lambda v: objective(v[None])[0], row) for row in x])
    bounds_only = ConstrainedProblem(objective, build_spec(None, (-5.0, 5.0), x, (), batch=True))
    affine = NonlinearConstraint(lambda z: z @ torch.tensor([[1.0], [2.0], [3.0]], dtype=D), 0.0, 0.0)
    linear = _problem(objective, affine, x)
    with torch.no_grad():
        for problem in (bounds_only, linear):
            problem.evaluate(x)
        g, J, H = bounds_only.derivatives_and_hessian(x, x.new_zeros(2, 0))
        g2, J2, H2 = linear.derivatives_and_hessian(x, torch.tensor([[2.0], [-1.0]], dtype=D))
    expected_g = 4 * x ** 3 + torch.stack([x[:, 1], x[:, 0], torch.zeros(2, dtype=D)], -1)
    for grad, jac, hess in ((g, J, H), (g2, J2, H2)):
        torch.testing.assert_close(grad, expected_g)
        torch.testing.assert_close(hess, dense_H)  # affine constraints add no curvature
    assert J.shape == (2, 0, 3)
    torch.testing.assert_close(J2, torch.tensor([[[1.0, 2.0, 3.0]]] * 2, dtype=D))


def test_interior_point_with_the_one_pass_matches_the_separate_passes():
    """The default (autodiff, one pass per accepted point) and the same problem with a user ``hess``
    (separate passes, Hessian at each step's start) take the same iterates."""
    x0, constraint = _hs71_batch(12, seed=3)

    def hess(x):  # HS71's objective Hessian
        x1, x2, x3, x4 = x.unbind(-1)
        zero = torch.zeros_like(x1)
        rows = [[2 * x4, x4, x4, 2 * x1 + x2 + x3], [x4, zero, zero, x1], [x4, zero, zero, x1],
                [2 * x1 + x2 + x3, x1, x1, zero]]
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    bounds = (torch.full((4,), 1.0, dtype=D), torch.full((4,), 5.0, dtype=D))
    fused = minimize(constrained_batch.objective, x0.clone(), constraints=constraint, bounds=bounds, tol=1e-8,
                     batch=True)
    separate = minimize(constrained_batch.objective, x0.clone(), constraints=constraint, bounds=bounds, tol=1e-8,
                        batch=True, hess=hess)
    assert fused.method == separate.method == "interior-point"
    assert bool(fused.success.all()) and bool(separate.success.all())
    torch.testing.assert_close(fused.x, separate.x, rtol=0, atol=1e-9)
    assert torch.equal(fused.nit, separate.nit)
    # one Hessian at x0 and one with the derivatives at each accepted point; the separate passes
    # take one per step instead
    assert fused.nhev == fused.njev <= int(fused.nit.max()) + 1
    assert separate.nhev == int(separate.nit.max())
