"""The public scipy-shaped solvers against scipy.sparse.linalg, on random and PDE systems."""
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from torchnewton.core.status import Status
from torchnewton.linear import (aslinearoperator, amg_preconditioner, bicgstab, ilu_preconditioner,
                                jacobi_preconditioner, sor, ssor_preconditioner)
from torchnewton.linear.iterative import cg, gmres, minres


def laplacian(N: int) -> sp.csr_matrix:
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N))
    I = sp.eye(N)
    return (sp.kron(I, T) + sp.kron(T, I)).tocsr()


def convection_diffusion(N: int, velocity: float) -> sp.csr_matrix:
    D = sp.diags([-1.0, 1.0], [-1, 0], shape=(N, N))  # upwind first difference
    return (laplacian(N) + velocity * sp.kron(sp.eye(N), D)).tocsr()


def random_spd(n: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    Q = g.standard_normal((n, n))
    return Q @ Q.T + n * np.eye(n)


RTOL = 1e-8


@pytest.mark.parametrize("name", ["cg", "minres", "gmres", "bicgstab"])
def test_pde_systems_reach_scipy_residual(name):
    symmetric = name in ("cg", "minres")
    A = laplacian(24) if symmetric else convection_diffusion(24, 0.5)
    b = np.random.default_rng(1).standard_normal(A.shape[0])
    ours = {"cg": cg, "minres": minres, "gmres": gmres, "bicgstab": bicgstab}[name]
    theirs = {"cg": spla.cg, "minres": spla.minres, "gmres": spla.gmres, "bicgstab": spla.bicgstab}[name]
    kwargs = {"restart": 30} if name == "gmres" else {}
    result = ours(A, torch.from_numpy(b), rtol=RTOL, maxiter=5000, **kwargs)
    x_ref, info = theirs(A, b, rtol=RTOL, maxiter=5000, **kwargs)
    exact = spla.spsolve(A.tocsc(), b)
    assert result.success and result.status == Status.SUCCESS and result.info == 0
    true_residual = np.linalg.norm(b - A @ result.x.numpy()) / np.linalg.norm(b)
    assert true_residual <= RTOL and abs(result.residual_norm / np.linalg.norm(b) - true_residual) < 1e-12
    assert np.linalg.norm(result.x.numpy() - exact) <= 1e-5 * np.linalg.norm(exact)
    scipy_residual = np.linalg.norm(b - A @ x_ref) / np.linalg.norm(b)
    assert true_residual <= max(scipy_residual, RTOL) * 1.0 + 1e-15
    assert result.nmatvec >= result.nit >= 1


@pytest.mark.parametrize("seed", range(3))
def test_random_dense_batched_and_sparse_inputs(seed):
    n = 30
    A = random_spd(n, seed)
    B = np.random.default_rng(seed + 10).standard_normal((3, n))
    exact = np.linalg.solve(A, B.T).T
    for form in (torch.from_numpy(A), torch.from_numpy(A).to_sparse_csr(), sp.csr_matrix(A),
                 spla.aslinearoperator(A)):
        for solver in (cg, minres, gmres, bicgstab):
            result = solver(form, torch.from_numpy(B), rtol=1e-10, maxiter=2000)
            assert bool(result.success.all()), (solver.__name__, type(form))
            assert np.allclose(result.x.numpy(), exact, rtol=1e-7, atol=1e-9)
            assert result.x.shape == (3, n) and result.nit.shape == (3,)


def test_matrix_free_callable_and_preconditioners_agree():
    A = laplacian(20)
    b = torch.from_numpy(np.random.default_rng(3).standard_normal(A.shape[0]))
    dense = torch.from_numpy(A.toarray())
    op = aslinearoperator(lambda X: X @ dense.T, n=A.shape[0], dtype=torch.float64)
    plain = cg(op, b, rtol=RTOL)
    exact = spla.spsolve(A.tocsc(), b.numpy())
    for M in (jacobi_preconditioner(A), ssor_preconditioner(A, 1.5), amg_preconditioner(A)):
        result = cg(A, b, rtol=RTOL, M=M)
        assert result.success and result.nprecond >= result.nit
        assert np.linalg.norm(result.x.numpy() - exact) <= 1e-5 * np.linalg.norm(exact)
    strong = cg(A, b, rtol=RTOL, M=amg_preconditioner(A))
    assert strong.nit < plain.nit / 3  # AMG is a real preconditioner, not the identity
    C = convection_diffusion(20, 1.0)
    unpreconditioned = gmres(C, b, rtol=RTOL, restart=40)
    for solver in (gmres, bicgstab):  # SuperLU's ILU is not symmetric: a GMRES/BiCGSTAB preconditioner
        result = solver(C, b, rtol=RTOL, M=ilu_preconditioner(C, fill_factor=2.0, drop_tol=1e-4))
        assert result.success and result.nmatvec < unpreconditioned.nmatvec
        assert np.linalg.norm(C @ result.x.numpy() - b.numpy()) <= RTOL * b.norm().item() * 1.0001


def test_sor_converges_and_matches_solution():
    A = laplacian(10)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    exact = spla.spsolve(A.tocsc(), b.numpy())
    gauss_seidel = sor(A, b, omega=1.0, rtol=1e-9)
    over = sor(A, b, omega=1.5, rtol=1e-9)
    assert gauss_seidel.success and over.success and over.nit < gauss_seidel.nit
    assert np.allclose(over.x.numpy(), exact, rtol=1e-7)


def test_statuses_nonconvergence_breakdown_nan():
    A = laplacian(16)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    short = cg(A, b, rtol=1e-12, maxiter=3)
    assert not short.success and short.status == Status.MAX_ITER and short.info == 3
    assert gmres(A, b, rtol=1e-12, maxiter=3).status == Status.MAX_ITER
    indefinite = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    rhs = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    broken = cg(indefinite, rhs, rtol=1e-10)
    assert broken.status == Status.BREAKDOWN and broken.info < 0 and not broken.success
    assert minres(indefinite, rhs, rtol=1e-10).success  # MINRES handles the same system
    # BiCGSTAB's classical breakdown: r̂ᵀ A r = 0 with r̂ = r
    rotation = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    assert bicgstab(rotation, torch.tensor([1.0, 0.0], dtype=torch.float64)).status == Status.BREAKDOWN
    nan_matrix = torch.from_numpy(A.toarray())
    nan_matrix[3, 4] = float("nan")
    for solver in (cg, minres, gmres, bicgstab):
        result = solver(nan_matrix, b, rtol=1e-8, maxiter=50)
        assert result.status == Status.NONFINITE and not result.success, solver.__name__
    indefinite_2x2 = torch.tensor([[1.0, 3.0], [3.0, 1.0]], dtype=torch.float64)  # SOR diverges on it
    diverging = sor(indefinite_2x2, torch.ones(2, dtype=torch.float64), omega=1.5, rtol=1e-8, maxiter=5000)
    assert diverging.status in (Status.NONFINITE, Status.MAX_ITER) and not diverging.success


def test_callback_sees_iterates_and_can_stop():
    A = laplacian(12)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    seen = []
    result = cg(A, b, rtol=1e-10, callback=lambda x: seen.append(x.clone()))
    assert len(seen) == result.nit
    stopped = bicgstab(A, b, rtol=1e-12, callback=lambda x: True)
    assert stopped.status == Status.CALLBACK_STOP and stopped.nit == 1


def test_bad_input_raises_before_work():
    A = laplacian(4)
    b = torch.ones(16, dtype=torch.float64)
    with pytest.raises(ValueError, match="rtol"):
        cg(A, b, rtol=-1.0)
    with pytest.raises(ValueError, match="maxiter"):
        gmres(A, b, maxiter=0)
    with pytest.raises(ValueError, match="restart"):
        gmres(A, b, restart=0)
    with pytest.raises(ValueError, match="b has 15"):
        cg(A, torch.ones(15, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating"):
        cg(A, torch.ones(16, dtype=torch.long))
    with pytest.raises(ValueError, match="finite"):
        minres(A, torch.full((16,), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="x0"):
        bicgstab(A, b, x0=torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        aslinearoperator(torch.ones(3, 4))
    with pytest.raises(ValueError, match="n="):
        aslinearoperator(lambda x: x)
    with pytest.raises(ValueError, match="omega"):
        sor(A, b, omega=2.5)
    with pytest.raises(TypeError, match="M must be"):
        cg(A, b, M=3)
