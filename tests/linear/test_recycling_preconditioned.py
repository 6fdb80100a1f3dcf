"""Preconditioned recycling: GCRO-DR in the flexible form (the recycled U lives in the solution
space, C = A U) with a preconditioner rebuilt for every system, and deflated CG with an SPD M."""
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from torchnewton.linear import (RecyclingSolver, amg_preconditioner, aslinearoperator, ilu_preconditioner,
                                jacobi_preconditioner)
from torchnewton.linear.iterative import cg, gmres
from torchnewton.linear.iterative.common import Counted
from torchnewton.linear.recycling import ReusedPreconditioner
from torchnewton.linear.recycling.gcrodr import gcrodr


def helmholtz(N: int, shift: float) -> sp.csr_matrix:
    h = 1.0 / (N + 1)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N)) / h**2
    return (sp.kron(sp.eye(N), T) + sp.kron(T, sp.eye(N)) - shift * sp.eye(N * N)).tocsr()


def convection_diffusion(N: int, nu: float, angle: float) -> sp.csr_matrix:
    h = 1.0 / (N + 1)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N)) / h**2
    back = sp.diags([-1.0, 1.0], [-1, 0], shape=(N, N)) / h
    I = sp.eye(N)
    return (nu * (sp.kron(I, T) + sp.kron(T, I)) + np.cos(angle) * sp.kron(I, back)
            + np.sin(angle) * sp.kron(back, I)).tocsr()


def test_flexible_gcrodr_keeps_A_U_equal_C_and_never_reapplies_a_changed_preconditioner():
    rng = np.random.default_rng(0)
    U = S = None
    for shift in (50.0, 52.0, 54.0):
        A = helmholtz(14, shift)
        b = torch.from_numpy(rng.standard_normal(A.shape[0]))
        ops = Counted(aslinearoperator(A), ilu_preconditioner(A, drop_tol=1e-2, fill_factor=2.0))
        tol = 1e-9 * float(b.norm())
        x, U, S, C, nit, status, rnorm = gcrodr(ops, b, torch.zeros_like(b), U, m=16, k=5, tol=tol,
                                                maxiter=2000, S=S)
        assert status.name == "SUCCESS" and rnorm <= tol
        exact = spla.spsolve(A.tocsc(), b.numpy())
        assert np.linalg.norm(x.numpy() - exact) <= 1e-6 * np.linalg.norm(exact)
        # one M⁻¹ per Arnoldi step and none to re-project U on the new matrix and the new M
        assert ops.nprecond == nit
        AU = torch.from_numpy((A @ U.numpy().T).T)
        assert torch.allclose(AU, C, atol=1e-8 * float(AU.abs().max()))
        assert torch.allclose(C @ C.T, torch.eye(C.shape[0], dtype=C.dtype), atol=1e-10)


def test_recycling_with_a_rebuilt_amg_preconditioner_saves_iterations_and_keeps_solutions():
    pytest.importorskip("pyamg")
    rng = np.random.default_rng(1)
    solver = RecyclingSolver("gcrodr", recycle=6, restart=20, rtol=1e-8, warm_start=False)
    recycled = plain = 0
    for shift in (60.0, 62.0, 64.0, 66.0):
        A = helmholtz(20, shift)
        b = torch.from_numpy(rng.standard_normal(A.shape[0]))
        M = amg_preconditioner(A, symmetry="symmetric")
        result = solver.solve(A, b, M=M)
        reference = gmres(A, b, rtol=1e-8, restart=20, M=M, maxiter=4000)
        assert result.success and reference.success
        exact = spla.spsolve(A.tocsc(), b.numpy())
        assert np.linalg.norm(result.x.numpy() - exact) <= 1e-5 * np.linalg.norm(exact)
        assert result.nprecond == result.nit  # no extra V-cycles for the recycled space
        recycled += result.nit
        plain += reference.nit
    assert recycled < plain, (recycled, plain)


def test_preconditioned_recycling_on_nonsymmetric_sequence_with_ilu():
    rng = np.random.default_rng(2)
    solver = RecyclingSolver("gcrodr", recycle=8, restart=24, rtol=1e-8)
    systems = [(convection_diffusion(16, nu, angle), torch.from_numpy(rng.standard_normal(256)))
               for nu, angle in ((0.02, 0.3), (0.021, 0.35), (0.022, 0.4))]
    results = solver.solve_sequence(systems, order="given", preconditioner=lambda op: ilu_preconditioner(op))
    for (A, b), result in zip(systems, results):
        assert result.success
        assert np.linalg.norm(b.numpy() - A @ result.x.numpy()) <= 1e-8 * float(b.norm()) * (1 + 1e-9)


def test_preconditioned_deflated_cg_agrees_with_cg():
    rng = np.random.default_rng(3)
    solver = RecyclingSolver("cg", recycle=6, rtol=1e-9, harvest=20)
    for scale in (1.0, 1.1, 1.2):
        diag = scale * (1.0 + rng.uniform(0, 4, 400))
        A = (helmholtz(20, 0.0) + sp.diags(diag)).tocsr()
        b = torch.from_numpy(rng.standard_normal(400))
        M = jacobi_preconditioner(A)
        result = solver.solve(A, b, M=M)
        reference = cg(A, b, rtol=1e-9, M=M)
        assert result.success and reference.success
        assert torch.allclose(result.x, reference.x, rtol=0, atol=1e-6 * float(reference.x.abs().max()))


def test_reused_preconditioner_rebuilds_after_growth_and_solve_sequence_reports_iterations():
    built = []

    def build(A):
        built.append(A)
        return ilu_preconditioner(A)
    schedule = ReusedPreconditioner(build, growth=1.2)
    rng = np.random.default_rng(4)
    # the velocity turns by a quarter: an ILU of the first system ages on the last ones
    systems = [(convection_diffusion(16, 0.02, angle), torch.from_numpy(rng.standard_normal(256)))
               for angle in (0.1, 0.12, 0.14, 1.5, 1.52)]
    solver = RecyclingSolver("gcrodr", recycle=4, restart=20, rtol=1e-8)
    results = solver.solve_sequence(systems, order="given", preconditioner=schedule)
    for (A, b), result in zip(systems, results):
        assert result.success
        assert np.linalg.norm(b.numpy() - A @ result.x.numpy()) <= 1e-8 * float(b.norm()) * (1 + 1e-9)
    # the rule replayed on the iteration counts solve_sequence reported: a build for the first
    # system and one after every solve above growth × the baseline of its preconditioner
    expected, baseline = 1, None
    for result in results[:-1]:
        if baseline is None:
            baseline = result.nit
        elif result.nit > 1.2 * baseline:
            expected, baseline = expected + 1, None
    assert schedule.builds == len(built) == expected
    assert 1 < expected < len(systems)  # the turned velocity did age the first factor


def test_reused_preconditioner_rule_and_bad_input():
    schedule = ReusedPreconditioner(lambda A: object(), growth=2.0)
    first = schedule(None)
    schedule.record(10)
    schedule.record(20)            # not above 2 × 10: kept
    assert schedule(None) is first
    schedule.record(21)            # above: the next call builds a new one
    second = schedule(None)
    assert second is not first and schedule.builds == 2
    schedule.record(3)             # the new baseline
    schedule.record(7)
    assert schedule(None) is not second and schedule.builds == 3
    with pytest.raises(ValueError, match="growth"):
        ReusedPreconditioner(lambda A: None, growth=0.5)
    with pytest.raises(TypeError, match="build"):
        ReusedPreconditioner(3)
