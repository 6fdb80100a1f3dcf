"""The matrix-free column of the constrained logistic benchmark's n-sweep: the matrix-free sqp takes
the dense projected-CG run's iterations to the same KKT residual, its figures are what the table
says, and its crossover is read off its own ratio."""
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from torchnewton.bench.suite import BenchContext  # noqa: E402
from torchnewton.bench.suites import constrained_logistic as cl  # noqa: E402


def test_sweep_matrix_free_column_matches_the_dense_projected_cg_run(tmp_path):
    timing = cl._time_per_iteration(BenchContext(quick=True, out_dir=tmp_path), (20, 50), repeats=1)
    for t in timing.values():
        dense, free, direct = t[cl.PCG], t[cl.MATRIX_FREE], t["direct"]
        assert free["status"] == dense["status"] == "SUCCESS"
        assert free["nit"] == dense["nit"] and free["kkt_solves"] == dense["kkt_solves"]
        assert free["inner_per_solve"] == pytest.approx(dense["inner_per_solve"])
        assert free["kkt"] < 1e-9 and free["kkt"] == pytest.approx(dense["kkt"], rel=1e-3, abs=1e-13)
        assert t["free_over_direct_whole"] == pytest.approx(free["min_s"] / direct["min_s"])
        assert t["free_over_pcg_per_iteration"] == pytest.approx(free["min_s_per_iteration"] / dense["min_s_per_iteration"])
    # the two projected-CG variants differ in how products with ∇²L are made, nothing else
    assert cl.TIMED[cl.PCG][0] == {**cl.TIMED[cl.MATRIX_FREE][0], "matrix_free": False}
    assert (cl.TIMED[cl.PCG][2], cl.TIMED[cl.MATRIX_FREE][2]) == ("hess", "hessp")


def test_logistic_hessp_matches_the_dense_hessian_across_points():
    import torch

    problem = cl.LogisticProblem(*cl.synthetic(15, 1), seed=1)
    v = torch.randn(problem.n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for w in (problem.x0, problem.x0 + 0.3, problem.x0):  # the cached weights follow w
        torch.testing.assert_close(problem.hessp(w, v), problem.hessian(w) @ v)


def test_matrix_free_crossover_reads_its_own_ratio():
    timing = {30: {"pcg_over_direct_whole": 1.4, "free_over_direct_whole": 1.6},
              100: {"pcg_over_direct_whole": 1.1, "free_over_direct_whole": 0.9},
              300: {"pcg_over_direct_whole": 0.7, "free_over_direct_whole": 0.4}}
    assert cl.crossover(timing) == 300 and cl.crossover(timing, "free_over_direct_whole") == 100
