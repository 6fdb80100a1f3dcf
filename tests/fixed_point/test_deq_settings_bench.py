"""The digits DEQ bench gives torchnewton and torchdeq the same solver settings: on one batch of
the same model, both solve forward in the same number of evaluations of f and return the same
loss and (to the adjoint's tolerance) the same parameter gradients."""
import copy

import pytest
import torch
import torch.nn.functional as F

from torchnewton.bench.problems.digits_cnn import digits_split
from torchnewton.bench.suites import fixed_point_deq as bench


@pytest.mark.parametrize("kind, width", [("mlp", 64), ("conv", 8)])
def test_both_libraries_take_the_same_forward_solve_and_gradient(kind, width):
    images, labels, _, _ = digits_split()
    torch.manual_seed(0)
    base = bench.DigitsDEQ(kind, width)
    losses, grads, forward_evals = {}, {}, {}
    for side, attach in bench.SIDES.items():
        model, counter = copy.deepcopy(base), bench.Counter()
        stats = attach(model, counter)
        loss = F.cross_entropy(model(images[:bench.BATCH]), labels[:bench.BATCH])
        loss.backward()
        stats()
        losses[side], forward_evals[side] = float(loss), counter.forward
        grads[side] = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert 1 < counter.forward <= bench.MAX_ITER and counter.backward > 1
    assert forward_evals["torchnewton"] == forward_evals["torchdeq"]
    assert losses["torchnewton"] == pytest.approx(losses["torchdeq"], abs=1e-5)
    difference = (grads["torchnewton"] - grads["torchdeq"]).norm() / grads["torchdeq"].norm()
    assert float(difference) < 1e-3
