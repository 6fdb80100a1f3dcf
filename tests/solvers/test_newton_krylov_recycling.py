"""root(method="newton-krylov", options={"recycle": k}): GCRO-DR kept across the Newton iterations."""
import pytest
import torch

import torchnewton
from torchnewton.bench.problems.bratu import Bratu2D

TOL = 1e-8


def _solve(problem: Bratu2D, callback=None, **options):
    u0 = torch.zeros(1, problem.size**2, dtype=torch.float64)
    return torchnewton.root(problem.residual, u0, method="newton-krylov", tol=TOL, batch=True, max_iter=50,
                            options=options, callback=callback)


@pytest.fixture(scope="module")
def bratu32():
    problem = Bratu2D(32, 6.0)
    return problem, _solve(problem), _solve(problem, recycle=10)


def test_same_solution_fewer_krylov_iterations(bratu32):
    problem, plain, recycled = bratu32
    assert plain.success.item() and recycled.success.item()
    assert problem.residual(recycled.x).abs().max() <= TOL
    # both are roots to ‖F‖∞ ≤ 1e-8; J⁻¹ has norm about 1/(2π² − λe^{max u}) ≈ 0.1 here
    assert (recycled.x - plain.x).abs().max() <= 1e-8
    assert recycled.krylov_iterations.item() < 0.6 * plain.krylov_iterations.item()
    assert recycled.njev < plain.njev  # the JVP products, the k re-projections included


def test_recycling_across_newton_iterations_is_what_saves(bratu32):
    problem, _, recycled = bratu32
    # the same GCRO-DR with its subspace forgotten after every Newton iteration (deflation within each
    # solve only) needs more iterations than the one that carries it from Jacobian to Jacobian
    forgetful = _solve(problem, callback=lambda state: state.recycler.reset(), recycle=10)
    assert forgetful.success.item()
    assert (forgetful.x - recycled.x).abs().max() <= 1e-8
    assert recycled.krylov_iterations.item() < forgetful.krylov_iterations.item()


def test_preconditioned_and_finite_difference():
    problem = Bratu2D(24, 6.0)
    M = problem.preconditioner(torch.zeros(1, dtype=torch.float64))
    plain = _solve(problem, preconditioner=M)
    recycled = _solve(problem, preconditioner=M, recycle=5)
    assert recycled.success.item() and problem.residual(recycled.x).abs().max() <= TOL
    assert (recycled.x - plain.x).abs().max() <= 1e-8
    assert recycled.krylov_iterations.item() <= plain.krylov_iterations.item()
    fd = _solve(problem, recycle=5, jvp="finite-difference")
    assert fd.success.item() and problem.residual(fd.x).abs().max() <= TOL


def test_unbatched_call_and_history():
    F = lambda x: x**3 + 2 * x - torch.arange(1.0, 9.0, dtype=torch.float64)
    res = torchnewton.root(F, torch.zeros(8, dtype=torch.float64), method="newton-krylov", tol=1e-12,
                           options={"recycle": 3}, record_history=True)
    assert res.success and F(res.x).abs().max() <= 1e-12
    counts = [h["krylov_iterations"] for h in res.history]
    assert counts == sorted(counts) and counts[-1] == int(res.krylov_iterations) > 0


def test_batch_falls_back_to_batched_gmres():
    problem = Bratu2D(12, 6.0)
    u0 = torch.zeros(2, 144, dtype=torch.float64)
    u0[1] = 0.1
    runs = [torchnewton.root(problem.residual, u0, method="newton-krylov", tol=TOL, batch=True, options=options)
            for options in ({}, {"recycle": 4})]
    # the same batched GMRES runs (two identical calls may differ in the last bit already)
    assert (runs[0].x - runs[1].x).abs().max() <= 1e-13
    assert torch.equal(runs[0].krylov_iterations, runs[1].krylov_iterations)
    assert runs[0].krylov_iterations.shape == (2,) and bool((runs[0].krylov_iterations > 0).all())


@pytest.mark.parametrize("bad", [-1, 2.5, True, "4", None])
def test_bad_recycle_raises(bad):
    with pytest.raises(ValueError, match="recycle"):
        torchnewton.root(lambda x: x - 1, torch.zeros(3, dtype=torch.float64), method="newton-krylov",
                         options={"recycle": bad})


def test_recycle_is_not_an_option_of_other_methods():
    with pytest.raises(ValueError, match="recycle"):
        torchnewton.root(lambda x: x - 1, torch.zeros(3, dtype=torch.float64), method="newton",
                         options={"recycle": 4})
