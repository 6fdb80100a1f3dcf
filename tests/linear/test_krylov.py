import torch
from hypothesis import given, settings, strategies as st

from torchnewton.core.status import Status
from torchnewton.linear import DenseOperator, MatrixFreeOperator, jacobi
from torchnewton.linear.krylov import cg, gmres, minres


def spd_system(seed: int, batch: int, n: int, shift: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    A = M @ M.transpose(-1, -2) + shift * torch.eye(n, dtype=torch.float64)
    b = torch.randn(batch, n, generator=g, dtype=torch.float64)
    return A, b


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 4), n=st.integers(1, 24))
def test_cg_and_minres_agree_with_torch_solve_on_spd(seed, batch, n):
    A, b = spd_system(seed, batch, n)
    exact = torch.linalg.solve(A, b)
    for solver in (cg, minres):
        solution = solver(A, b, rtol=1e-12, max_iter=10 * n)
        assert (solution.status == int(Status.SUCCESS)).all()
        error = (solution.x - exact).norm(dim=-1) / exact.norm(dim=-1).clamp(min=1e-300)
        cond = torch.linalg.cond(A)
        assert (error <= 1e-12 * cond + 1e-9).all(), (solver.__name__, error, cond)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 4), n=st.integers(1, 20))
def test_gmres_agrees_with_torch_solve_on_nonsymmetric(seed, batch, n):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(batch, n, n, generator=g, dtype=torch.float64) + 3 * n**0.5 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(batch, n, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(A, b)
    solution = gmres(A, b, rtol=1e-12, restart=n)
    assert (solution.status == int(Status.SUCCESS)).all()
    assert torch.allclose(solution.x, exact, rtol=1e-8, atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 16))
def test_minres_solves_symmetric_indefinite(seed, n):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(2, n, n, generator=g, dtype=torch.float64)
    Q = torch.linalg.qr(M)[0]
    eigenvalues = torch.linspace(1, 2, n, dtype=torch.float64) * torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    A = Q @ torch.diag_embed(eigenvalues.expand(2, n)) @ Q.transpose(-1, -2)
    b = torch.randn(2, n, generator=g, dtype=torch.float64)
    solution = minres(A, b, rtol=1e-12)
    assert torch.allclose(solution.x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-10)


def test_restarted_gmres_and_preconditioners():
    torch.manual_seed(0)
    n = 60
    A = torch.randn(3, n, n, dtype=torch.float64) + 15 * torch.eye(n, dtype=torch.float64)
    A = A * torch.logspace(0, 2, n, dtype=torch.float64)  # badly scaled columns
    b = torch.randn(3, n, dtype=torch.float64)
    exact = torch.linalg.solve(A, b)
    plain = gmres(A, b, rtol=1e-10, restart=10, max_iter=2000)
    preconditioned = gmres(A, b, rtol=1e-10, restart=10, max_iter=2000, preconditioner=jacobi(DenseOperator(A)))
    assert (preconditioned.status == int(Status.SUCCESS)).all()
    assert torch.allclose(preconditioned.x, exact, rtol=1e-7)
    assert preconditioned.iterations.sum() < plain.iterations.sum()


def test_cg_reports_negative_curvature_and_max_iter_honestly():
    A = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)).unsqueeze(0)
    b = torch.ones(1, 3, dtype=torch.float64)
    solution = cg(A, b)
    assert solution.status.item() == int(Status.NEGATIVE_CURVATURE)
    p = solution.direction
    assert (p @ A[0] @ p.T).item() <= 0
    A_spd, b_spd = spd_system(1, 2, 30, shift=1e-4)
    limited = cg(A_spd, b_spd, rtol=1e-14, max_iter=3)
    assert (limited.status == int(Status.MAX_ITER)).all()
    assert (limited.iterations == 3).all()


def test_steihaug_cg_stays_in_trust_region():
    A, b = spd_system(3, 4, 10)
    radius = torch.tensor([1e-3, 1e-1, 1.0, 1e6], dtype=torch.float64)
    solution = cg(A, b, radius=radius, rtol=1e-12)
    norms = solution.x.norm(dim=-1)
    assert (norms <= radius * (1 + 1e-10)).all()
    assert solution.on_boundary[:2].all()
    assert not solution.on_boundary[3]
    assert torch.allclose(solution.x[3], torch.linalg.solve(A[3], b[3]), rtol=1e-8)


def test_members_freeze_independently():
    A, b = spd_system(5, 3, 12)
    b[1] = 0  # already solved
    solution = cg(A, b, rtol=1e-12)
    assert solution.iterations[1] == 0
    assert torch.equal(solution.x[1], torch.zeros(12, dtype=torch.float64))
    assert (solution.status == int(Status.SUCCESS)).all()


def test_matrix_free_operator_matches_dense():
    A, b = spd_system(7, 2, 8)
    op = MatrixFreeOperator(lambda v: torch.einsum("bij,bj->bi", A, v), (2, 8, 8), dtype=A.dtype, device="cpu")
    assert torch.allclose(op.to_dense(), A)
    assert torch.allclose(cg(op, b, rtol=1e-12).x, torch.linalg.solve(A, b), rtol=1e-8)
