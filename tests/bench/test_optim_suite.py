"""The optim benchmark: its tasks, its training loop and the whole suite on a tiny budget."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

from torchnewton.bench.peers.optimizers import PEERS, OptimizerPair, adamw
from torchnewton.bench.problems.char_transformer import (
    TRAIN_FRACTION,
    UNKNOWN,
    VOCAB_SIZE,
    CharConfig,
    CharTask,
    corpus_tokens,
)
from torchnewton.bench.problems.digits_cnn import DigitsTask, MatrixConv2d
from torchnewton.bench.problems.training import (
    BudgetScan,
    budget_scan,
    interleaved_step_times,
    lr_sweep,
    schedule,
    smallest_budget,
    steps_to,
    train,
)
from torchnewton.bench.suite import BenchContext
from torchnewton.bench.suites import optim


def tiny_char() -> CharTask:
    return CharTask(CharConfig(layers=2, d_model=16, heads=2, context=8), batch_size=4, val_windows=8)


def tiny_digits() -> DigitsTask:
    # the suite's digits model (no BatchNorm: lr 0 leaves such a model exactly at its initialization)
    return DigitsTask(channels=(4, 8), hidden=16, batch_size=16, norm=optim.DIGITS_NORM)


def test_matrix_conv_is_a_convolution():
    conv = MatrixConv2d(3, 5)
    x = torch.randn(2, 3, 8, 8)
    reference = torch.nn.Conv2d(3, 5, 3, padding=1)
    with torch.no_grad():
        reference.weight.copy_(conv.weight.view(5, 3, 3, 3))
        reference.bias.copy_(torch.randn(5))
        conv.bias.copy_(reference.bias)
    assert conv.weight.shape == (5, 27)
    torch.testing.assert_close(conv(x), reference(x))


def test_char_corpus_vocabulary_and_split():
    tokens = corpus_tokens()
    assert tokens.min() >= 0 and tokens.max() == UNKNOWN and VOCAB_SIZE == 97
    task = tiny_char()
    split = int(TRAIN_FRACTION * len(tokens))
    # validation windows come from the held-out tail, the training split is the head
    assert torch.equal(task.train_tokens, tokens[:split])
    tail = tokens[split:]
    first = task.val_inputs[0]
    assert torch.equal(first, tail[: len(first)])
    inputs, targets = task.batch(torch.Generator().manual_seed(3))
    again, _ = task.batch(torch.Generator().manual_seed(3))
    assert torch.equal(inputs, again) and torch.equal(inputs[:, 1:], targets[:, :-1])


def test_digits_split_is_fixed_and_disjoint():
    task = tiny_digits()
    assert len(task.train_labels) + len(task.val_labels) == 1797 and len(task.val_labels) == 360
    assert task.train_images.max() <= 1.0 and task.train_images.min() >= 0.0
    from sklearn.datasets import load_digits

    # the two parts together are the whole data set, each image once
    counts = torch.bincount(torch.cat([task.train_labels, task.val_labels]), minlength=10)
    assert torch.equal(counts, torch.bincount(torch.as_tensor(load_digits().target), minlength=10))
    pixels = torch.cat([task.train_images, task.val_images]).sum()
    assert pixels.item() == pytest.approx(load_digits().images.sum() / 16.0, rel=1e-6)
    assert torch.equal(tiny_digits().val_labels, task.val_labels)


def test_schedule_and_steps_to():
    values = [schedule(s, 40) for s in range(40)]
    assert values[0] == 0.5 and values[1] == 1.0 and max(values) == 1.0
    assert values[-1] == pytest.approx(1 / 12) and all(b <= a for a, b in zip(values[27:], values[28:]))
    assert steps_to(1.0, [0, 5, 10], [3.0, 1.0, 0.5]) == 5
    assert steps_to(0.1, [0, 5, 10], [3.0, 1.0, 0.5]) is None


def test_smallest_budget_on_synthetic_losses():
    target = 0.5
    # the smallest reaching budget, not the first of a monotone run: a shorter budget may reach
    # (a run that overfits late) while a longer one misses
    assert smallest_budget(target, {100: 0.5, 50: 0.7, 60: 0.49, 70: 0.51}) == 60
    assert smallest_budget(target, {100: 0.5, 50: 0.7}) == 100  # equality reaches
    assert smallest_budget(target, {100: 0.52, 50: 0.7}) is None
    scan = BudgetScan(lr=0.1, seeds=(0, 1, 2), finals={50: [0.4, 0.5, 0.9], 70: [0.4, 0.5, 0.6],
                                                       80: [0.1, math.inf, 0.1], 100: [0.5, 0.5, 0.5]})
    assert scan.mean(50) == pytest.approx(0.6) and scan.mean(70) == pytest.approx(0.5)
    assert scan.std(70) == pytest.approx(0.1) and scan.mean(80) == math.inf  # a diverged seed never reaches
    assert scan.smallest_reaching(0.5 + 1e-12) == 70 and scan.smallest_reaching(0.45) is None
    assert optim.Plan(tiny_digits(), steps=300, eval_every=15, sweep_seeds=(0,), timing_rounds=1, centers={},
                      factors=(1.0,), budget_fractions=(0.5, 0.6, 0.7, 0.8)).budgets() == (150, 180, 210, 240, 300)


class _LrSpy(torch.optim.SGD):
    """SGD recording its lr at every step."""

    def __init__(self, params, lr):
        super().__init__(params, lr)
        self.seen = []

    def step(self, closure=None):
        self.seen.append(self.param_groups[0]["lr"])
        return super().step(closure)


def test_compressed_schedule_ends_at_zero_at_its_budget():
    spies = {}
    build = lambda budget: lambda model, lr: spies.setdefault(budget, _LrSpy(model.parameters(), lr))
    for budget in (20, 40):
        train(tiny_digits(), build(budget), lr=0.0625, seed=0, steps=budget, eval_every=budget)
    short, long = (torch.tensor(spies[b].seen, dtype=torch.float64) / 0.0625 for b in (20, 40))
    assert len(short) == 20 and len(long) == 40
    # warm-up 1 step and decay 6 steps of 20 (5 % and 30 %), 2 and 12 of 40
    assert short[:2].tolist() == [1.0, 1.0] and long[:3].tolist() == [0.5, 1.0, 1.0]
    decay = short[14:]
    assert torch.allclose(decay, (20 - torch.arange(14, 20, dtype=torch.float64)) / 6)
    # the decay line reaches 0 exactly at the budget: one more step of it would be lr 0
    assert decay[-1] == pytest.approx(1 / 6) and schedule(20, 20) == 0.0 and schedule(40, 40) == 0.0
    # the 20-step schedule is the 40-step one compressed: the same multiplier at the same fraction
    torch.testing.assert_close(short[14:], long[28::2])


def test_budget_scan_reruns_and_reuses_the_same_runs():
    task = tiny_digits()
    build = lambda model, lr: adamw(model, lr, lr)
    sweep = lr_sweep(task, build, (1e-2,), sweep_seeds=(0, 1), seeds=(0, 1), steps=12, eval_every=6)
    scan = budget_scan(task, build, lr=1e-2, seeds=(0, 1), budgets=(6, 12))
    # a budget run is a run of its own schedule, evaluated once at its end; the evaluations of a
    # sweep's run do not change its training, so the sweep's full-budget finals are the same runs
    assert scan.finals[12] == sweep.finals(1e-2)
    assert scan.finals[6] == [train(task, build, lr=1e-2, seed=s, steps=6, eval_every=2).final for s in (0, 1)]
    # ... and not the loss at step 6 of the 12-step schedule (no decay there yet)
    halfway = [sweep.runs[1e-2][s].val_loss[1] for s in (0, 1)]
    assert sweep.runs[1e-2][0].steps == [0, 6, 12] and all(a != b for a, b in zip(scan.finals[6], halfway))
    reused = budget_scan(task, build, lr=1e-2, seeds=(0, 1), budgets=(6, 12), known={12: [1.0, 2.0]})
    assert reused.finals == {6: scan.finals[6], 12: [1.0, 2.0]}
    with pytest.raises(ValueError, match="budgets"):
        budget_scan(task, build, lr=1e-2, seeds=(0,), budgets=(0, 12))
    with pytest.raises(ValueError, match="seeds"):
        budget_scan(task, build, lr=1e-2, seeds=(), budgets=(12,))
    with pytest.raises(ValueError, match="known"):
        budget_scan(task, build, lr=1e-2, seeds=(0, 1), budgets=(12,), known={12: [1.0]})


def test_same_seed_same_start_and_reproducible_runs():
    task = tiny_digits()
    build = lambda model, lr: adamw(model, lr, lr)
    a = train(task, build, lr=1e-2, seed=1, steps=20, eval_every=10)
    b = train(task, build, lr=1e-2, seed=1, steps=20, eval_every=10)
    c = train(task, lambda model, lr: torch.optim.SGD(model.parameters(), lr), lr=0.1, seed=1, steps=2, eval_every=1)
    assert a.steps == [0, 10, 20] and a.val_loss == b.val_loss
    assert c.val_loss[0] == a.val_loss[0]  # same initialization for every optimizer
    assert len(a.step_seconds) == 20 and a.final < a.val_loss[0]


def test_divergence_stops_the_run_and_loses_the_sweep():
    task = tiny_digits()
    sgd = lambda model, lr: torch.optim.SGD(model.parameters(), lr)
    curve = train(task, sgd, lr=1e12, seed=0, steps=10, eval_every=1)
    assert curve.diverged and curve.final == math.inf and len(curve.step_seconds) < 10
    sweep = lr_sweep(task, sgd, (1e12, 1e-2), sweep_seeds=(0,), seeds=(0,), steps=10, eval_every=5)
    assert sweep.best_lr == 1e-2 and sweep.mean_final(1e12) == math.inf


def test_lr_sweep_prefers_learning_to_standing_still():
    task = tiny_digits()
    sweep = lr_sweep(task, lambda model, lr: adamw(model, lr, lr), (0.0, 1e-2), sweep_seeds=(0,),
                     seeds=(0, 1), steps=20, eval_every=10)
    assert sweep.best_lr == 1e-2
    assert set(sweep.runs[1e-2]) == {0, 1} and set(sweep.runs[0.0]) == {0}
    frozen = sweep.runs[0.0][0]
    assert frozen.val_loss[0] == frozen.val_loss[-1]  # lr 0 leaves the model at its initialization
    steps, losses, seconds = sweep.mean_curve()
    assert steps == [0, 10, 20] and losses[-1] == pytest.approx(sum(sweep.finals(1e-2)) / 2)
    with pytest.raises(ValueError, match="sweep_seeds"):
        lr_sweep(task, lambda model, lr: adamw(model, lr, lr), (1e-2,), sweep_seeds=(5,), seeds=(0,),
                 steps=2, eval_every=1)


def test_torch_muon_pair_updates_every_parameter():
    task = tiny_digits()
    model = task.model(0)
    pair = dict((s.name, s) for s in PEERS)[optim.TORCH_MUON].build(model, 0.02, 1e-3)
    assert isinstance(pair, OptimizerPair) and {g["lr"] for g in pair.param_groups} == {0.02, 1e-3}
    before = [p.detach().clone() for p in model.parameters()]
    task.loss(model, task.batch(torch.Generator().manual_seed(0))).backward()
    pair.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_interleaved_step_times_counts():
    task = tiny_digits()
    builds = {"AdamW": (lambda model, lr: adamw(model, lr, lr), 1e-3),
              "SGD": (lambda model, lr: torch.optim.SGD(model.parameters(), lr), 1e-2)}
    times = interleaved_step_times(task, builds, rounds=3)
    assert {k: len(v) for k, v in times.items()} == {"AdamW": 3, "SGD": 3}
    assert all(t > 0 for v in times.values() for t in v)


def test_suite_on_a_tiny_budget(tmp_path):
    budget = dict(steps=4, eval_every=2, timing_rounds=2, factors=(0.5, 1.0, 2.0), budget_fractions=(0.5,))
    plans = [optim.Plan(tiny_char(), sweep_seeds=(0,), centers=optim.CHAR_CENTERS, **budget),
             optim.Plan(tiny_digits(), sweep_seeds=(0, 1, 2), centers=optim.DIGITS_CENTERS, **budget)]
    section = optim.run_plans(BenchContext(quick=False, out_dir=tmp_path), plans)
    for plan in plans:
        figures = section.figures[plan.task.name]
        ran, skipped = figures["optimizers"], figures["not_run"]
        # every optimizer either ran or is listed with the reason it did not
        assert set(ran) | set(skipped) == {s.name for s in optim.SPECS} and not set(ran) & set(skipped)
        assert {"AdamW", optim.TORCH_MUON, "pytorch_optimizer.Muon", optim.OURS} <= set(ran)
        for name, entry in ran.items():
            assert f"| {name} |" in section.markdown
            assert math.isfinite(entry["final_val_loss_mean"]) and math.isfinite(entry["final_val_loss_std"])
            assert all(math.isfinite(v) for v in entry["mean_curve"]["val_loss"])
            assert len(entry["final_val_loss_per_seed"]) == 3
            assert math.isfinite(entry["final_train_loss_mean"]) and len(entry["final_train_loss_per_seed"]) == 3
            # accuracy for the classifier only; the character model's row shows "-"
            accuracy = entry["final_val_accuracy_mean"]
            assert (0.0 <= accuracy <= 1.0) if plan.task.name == "digits-cnn" else accuracy is None
            assert entry["step_seconds_min"] > 0 and entry["step_time_speedup_vs_torch_muon"] > 0
            assert entry["best_lr"] in entry["lr_grid"]
            assert len(entry["lr_grid"]) == (1 if name == optim.CONTROL else 3)
        for name, why in skipped.items():
            assert f"- {name}: {why}" in section.markdown and "not available" in why
        assert ran["AdamW"]["steps_to_adamw_final"] == figures["adamw_steps_to_target"] is not None
        scans, target = figures["budget_scan"], figures["target_val_loss"]
        assert list(scans) == [optim.OURS, optim.TORCH_MUON, "AdamW"]
        for name, scan in scans.items():
            assert scan["budgets"] == [2, 4] and scan["lr"] == ran[name]["best_lr"]
            # the full budget's runs are the sweep's; each budget's reach is its seed mean vs the target
            assert scan["final_val_loss_per_seed"]["4"] == ran[name]["final_val_loss_per_seed"]
            for b in ("2", "4"):
                assert scan["final_val_loss_mean"][b] == pytest.approx(sum(scan["final_val_loss_per_seed"][b]) / 3)
                assert scan["reaches_target"][b] == (scan["final_val_loss_mean"][b] <= target)
            reaching = [b for b in scan["budgets"] if scan["reaches_target"][str(b)]]
            assert scan["smallest_reaching_budget"] == (min(reaching) if reaching else None)
        # AdamW reaches its own full-budget loss at the full budget at the latest
        assert scans["AdamW"]["reaches_target"]["4"] and scans["AdamW"]["fraction_of_adamw_budget"] == 1.0
        assert "reaches AdamW's loss |" in section.markdown
    json.dumps(section.figures, allow_nan=False)  # strict JSON: no inf or nan anywhere
    assert [p.name for p in section.plots] == ["optim_char-transformer.png", "optim_digits-cnn.png"]
    assert all(p.stat().st_size > 10_000 for p in section.plots)
    goal_rows = re.findall(r"^\| (?:char-transformer|digits-cnn): .* \| (?:not )?met( \(uninformative\))? \|$",
                           section.markdown,
                           flags=re.MULTILINE)
    assert len(goal_rows) == 4
    assert len(re.findall(r"reaches AdamW's final val loss .* \| budget scan: .*; curve intersection under the "
                          r"full schedule: ", section.markdown)) == 2
    assert "| final train loss | final val accuracy |" in section.markdown
    assert re.search(r"digits-cnn: .* val accuracy \d\.\d{4} vs \d\.\d{4}\)", section.markdown)
