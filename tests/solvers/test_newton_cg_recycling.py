"""minimize(method="newton-cg", options={"recycle": k}): deflated CG kept across the Newton iterations."""
import pytest
import torch

import torchnewton
from torchnewton.bench.problems.bratu import Bratu2D
from torchnewton.bench.suites.root_bratu_recycling import bratu_energy


def test_same_minimizer_fewer_hessian_products():
    problem = Bratu2D(24, 6.0)
    # ∇E is the Bratu residual; ∇²E, the Jacobian, is SPD along the path to the lower-branch solution
    energy = bratu_energy(problem)
    u0 = torch.zeros(24 * 24, dtype=torch.float64)
    runs = [torchnewton.minimize(energy, u0, method="newton-cg", tol=1e-10, options=options)
            for options in (None, {"recycle": 5})]
    for run in runs:
        assert run.success
        assert problem.residual(run.x).abs().max() <= 1e-6  # ∇E = F: a root of the Bratu system
    # the same root: both runs end in Newton's fast local convergence, far inside ‖F‖∞ ≤ 1e-6
    assert (runs[0].x - runs[1].x).abs().max() <= 1e-8
    assert runs[1].nlinsolve == runs[1].nit
    # every product counted, the 5 re-projections per new Hessian included
    assert runs[1].nhev < 0.85 * runs[0].nhev


def test_batch_keeps_the_batched_cg():
    f = lambda x: 0.5 * (x * x * torch.arange(1.0, 6.0, dtype=x.dtype)).sum(-1) + (x**4).sum(-1) - x.sum(-1)
    x0 = torch.stack([torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)])
    runs = [torchnewton.minimize(f, x0, method="newton-cg", batch=True, options=options)
            for options in (None, {"recycle": 2})]
    assert torch.equal(runs[0].x, runs[1].x) and runs[0].nhev == runs[1].nhev


@pytest.mark.parametrize("bad", [-2, 1.5, False, "3"])
def test_bad_recycle_raises(bad):
    with pytest.raises(ValueError, match="recycle"):
        torchnewton.minimize(lambda x: (x * x).sum(), torch.ones(3, dtype=torch.float64), method="newton-cg",
                             options={"recycle": bad})
