"""The op-lean forms of the batched constrained solvers give the values of the forms they replace, bit for bit."""
import itertools
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torchnewton.core.status import Status
from torchnewton.linear import batched
from torchnewton.solvers.constrained import kkt, lean
from torchnewton.solvers.constrained.merit import augmented_lagrangian, merit_weights, weighted_merit
from torchnewton.solvers.constrained.termination import KKTFields, KKTTermination

D = torch.float64


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _operations(fn) -> int:
    with _Count() as counter:
        fn()
    return counter.count


@pytest.mark.parametrize("shape", [(256, 2, 4), (3, 50, 30), (7, 1, 2), (5, 0, 3), (4, 3, 0)])
@pytest.mark.parametrize("expanded", [False, True])
def test_products_match_matmul_bitwise_in_fewer_operations(shape, expanded):
    g = torch.Generator().manual_seed(0)
    B, m, n = shape
    A = torch.randn(1 if expanded else B, m, n, dtype=D, generator=g).expand(B, m, n)
    v, u = torch.randn(B, n, dtype=D, generator=g), torch.randn(B, m, dtype=D, generator=g)
    # the one bmm of linear.batched against the composite matmul it stands for
    assert torch.equal(batched.matvec(A, v), (A @ v.unsqueeze(-1)).squeeze(-1))
    assert torch.equal(batched.rmatvec(A, u), (u.unsqueeze(-2) @ A).squeeze(-2))
    assert _operations(lambda: batched.rmatvec(A, u)) < _operations(lambda: (u.unsqueeze(-2) @ A).squeeze(-2))


def test_products_broadcast_one_matrix_over_a_batch_of_vectors():
    g = torch.Generator().manual_seed(2)
    A, v, u = (torch.randn(*s, dtype=D, generator=g) for s in ((1, 3, 4), (5, 4), (5, 3)))
    torch.testing.assert_close(batched.matvec(A, v), torch.einsum("mn,bn->bm", A[0], v), rtol=1e-13, atol=0)
    assert torch.equal(batched.rmatvec(A, u), (u.unsqueeze(-2) @ A).squeeze(-2))
    assert batched.matvec(A, v).shape == (5, 3) and batched.rmatvec(A, u).shape == (5, 4)


def test_finite_and_constant():
    t = torch.tensor([0.0, -0.0, 1e308, -1e-320, float("inf"), -float("inf"), float("nan")], dtype=D)
    assert torch.equal(lean.finite(t), torch.isfinite(t))
    zero = lean.constant(0.0, t)
    assert zero.dim() == 0 and zero.dtype == D and lean.constant(0.0, t) is zero
    assert lean.constant(3, torch.zeros(2, dtype=torch.long)).dtype == torch.long


def test_merit_with_hoisted_weights_is_the_augmented_lagrangian_bitwise():
    g = torch.Generator().manual_seed(1)
    f, c, gl, lam = (torch.randn(*s, dtype=D, generator=g) for s in ((64,), (64, 3), (64, 5), (64, 3)))
    mu, nu = torch.rand(64, dtype=D, generator=g) * 10, torch.rand(64, dtype=D, generator=g)
    # the formula as written before the penalties were hoisted out of the line search
    reference = f + (c * (lam + 0.5 * mu.unsqueeze(-1) * c)).sum(-1)
    weights = merit_weights(mu, nu)
    assert torch.equal(weighted_merit(*weights, f, c, None, lam), reference)
    assert torch.equal(weighted_merit(*weights, f, c, gl, lam), reference + 0.5 * nu * (gl * gl).sum(-1))
    assert torch.equal(augmented_lagrangian(f, c, gl, lam, mu, 0.3), reference + 0.5 * 0.3 * (gl * gl).sum(-1))


def _reference_status(tol, patience, unbounded, state, scale, infeasible_code):
    """The status rules as one chain of masked tests (the form before the lean rewrite)."""
    optimality = state.optimality / scale
    feasible = state.violation <= tol
    converged = (optimality <= tol * state.multiplier_scale) & feasible & (state.complementarity <= tol)
    size = state.x.abs().amax(-1)
    nonfinite = ~(torch.isfinite(state.f) & torch.isfinite(size))
    open_ = ~converged
    infeasible = open_ & (state.infeasible_count >= 2)
    unbound = open_ & feasible & ((state.f < -unbounded) | (size > unbounded))
    failed = open_ & (state.failure != 0)
    stalled = open_ & (state.stall_count >= patience)
    status = torch.full_like(state.failure, int(Status.RUNNING))
    status = torch.where(stalled, int(Status.STALLED), status)
    status = torch.where(failed, state.failure, status)
    status = torch.where(infeasible, infeasible_code, status)
    status = torch.where(unbound, int(Status.UNBOUNDED), status)
    status = torch.where(nonfinite, int(Status.NONFINITE), status)
    status = torch.where(converged, int(Status.SUCCESS), status)
    return converged | nonfinite | infeasible | unbound | failed | stalled, status


def test_termination_matches_the_masked_chain_on_every_combination():
    # one member per combination of the seven conditions (each on or off)
    rows = list(itertools.product([False, True], repeat=7))
    B = len(rows)
    flags = torch.tensor(rows)
    conv_opt, feas, compl_ok, nonfin, infeas, failed, stalled = flags.unbind(-1)
    x = torch.ones(B, 3, dtype=D)
    x[nonfin & (torch.arange(B) % 2 == 0), 1] = float("nan")
    f = torch.zeros(B, dtype=D)
    f[nonfin & (torch.arange(B) % 2 == 1)] = float("inf")
    f[(torch.arange(B) % 3 == 0) & ~nonfin] = -1e20  # unbounded below where also feasible
    state = KKTFields(x=x, f=f, optimality=torch.where(conv_opt, 1e-12, 1.0).to(D),
                      violation=torch.where(feas, 1e-12, 1.0).to(D),
                      complementarity=torch.where(compl_ok, 0.0, 1.0).to(D),
                      multiplier_scale=torch.ones(B, dtype=D),
                      infeasible_count=torch.where(infeas, 2, 0), failure=torch.where(failed, int(Status.SINGULAR), 0),
                      best_error=torch.ones(B, dtype=D), stall_count=torch.where(stalled, 30, 0))
    problem = SimpleNamespace(scale=torch.full((B,), 0.5, dtype=D), m=0)  # m = 0: infeasibility is "locally"
    termination = KKTTermination(tol=1e-8, infeasibility_tol=1e-4)
    done, status = termination(problem, state)
    ref_done, ref_status = _reference_status(1e-8, 25, 1e15, state, problem.scale,
                                             torch.full((B,), int(Status.LOCALLY_INFEASIBLE)))
    assert torch.equal(done, ref_done)
    assert torch.equal(status[done], ref_status[done])  # codes are read only where done
    assert {int(s) for s in status[done]} >= {int(Status.SUCCESS), int(Status.NONFINITE), int(Status.UNBOUNDED),
                                              int(Status.LOCALLY_INFEASIBLE), int(Status.SINGULAR),
                                              int(Status.STALLED)}


@pytest.mark.parametrize("kind", ["convex", "indefinite"])
def test_direct_solve_with_the_gram_cache_is_the_uncached_solve(kind):
    g = torch.Generator().manual_seed(2)
    B, n, m = 32, 5, 2
    J = torch.randn(B, m, n, dtype=D, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(B, n, n, dtype=D, generator=g))
    spectrum = torch.rand(B, n, dtype=D, generator=g) + (0.5 if kind == "convex" else -0.9)
    W = Q @ torch.diag_embed(spectrum) @ Q.mT
    K = torch.cat([torch.cat([W, J.mT], -1), torch.cat([J, torch.zeros(B, m, m, dtype=D)], -1)], -2)
    rhs = torch.randn(B, n + m, dtype=D, generator=g)
    zeros = torch.zeros(B, dtype=torch.long)
    gram: dict = {}
    first = kkt._direct(K, rhs, n, zeros, gram)
    assert set(gram) == {"JtJ", "size"}
    shifted = K + torch.diag_embed(torch.cat([torch.full((n,), 0.3, dtype=D), torch.zeros(m, dtype=D)]).expand(B, -1))
    for cached, plain in zip(kkt._direct(shifted, rhs, n, zeros, gram), kkt._direct(shifted, rhs, n, zeros)):
        assert torch.equal(cached, plain)
    for cached, plain in zip(first, kkt._direct(K, rhs, n, zeros)):
        assert torch.equal(cached, plain)


def test_constant_keeps_signed_zeros_and_number_types_apart():
    like = torch.zeros(1, dtype=D)
    assert torch.signbit(lean.constant(-0.0, like)) and not torch.signbit(lean.constant(0.0, like))
    assert lean.constant(1, like) is not lean.constant(1.0, like)
