"""GCRO-DR internals: harmonic Ritz selection (complex pairs), the recycled pair's invariant
A Uᵀ = Cᵀ with C orthonormal, and recycling on an indefinite sequence where restarted GMRES stalls."""
import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from torchnewton.linear import RecyclingSolver, aslinearoperator
from torchnewton.linear.iterative import gmres
from torchnewton.linear.iterative.common import Counted
from torchnewton.linear.recycling.gcrodr import cycle, smallest_harmonic_ritz


def test_smallest_harmonic_ritz_keeps_both_halves_of_complex_pairs():
    # eigenvalues 0.1 ± 0.2i, 0.3 ± 0.05i, 5, 7 (block diagonal, then a random similarity)
    blocks = scipy.linalg.block_diag([[0.1, 0.2], [-0.2, 0.1]], [[0.3, 0.05], [-0.05, 0.3]], [[5.0]], [[7.0]])
    rng = np.random.default_rng(0)
    S = rng.standard_normal((6, 6)) + 3 * np.eye(6)
    lhs = np.linalg.solve(S, blocks @ S)
    P = smallest_harmonic_ritz(lhs, np.eye(6), 4)
    assert P.shape == (6, 4)
    # the span is the invariant subspace of the two complex pairs: lhs P stays in span P
    residual = lhs @ P - P @ np.linalg.lstsq(P, lhs @ P, rcond=None)[0]
    assert np.linalg.norm(residual) <= 1e-10 * np.linalg.norm(lhs)
    assert np.allclose(P.T @ P, np.eye(4), atol=1e-12)
    # three asked of two pairs: the first pair and the real part of the second, no NaN anywhere
    assert np.all(np.isfinite(smallest_harmonic_ritz(lhs, np.eye(6), 3)))


def helmholtz(N: int, shift: float) -> sp.csr_matrix:
    h = 1.0 / (N + 1)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N)) / h**2
    return (sp.kron(sp.eye(N), T) + sp.kron(T, sp.eye(N)) - shift * sp.eye(N * N)).tocsr()


def test_cycle_keeps_the_recycled_pair_consistent():
    A = helmholtz(12, 30.0)
    ops = Counted(aslinearoperator(A), None)
    b = torch.from_numpy(np.random.default_rng(0).standard_normal(144))
    out = cycle(ops, torch.zeros_like(b), b.clone(), None, None, None, m=30, k=6, tol=0.0, budget=30)
    assert out.U.shape == (6, 144) and out.C.shape == (6, 144)
    assert torch.allclose(out.C @ out.C.T, torch.eye(6, dtype=torch.float64), atol=1e-10)
    AU = torch.from_numpy((A @ out.U.numpy().T).T)
    assert torch.allclose(AU, out.C, atol=1e-8 * float(AU.abs().max()))
    # the recurrence residual is the true one
    assert torch.allclose(out.r, b - torch.from_numpy(A @ out.x.numpy()), atol=1e-9)
    # a second cycle with the recycled pair keeps the invariant and lowers the residual
    again = cycle(ops, out.x, out.r, out.U, out.S, out.C, m=30, k=6, tol=0.0, budget=24)
    AU = torch.from_numpy((A @ again.U.numpy().T).T)
    assert torch.allclose(AU, again.C, atol=1e-8 * float(AU.abs().max()))
    assert again.r.norm() < out.r.norm()


def test_recycling_beats_restarted_gmres_on_an_indefinite_sequence():
    # −Δ − s: two negative eigenvalues (2π², 5π² < s); restarted GMRES(20) crawls on them
    rng = np.random.default_rng(1)
    solver = RecyclingSolver("gcrodr", recycle=8, restart=28, rtol=1e-8)
    recycled = plain = 0
    for shift in (55.0, 56.0, 57.0, 58.0):
        A = helmholtz(24, shift)
        b = torch.from_numpy(rng.standard_normal(24 * 24))
        result = solver.solve(A, b)
        reference = gmres(A, b, rtol=1e-8, restart=20, maxiter=20000)
        assert result.success and reference.success
        exact = spla.spsolve(A.tocsc(), b.numpy())
        assert np.linalg.norm(result.x.numpy() - exact) <= 1e-5 * np.linalg.norm(exact)
        recycled += result.nmatvec
        plain += reference.nmatvec
    assert recycled * 3 < plain, (recycled, plain)
