"""Part (e) of `torchnewton bench fixed_point`: layer-parallel evaluation of a trained residual MLP.

A stack of L = 24 residual blocks g_l(h) = W₂ tanh(W₁h + b₁) + b₂ (width 16, hidden 32) after a
fixed input projection of scikit-learn's digits (64 → 16), trained for the same number of Adam
steps, same seed and learning rate, to regress the one-hot labels with a linear readout: once
plain and with SNLP's regularizer at several weights (one Identity-Newton sweep matched to the
sequential trace; weights 0.1 and 1 in quick mode, 0.01, 0.1 and 1 in full mode: the weight trades
accuracy for sweeps, and at weight 1 the blocks shrink towards zero). For each model, on 256 held-out digits (float32): the number of
Identity-Newton (IDN) and exact Newton sweeps until the output is within 1e-5 relative of the
sequential forward, and the wall time of those sweeps against the sequential forward (median of
repeats, same process, interleaved); and the readout's accuracy after 1, 2 and 3 IDN sweeps, the
paper's inference mode and what its regularizer trains for.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...nn.residual_stack import LayerParallelResidualStack
from ..suite import BenchContext, markdown_table, median_time, torch_threads

REL = 1e-5
FEW_SWEEPS = (1, 2, 3)
DEPTH, WIDTH, HIDDEN = 24, 16, 32


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.nn.functional.one_hot(torch.tensor(digits.target), 10).float()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    projection = torch.randn(64, WIDTH, generator=g) / 8.0
    x = x @ projection
    train, test = order[:-256], order[-256:]
    return x[train], y[train], x[test], y[test]


def _train(x: torch.Tensor, y: torch.Tensor, weight: float, steps: int, seed: int):
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Linear(WIDTH, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, WIDTH)) for _ in range(DEPTH)]
    stack, readout = LayerParallelResidualStack(blocks), nn.Linear(WIDTH, 10)
    optimizer = torch.optim.Adam(list(stack.parameters()) + list(readout.parameters()), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(x), (128,), generator=g)
        optimizer.zero_grad()
        loss = (readout(stack(x[batch], method="sequential")) - y[batch]).square().mean()
        if weight:
            loss = loss + weight * stack.snlp_regularizer(x[batch], sweeps=1)
        loss.backward()
        optimizer.step()
    return stack, readout


def _sweeps_to(stack: LayerParallelResidualStack, x: torch.Tensor, reference: torch.Tensor, method: str) -> int:
    for k in range(1, stack.depth + 1):
        if float((stack(x, sweeps=k, method=method) - reference).norm() / reference.norm()) <= REL:
            return k
    return stack.depth + 1  # not reached (float32 rounding)


def run_residual_stack(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    steps = 80 if ctx.quick else 600
    repeats = 3 if ctx.quick else 15
    x_train, y_train, x_test, y_test = _data(ctx.seed)
    figures: dict[str, Any] = {"depth": DEPTH, "width": WIDTH, "rel": REL, "steps": steps, "models": {}}
    rows = []
    with torch_threads(1), torch.no_grad():
        weights = (0.1, 1.0) if ctx.quick else (0.01, 0.1, 1.0)
        for name, weight in [("plain", 0.0)] + [(f"SNLP-regularized, weight {w:g}", w) for w in weights]:
            with torch.enable_grad():
                stack, readout = _train(x_train, y_train, weight, steps, ctx.seed)
            reference = stack(x_test, method="sequential")
            labels = y_test.argmax(1)
            accuracy = float((readout(reference).argmax(1) == labels).float().mean())
            few = [stack(x_test, sweeps=k) for k in FEW_SWEEPS]
            few_accuracy = [float((readout(h).argmax(1) == labels).float().mean()) for h in few]
            one_sweep = float((few[0] - reference).norm() / reference.norm())
            entry = {"weight": weight, "accuracy": accuracy, "one_sweep_relative_error": one_sweep,
                     "accuracy_after_sweeps": dict(zip(FEW_SWEEPS, few_accuracy)), "methods": {}}
            sequential_time, _ = median_time(lambda: stack(x_test, method="sequential"), repeats=repeats)
            row = [name, accuracy, " / ".join(f"{a:.2f}" for a in few_accuracy), one_sweep]
            for method in ("identity-newton", "newton"):
                k = _sweeps_to(stack, x_test, reference, method)
                # Newton's dense Jacobians (JVPs) make each sweep costly: fewer repeats in quick mode
                reps = 1 if ctx.quick and method == "newton" else repeats
                seconds, _ = median_time(lambda: stack(x_test, sweeps=min(k, DEPTH), method=method), repeats=reps,
                                         warmup=0 if reps == 1 else 1)
                entry["methods"][method] = {"sweeps": k, "seconds": seconds, "speedup": sequential_time / seconds}
                row += [k, seconds * 1e3]
            entry["sequential_seconds"] = sequential_time
            figures["models"][name] = entry
            rows.append(row + [sequential_time * 1e3])
    markdown = "\n".join([
        f"### (e) Layer-parallel residual stack (SNLP): sweeps to {REL:g} relative of the sequential forward",
        f"Residual MLP, {DEPTH} blocks of width {WIDTH}, trained {steps} Adam steps on digits with and without the "
        "SNLP regularizer (mean squared distance between the trace after one Identity-Newton sweep and the "
        "sequential trace) at several weights; 256 test digits, float32, one thread. Accuracy: argmax of the linear "
        "readout on the sequential forward, and on the output after 1 / 2 / 3 IDN sweeps (the paper's inference "
        "mode, what the regularizer trains for). Sweeps: until the output is within "
        f"{REL:g} relative of the sequential one (> depth: not reached); time: those sweeps, median of repeats, "
        "against the sequential forward in the same process. A sweep evaluates all blocks (one batched call): as "
        "much arithmetic as the whole sequential forward, so on one thread the sweeps to a tight tolerance cost "
        "several sequential forwards; the layer-parallel gain needs hardware that runs a sweep's blocks at once.",
        "",
        markdown_table(["model", "accuracy", f"accuracy after {'/'.join(map(str, FEW_SWEEPS))} IDN sweeps",
                        "1-sweep rel. error", "IDN sweeps", "IDN ms", "Newton sweeps", "Newton ms", "sequential ms"],
                       rows)])
    return markdown, figures, []
