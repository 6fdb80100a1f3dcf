"""The digits CNN task (BatchNorm and plain variants) and the training figures beside the loss."""
from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from torchnewton.bench.peers.optimizers import adamw
from torchnewton.bench.problems.char_transformer import CharConfig, CharTask
from torchnewton.bench.problems.digits_cnn import VAL_SIZE, DigitsTask, MatrixConv2d, digits_split
from torchnewton.bench.problems.training import budget_scan, lr_sweep, train
from torchnewton.optim import param_groups


def tiny(norm: bool = True) -> DigitsTask:
    return DigitsTask(channels=(4, 8), hidden=16, batch_size=16, norm=norm)


def test_matrix_conv_without_bias_is_a_convolution():
    conv = MatrixConv2d(2, 3, bias=False)
    reference = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        reference.weight.copy_(conv.weight.view(3, 2, 3, 3))
    x = torch.randn(4, 2, 8, 8)
    assert conv.bias is None
    torch.testing.assert_close(conv(x), reference(x))


def test_batchnorm_model_layout_and_parameter_split():
    model = tiny().model(0)
    groups = param_groups(model)
    matrices = [tuple(p.shape) for p in groups[0]["params"]]
    # the three hidden matrices go to the matrix method; head, BN gains/shifts, head bias to AdamW
    assert groups[0]["use_muon"] and matrices == [(4, 9), (8, 36), (16, 128)]
    assert not groups[1]["use_muon"] and len(groups[1]["params"]) == 2 + 3 * 2
    assert sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()) == 3
    plain = tiny(norm=False).model(0)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in plain.modules())
    assert plain.conv1.bias is not None and plain.hidden.bias is not None


def test_validation_uses_running_statistics_and_restores_the_mode():
    task = tiny()
    model = task.model(0)
    # move the running statistics away from their initial values
    for seed in range(3):
        model(task.batch(torch.Generator().manual_seed(seed))[0])
    assert model.training
    loss, accuracy = task.val_loss(model), task.val_accuracy(model)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        logits = model(task.val_images)
    expected = F.cross_entropy(logits, task.val_labels).item()
    model.train()
    with torch.no_grad():
        batch_mode = F.cross_entropy(model(task.val_images), task.val_labels).item()
    assert loss == pytest.approx(expected, rel=1e-6) and loss != pytest.approx(batch_mode, rel=1e-3)
    assert accuracy == pytest.approx((logits.argmax(1) == task.val_labels).double().mean().item())


def test_split_sizes_and_bad_arguments():
    images, labels, val_images, val_labels = digits_split()
    assert len(val_labels) == VAL_SIZE == 360 and len(labels) == 1437
    bigger = digits_split(600)
    # the same permutation: the default validation split is the head of the larger one
    assert torch.equal(bigger[3][:360], val_labels) and len(bigger[1]) == 1197
    assert len(DigitsTask(val_size=600).val_labels) == 600
    with pytest.raises(ValueError, match="val_size"):
        digits_split(0)
    with pytest.raises(ValueError, match="batch_size"):
        DigitsTask(batch_size=1)
    DigitsTask(batch_size=1, norm=False)  # no BatchNorm, a single image is a valid batch


def test_training_loss_and_accuracy_are_recorded():
    task = tiny()
    curve = train(task, lambda model, lr: adamw(model, lr, lr), lr=1e-2, seed=0, steps=12, eval_every=4)
    assert len(curve.batch_loss) == 12 and all(map(math.isfinite, curve.batch_loss))
    assert curve.final_train_loss(4) == pytest.approx(statistics.fmean(curve.batch_loss[-4:]))
    assert 0.0 <= curve.val_accuracy <= 1.0
    # the recorded accuracy is that of the final model (rerun: same seed, same run)
    again = train(task, lambda model, lr: adamw(model, lr, lr), lr=1e-2, seed=0, steps=12, eval_every=4)
    assert again.val_accuracy == curve.val_accuracy and again.batch_loss == curve.batch_loss
    # the first minibatch loss is the loss of the initial model on that batch
    model = task.model(0)
    first = task.loss(model, task.batch(torch.Generator().manual_seed(0))).item()
    assert curve.batch_loss[0] == pytest.approx(first, rel=1e-6)


def test_tasks_without_accuracy_and_diverged_runs():
    char = CharTask(CharConfig(layers=1, d_model=16, heads=2, context=8), batch_size=4, val_windows=4)
    curve = train(char, lambda model, lr: adamw(model, lr, lr), lr=1e-3, seed=0, steps=2, eval_every=1)
    assert curve.val_accuracy is None and math.isfinite(curve.final_train_loss(1))
    sgd = lambda model, lr: torch.optim.SGD(model.parameters(), lr)
    sweep = lr_sweep(tiny(norm=False), sgd, (1e12,), sweep_seeds=(0,), seeds=(0,), steps=6, eval_every=2)
    assert sweep.final_train_losses(2) == [math.inf] and sweep.final_accuracies() is None


def test_budget_scan_on_the_batchnorm_model_reuses_the_sweep_runs():
    # validation (eval mode, running statistics) neither updates the BN statistics nor draws a
    # batch: a run evaluated every 6 steps trains exactly as one evaluated only at its end, so the
    # budget scan may take the full budget from the sweep
    task = tiny(norm=True)
    build = lambda model, lr: adamw(model, lr, lr)
    sweep = lr_sweep(task, build, (1e-2,), sweep_seeds=(0, 1), seeds=(0, 1), steps=12, eval_every=6)
    scan = budget_scan(task, build, lr=1e-2, seeds=(0, 1), budgets=(6, 12))
    assert scan.finals[12] == sweep.finals(1e-2)
    # a 6-step budget is its own short schedule (decaying over its last 2 steps), not the first 6
    # steps of the 12-step one (still at its peak lr there)
    assert all(scan.finals[6][s] != sweep.runs[1e-2][s].val_loss[1] for s in (0, 1))
