"""The loop's ``freeze`` and per-member counters: the CPU row copy must equal ``torch.where``
bit for bit, and iteration counts/statuses must be those of members finishing at different
iterations, with large (row-copy) and small (``torch.where``) fields in one state."""
from dataclasses import dataclass

import torch

from torchnewton.core.status import Status
from torchnewton.solvers.loop import freeze, iterate


@dataclass
class WideState:
    x: torch.Tensor  # (B, 300): wide enough for the row copy
    scale: torch.Tensor  # (B,): masked by torch.where
    k: int


def _state(seed: int, batch: int = 7) -> WideState:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 300, generator=g, dtype=torch.float64)
    x[0, 0] = float("nan")  # NaN and -0.0 must come through as they are
    x[1, 1] = -0.0
    return WideState(x=x, scale=torch.rand(batch, generator=g, dtype=torch.float64), k=seed)


def test_freeze_matches_torch_where_bitwise_for_wide_and_narrow_fields():
    old, new = _state(0), _state(1)
    done = torch.tensor([True, False, True, True, False, False, True])
    out = freeze(done, old, new)
    expect_x = torch.where(done[:, None], old.x, new.x)
    assert torch.equal(out.x.view(torch.int64), expect_x.view(torch.int64))  # NaN payloads and -0.0 too
    assert torch.equal(out.scale, torch.where(done, old.scale, new.scale))
    assert out.k == 1
    assert out.x is not new.x and out.x is not old.x  # a new tensor, as torch.where gives
    # nothing done: the step's state comes back as it is; all done: the old values
    assert freeze(torch.zeros(7, dtype=torch.bool), old, new) is new
    everything = freeze(torch.ones(7, dtype=torch.bool), old, new, check=False)
    assert torch.equal(everything.x.view(torch.int64), old.x.view(torch.int64))


class Shrink:
    """x ← x/2 on wide rows until max|x| ≤ 1 (done) or the member's first entry is negative
    (STALLED at once)."""

    def init(self, problem, x0):
        return WideState(x=x0, scale=x0.abs().amax(-1), k=0)

    def step(self, problem, state, running):
        x = state.x / 2
        return WideState(x=x, scale=x.abs().amax(-1), k=state.k + 1)

    def terminate(self, problem, state):
        done = (state.scale <= 1) | (state.x[:, 0] < 0)
        return done, torch.where(state.x[:, 0] < 0, int(Status.STALLED), int(Status.SUCCESS))


def _start() -> torch.Tensor:
    x0 = torch.full((5, 300), 0.5, dtype=torch.float64)
    x0[:, 7] = torch.tensor([8.0, 0.5, 64.0, 2.0 ** 20, 4.0], dtype=torch.float64)
    x0[2, 0] = -1.0
    return x0


def test_members_finishing_at_different_iterations_keep_their_counts_and_values():
    out = iterate(Shrink(), None, _start(), max_iter=6)
    # member 0 needs 3 halvings, 1 is done at x0, 2 stalls at x0, 3 needs 20 (MAX_ITER), 4 needs 2
    assert out.nit.tolist() == [3, 0, 0, 6, 2]
    assert out.status.tolist() == [int(Status.SUCCESS), int(Status.SUCCESS), int(Status.STALLED),
                                   int(Status.MAX_ITER), int(Status.SUCCESS)]
    assert out.state.x[:, 7].tolist() == [1.0, 0.5, 64.0, 2.0 ** 14, 1.0]
    assert out.state.scale.tolist() == [1.0, 0.5, 64.0, 2.0 ** 14, 1.0]


def test_callback_stop_counts_the_iterations_of_running_members_only():
    out = iterate(Shrink(), None, _start(), max_iter=10, callback=lambda state: state.k >= 4)
    assert out.nit.tolist() == [3, 0, 0, 4, 2]
    assert out.status.tolist() == [int(Status.SUCCESS), int(Status.SUCCESS), int(Status.STALLED),
                                   int(Status.CALLBACK_STOP), int(Status.SUCCESS)]


def test_accelerator_style_sync_gives_the_same_result():
    # sync_every > 1 masks every iteration without host reads: the same counts and values
    a = iterate(Shrink(), None, _start(), max_iter=6)
    b = iterate(Shrink(), None, _start(), max_iter=6, sync_every=4)
    assert torch.equal(a.nit, b.nit) and torch.equal(a.status, b.status) and torch.equal(a.state.x, b.state.x)
