from dataclasses import dataclass

import torch

from torchnewton.core.status import Status
from torchnewton.solvers.loop import iterate


@dataclass
class HalvingState:
    x: torch.Tensor


class Halving:
    """x ← x/2 until |x| ≤ 1; a member whose x is negative fails with STALLED."""

    def init(self, problem, x0):
        return HalvingState(x=x0)

    def step(self, problem, state, running):
        return HalvingState(x=state.x / 2)

    def terminate(self, problem, state):
        value = state.x[:, 0]
        done = (value.abs() <= 1) | (value < 0)
        status = torch.where(value < 0, int(Status.STALLED), int(Status.SUCCESS))
        return done, status

    def record(self, problem, state):
        return {"x": state.x[:, 0].clone()}


def test_loop_freezes_members_counts_iterations_and_sets_statuses():
    x0 = torch.tensor([[8.0], [0.5], [-4.0], [1024.0]])
    out = iterate(Halving(), None, x0, max_iter=5, record_history=True)
    assert out.nit.tolist() == [3, 0, 0, 5]
    assert out.state.x[:, 0].tolist() == [1.0, 0.5, -4.0, 32.0]
    assert out.status.tolist() == [int(Status.SUCCESS), int(Status.SUCCESS), int(Status.STALLED), int(Status.MAX_ITER)]
    assert len(out.history) == 6


def test_callback_stop_is_reported():
    out = iterate(Halving(), None, torch.tensor([[64.0]]), max_iter=10, callback=lambda s: True)
    assert out.status.item() == int(Status.CALLBACK_STOP) and out.nit.item() == 1
