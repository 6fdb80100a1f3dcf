"""The batch benchmark's count of torch operations per batched iteration."""
import torch

from torchnewton.bench.suites import constrained_batch


class _Result:
    nit = torch.tensor([1, 3, 2])


def test_operation_count_is_dispatched_ops_over_largest_nit():
    x = torch.ones(3, dtype=torch.float64)

    def run():
        for _ in range(6):  # six operations, three "iterations"
            x.add(1.0)
        return _Result()

    assert constrained_batch.operations_per_iteration(run) == 2.0


def test_analytic_derivatives_take_fewer_operations_than_autodiff():
    x0, a, e = constrained_batch.instances(8, 0)
    counts = {kind: constrained_batch.operations_per_iteration(
        lambda kind=kind: constrained_batch.run_torchnewton(x0, a, e, analytic=kind == "analytic"))
        for kind in ("autodiff", "analytic")}
    # the fused double reverse pass of autodiff costs more operations than the hand-coded formulas
    assert 0 < counts["analytic"] < counts["autodiff"]
