"""The hand-coded batched derivatives of the batch benchmark's HS problems, against autodiff, and
the solve that uses them."""
import dataclasses

import numpy as np
import pytest
import torch
from torch.func import hessian, jacrev, vmap

from torchnewton.bench.suites import constrained_batch


@pytest.mark.parametrize("problem", constrained_batch.PROBLEMS, ids=lambda p: p.name)
def test_analytic_derivatives_match_autodiff(problem):
    x0, a, e = problem.instances(8, 0)
    x, a, e = torch.as_tensor(x0), torch.as_tensor(a), torch.as_tensor(e)
    v = torch.randn(8, len(problem.c_lower), dtype=x.dtype, generator=torch.Generator().manual_seed(0))
    given = problem.derivatives()

    def c(z, a_, e_):
        return problem.constraints(z[None], a_[None], e_[None])[0]

    torch.testing.assert_close(given["jac"](x), vmap(jacrev(problem.objective))(x))
    torch.testing.assert_close(given["hess"](x), vmap(hessian(problem.objective))(x))
    torch.testing.assert_close(given["constraint_jac"](x), vmap(jacrev(c))(x, a, e))
    weighted = vmap(hessian(lambda z, w, a_, e_: (w * c(z, a_, e_)).sum()))(x, v, a, e)
    torch.testing.assert_close(given["constraint_hess"](x, v), weighted)


@pytest.mark.parametrize("problem", constrained_batch.PROBLEMS, ids=lambda p: p.name)
def test_analytic_run_reaches_the_autodiff_solutions(problem):
    x0, a, e = problem.instances(16, 1)
    calls = {}

    def counted():
        def wrap(name, fun):
            def call(*args):
                calls[name] = calls.get(name, 0) + 1
                return fun(*args)
            return call
        return {name: wrap(name, fun) for name, fun in problem.derivatives().items()}

    autodiff = constrained_batch.run_torchnewton(x0, a, e, problem=problem)
    analytic = constrained_batch.run_torchnewton(x0, a, e, problem=dataclasses.replace(problem, derivatives=counted),
                                                 analytic=True)
    assert bool(analytic.success.all()) and bool(autodiff.success.all())
    assert calls["jac"] == analytic.njev and calls["hess"] == analytic.nhev > 0  # the hand-coded ones ran
    assert calls["constraint_jac"] == analytic.extras["njcev"] and calls["constraint_hess"] >= analytic.nhev
    np.testing.assert_allclose(analytic.x.numpy(), autodiff.x.numpy(), atol=1e-9)
    assert bool(constrained_batch.solved(analytic.x.numpy(), a, e, problem).all())
