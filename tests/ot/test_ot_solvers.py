"""Entropic OT solvers: marginals, agreement with POT (exact EMD and sinkhorn_log), batching, statuses."""
import math

import ot as pot
import pytest
import torch

from torchnewton import Status
from torchnewton.ot import METHODS, sinkhorn, squared_euclidean

F64 = torch.float64


def uniform(n, dtype=F64):
    return torch.full((n,), 1.0 / n, dtype=dtype)


def random_problem(n, m, seed, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=gen, dtype=dtype) + 0.1
    b = torch.rand(m, generator=gen, dtype=dtype) + 0.1
    x, y = torch.rand(n, 2, generator=gen, dtype=dtype), torch.rand(m, 2, generator=gen, dtype=dtype)
    return a / a.sum(), b / b.sum(), squared_euclidean(x, y)


def gauge(f, g, a, b):
    """The result's gauge ⟨f, a⟩ = ⟨g, b⟩, applied to other potentials."""
    t = ((f * a).sum() - (g * b).sum()) / (2 * a.sum())
    return f - t, g + t


@pytest.mark.parametrize("method", METHODS)
def test_marginals_meet_tolerance(method):
    a, b, C = random_problem(40, 30, 0)
    res = sinkhorn(a, b, C, 0.02, method=method, tol=1e-10)
    assert res.success and res.status == Status.SUCCESS
    assert res.marginal_error <= 1e-10
    assert (res.plan.sum(1) - a).abs().sum() + (res.plan.sum(0) - b).abs().sum() <= 1e-10
    assert torch.allclose(res.plan, torch.exp((res.f[:, None] + res.g[None, :] - C) / 0.02))
    assert torch.isclose(res.cost, (C * res.plan).sum())


def test_cost_approaches_exact_emd_as_reg_shrinks():
    a, b, C = random_problem(30, 30, 1)
    exact = pot.emd2(a.numpy(), b.numpy(), C.numpy())
    gaps = []
    for reg in (0.05, 0.01, 0.002, 0.0005):
        res = sinkhorn(a, b, C, reg)
        assert res.success
        gap = float(res.cost) - exact
        # ⟨C, P_ε⟩ ≥ OT and the entropic bias is at most ε·log(nm) (plan entropy range)
        assert -1e-9 <= gap <= reg * math.log(30 * 30)
        gaps.append(gap)
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-3 * exact


@pytest.mark.parametrize("method", METHODS)
def test_potentials_match_pot_sinkhorn_log(method):
    a, b, C = random_problem(25, 35, 2)
    reg = 0.05
    plan_pot, log = pot.bregman.sinkhorn_log(a.numpy(), b.numpy(), C.numpy(), reg, stopThr=1e-14,
                                             numItermax=100000, log=True)
    f_pot, g_pot = gauge(torch.from_numpy(reg * log["log_u"]), torch.from_numpy(reg * log["log_v"]), a, b)
    res = sinkhorn(a, b, C, reg, method=method, tol=1e-13)
    assert res.success
    assert (res.f - f_pot).abs().max() < 1e-6
    assert (res.g - g_pot).abs().max() < 1e-6
    assert (res.plan - torch.from_numpy(plan_pot)).abs().max() < 1e-8
    assert abs(float(res.cost) - pot.sinkhorn2(a.numpy(), b.numpy(), C.numpy(), reg, method="sinkhorn_log",
                                               stopThr=1e-14, numItermax=100000)) < 1e-8


def test_reg_cost_is_primal_and_dual_value():
    a, b, C = random_problem(20, 20, 3)
    reg = 0.03
    res = sinkhorn(a, b, C, reg, tol=1e-12)
    P = res.plan
    primal = (C * P).sum() + reg * (P * (torch.log(P) - 1)).sum()
    assert torch.isclose(res.reg_cost, primal, rtol=0, atol=1e-10)
    assert torch.isclose((res.f * a).sum(), (res.g * b).sum())


def test_sparse_newton_needs_far_fewer_iterations_at_weak_reg():
    gen = torch.Generator().manual_seed(4)
    n = 150
    C = torch.rand(n, n, generator=gen, dtype=F64)
    newton = sinkhorn(uniform(n), uniform(n), C, 1 / 400, method="sparse-newton")
    plain = sinkhorn(uniform(n), uniform(n), C, 1 / 400, method="sinkhorn", max_iter=20000)
    assert newton.success and plain.success
    assert newton.n_newton >= 1
    assert newton.nit * 20 < plain.nit
    assert (newton.plan - plain.plan).abs().sum() < 1e-8


def test_batched_matches_separate_solves_and_broadcasts():
    problems = [random_problem(20, 15, s) for s in range(3)]
    a = torch.stack([p[0] for p in problems])
    b = torch.stack([p[1] for p in problems])
    C = torch.stack([p[2] for p in problems]).reshape(3, 1, 20, 15).expand(3, 2, 20, 15)
    res = sinkhorn(a.unsqueeze(1), b.unsqueeze(1), C, 0.01)
    assert res.plan.shape == (3, 2, 20, 15) and res.status.shape == (3, 2) and res.f.shape == (3, 2, 20)
    assert bool(res.success.all())
    for i, (ai, bi, Ci) in enumerate(problems):
        single = sinkhorn(ai, bi, Ci, 0.01)
        assert torch.allclose(res.plan[i, 0], single.plan, atol=1e-10)
        assert torch.allclose(res.cost[i, 1], single.cost, atol=1e-10)
    shared = sinkhorn(uniform(20), uniform(15), torch.stack([p[2] for p in problems]), 0.01)
    assert shared.plan.shape == (3, 20, 15) and bool(shared.success.all())


def test_batch_members_keep_their_own_status():
    a, b, C = random_problem(20, 20, 5)
    easy, hard = 0.2 * C, 20 * C  # about 13 and 3,700 Sinkhorn iterations
    res = sinkhorn(a, b, torch.stack([easy, hard]), 0.05, method="sinkhorn", max_iter=100)
    assert res.status.tolist() == [int(Status.SUCCESS), int(Status.MAX_ITER)]
    assert res.success.tolist() == [True, False]
    assert res.marginal_error[0] <= 1e-9 < res.marginal_error[1]


def test_zero_mass_entries_give_zero_rows_and_no_nan():
    a, b, C = random_problem(12, 10, 6)
    a = a.clone(); b = b.clone()
    a[[0, 5]] = 0; b[3] = 0
    a, b = a / a.sum(), b / b.sum()
    for method in METHODS:
        res = sinkhorn(a, b, C, 0.01, method=method)
        assert res.success
        for t in (res.plan, res.f, res.g, res.cost, res.reg_cost):
            assert torch.isfinite(t).all()
        assert res.plan[[0, 5]].abs().max() == 0 and res.plan[:, 3].abs().max() == 0
        assert res.marginal_error <= 1e-9


def test_float32_converges_at_default_tolerance():
    a, b, C = random_problem(30, 30, 7, dtype=torch.float32)
    for method in METHODS:
        res = sinkhorn(a, b, C, 0.01, method=method)
        assert res.success and res.plan.dtype == torch.float32
        # the error recomputed from the returned (gauge-shifted) plan may differ by rounding
        assert res.marginal_error <= 1.5 * 1.2e-5


def test_unreachable_tolerance_is_reported_not_faked():
    a, b, C = random_problem(30, 30, 8, dtype=torch.float32)
    res = sinkhorn(a, b, C, 0.01, tol=1e-12)
    assert not res.success and res.status in (Status.STALLED, Status.MAX_ITER)
    res = sinkhorn(a.double(), b.double(), C.double(), 1e-3, method="sinkhorn", max_iter=5)
    assert res.status == Status.MAX_ITER and not res.success and res.nit == 5
    assert res.marginal_error > 1e-9


def test_history_and_callback():
    a, b, C = random_problem(20, 20, 9)
    seen = []
    res = sinkhorn(a, b, C, 0.005, log=True, callback=lambda s: seen.append(float(s.error[0])))
    assert len(res.history) == res.nit + 1 and len(seen) == res.nit
    errors = [float(h["marginal_error"]) for h in res.history]
    assert errors[-1] == pytest.approx(seen[-1]) and errors[-1] <= 1e-9
    assert sum(bool(h["newton"]) for h in res.history) == res.n_newton
    stopped = sinkhorn(a, b, C, 0.005, callback=lambda s: True)
    assert stopped.status == Status.CALLBACK_STOP and stopped.nit == 1


def test_eps_scaling_options():
    a, b, C = random_problem(30, 30, 10)
    res = sinkhorn(a, b, C, 1e-3, method="sinkhorn-eps-scaling", log=True,
                   options={"decay": 0.3, "stage_max_iter": 30})
    assert res.success
    regs = [float(h["reg"]) for h in res.history]
    assert regs[0] > 1e-3 and regs[-1] == pytest.approx(1e-3) and regs == sorted(regs, reverse=True)
    reference = sinkhorn(a, b, C, 1e-3)
    assert (res.plan - reference.plan).abs().sum() < 1e-8


def test_print_result_is_readable():
    a, b, C = random_problem(5, 5, 11)
    text = repr(sinkhorn(a, b, C, 0.1))
    assert "SUCCESS" in text and "marginal_error" in text


def test_pot_backends_agree_and_its_stopping_error_is_the_l2_marginal_error():
    """What the POT benchmark relies on: sinkhorn_log on torch tensors (POT's torch backend) takes the
    same iterates as on numpy arrays, and its recorded error is ‖(P1 − a, Pᵀ1 − b)‖₂ (rows exact)."""
    gen = torch.Generator().manual_seed(12)
    n = 40
    C = torch.rand(n, n, generator=gen, dtype=F64)
    a = uniform(n)
    reg = 1 / 100
    plan_np, log_np = pot.bregman.sinkhorn_log(a.numpy(), a.numpy(), C.numpy(), reg, stopThr=1e-9,
                                               numItermax=100000, log=True)
    plan_t, log_t = pot.bregman.sinkhorn_log(a, a.clone(), C, reg, stopThr=1e-9, numItermax=100000, log=True)
    assert log_np["niter"] == log_t["niter"] > 100
    assert (log_t["log_u"] - torch.from_numpy(log_np["log_u"])).abs().max() < 1e-12
    assert (log_t["log_v"] - torch.from_numpy(log_np["log_v"])).abs().max() < 1e-12
    residual = torch.cat([plan_t.sum(1) - a, plan_t.sum(0) - a])
    assert (plan_t.sum(1) - a).abs().max() < 1e-15
    assert float(residual.norm()) == pytest.approx(float(log_t["err"][-1]), rel=1e-6)
    ours = sinkhorn(a, a.clone(), C, reg, method="sinkhorn")
    assert ours.success and (ours.plan - plan_t).abs().sum() < 1e-7


def test_bench_pot_run_in_warm_started_chunks_equals_one_call():
    """The OT benchmark runs POT in warm-started chunks (to release its log between them): same
    iteration count, same recorded errors and same plan as one call, converged or capped."""
    from torchnewton.bench.suites.ot import _pot

    gen = torch.Generator().manual_seed(3)
    n = 60
    C = torch.rand(n, n, generator=gen, dtype=F64)
    a = uniform(n)
    for cap in (10**6, 157):
        plan, log = pot.bregman.sinkhorn_log(a, a.clone(), C, 1 / 150, numItermax=cap, stopThr=1e-9, log=True,
                                             warn=False)
        run = _pot(a, a.clone(), C, 1 / 150, cap, chunk=30)
        assert run["nit"] == log["niter"] + 1 == (311 if cap > 311 else cap)
        assert run["errors"] == [float(e) for e in log["err"]]
        assert run["converged"] == (cap > 311)
        residual = torch.cat([plan.sum(1) - a, plan.sum(0) - a])
        assert run["error_l2"] == pytest.approx(float(residual.norm()), rel=1e-9)
