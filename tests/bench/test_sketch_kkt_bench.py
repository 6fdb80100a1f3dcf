"""The n-sweep of the constrained logistic benchmark: projected-CG runs reach direct's KKT residual,
the figures are what the table says, the crossover is read off correctly, and the one-solve
projected-CG figures meet θ dense and matrix-free."""
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from torchnewton.bench.suite import BenchContext  # noqa: E402
from torchnewton.bench.suites import constrained_logistic as cl  # noqa: E402


def test_sweep_runs_reach_direct_kkt_residual(tmp_path):
    timing = cl._time_per_iteration(BenchContext(quick=True, out_dir=tmp_path), (20, 40), repeats=1)
    assert set(timing) == {20, 40}
    for t in timing.values():
        direct, pcg, kaczmarz = t["direct"], t[cl.PCG], t[cl.KACZMARZ]
        assert direct["status"] == pcg["status"] == "SUCCESS"
        assert direct["kkt"] < 1e-9 and pcg["kkt"] < 1e-9
        assert pcg["nit"] <= direct["nit"] + 2  # sharpened θ: Newton's local rate kept
        assert 0 < pcg["inner_per_solve"] < 40  # a handful of CG steps per KKT solve
        assert kaczmarz["nit"] == 3 and kaczmarz["inner_per_solve"] > 0
        for run in (direct, pcg, kaczmarz):
            assert run["min_s"] > 0
            assert run["min_s_per_iteration"] == pytest.approx(run["min_s"] / run["nit"])
        assert t["pcg_over_direct_whole"] == pytest.approx(pcg["min_s"] / direct["min_s"])


def test_crossover_is_the_first_n_from_which_on_projected_cg_wins():
    def ratio(r):
        return {"pcg_over_direct_whole": r}

    assert cl.crossover({30: ratio(1.4), 100: ratio(0.9), 300: ratio(1.1), 1000: ratio(0.5), 2000: ratio(0.4)}) == 1000
    assert cl.crossover({30: ratio(0.8), 100: ratio(0.9)}) == 30
    assert cl.crossover({30: ratio(1.2), 100: ratio(1.01)}) is None


def test_one_solve_projected_cg_meets_theta_dense_and_matrix_free(tmp_path):
    cost = cl._kkt_solve_cost(BenchContext(quick=True, out_dir=tmp_path), (30,), cap=20_000, repeats=1)
    for figures in cost.values():
        dense, free = figures["pcg_dense_to_theta"], figures["pcg_matrix_free_to_theta"]
        for run in (dense, free):
            assert run["reached"] and run["relative_residual"] <= cl.THETA and run["seconds"] > 0
        # the same CG on the same system, once with ∇²L formed and once through products
        assert dense["iterations"] == free["iterations"]


def test_projected_cg_sharpened_accuracy_is_superlinear_on_breast_cancer():
    import numpy as np

    problem = cl.LogisticProblem(*cl.breast_cancer(), seed=0)
    runs = {}
    for name in ("projected CG, θ fixed", "projected CG, θ sharpened", "direct"):
        iterates = [problem.x0.clone()]
        cl.solve(problem, cl.VARIANTS[name], max_iter=60, hessian=True, on_iterate=iterates.append)
        runs[name] = np.array([problem.kkt(w) for w in iterates])
    fixed, sharp, direct = runs["projected CG, θ fixed"], runs["projected CG, θ sharpened"], runs["direct"]
    assert fixed[-1] < 1e-10 and sharp[-1] < 1e-12 and direct[-1] < 1e-10
    assert len(sharp) < len(fixed) and len(sharp) <= len(direct) + 2

    def late_ratios(kkt):
        late = kkt[:-1] < 1e-3
        return kkt[1:][late] / kkt[:-1][late]

    # θ fixed at 0.1: a contraction per step bounded away from 0; θ sharpened: the last steps gain 5+ orders
    assert late_ratios(fixed).min() > 1e-3
    assert late_ratios(sharp).min() < 1e-5
