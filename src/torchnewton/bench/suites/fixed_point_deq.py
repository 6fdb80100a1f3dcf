"""Part (a) of `torchnewton bench fixed_point`: the same deep-equilibrium model on scikit-learn's
digits trained with ``torchnewton.nn.DEQ`` and with ``torchdeq`` (Geng & Kolter, the DEQ library).

Both sides get the same cell, initial weights, data order, optimizer (Adam) and epochs, and the
same solver settings, side by side (torchdeq's name first):

* forward: Anderson, ``m = 6`` stored iterates = ``memory = 5`` stored differences (torchdeq's m
  counts iterates, torchnewton's differences), mixing ``tau`` = ``mixing`` = 1, regularization
  ``lam = 1e-4`` = ``regularization = 1e-4`` with ``regularization_form = "weights"`` (the same
  absolute penalty λ‖α‖² on the combination weights: both produce the same iterates, to
  rounding, checked in tests/fixed_point/test_deq_settings_anderson.py), ``f_stop_mode = "abs"``
  with ``f_tol`` = ``tol`` = 1e-4 on the per-sample ‖f(z) − z‖₂ (``norm = "2"``), at most 30
  evaluations of f per solve (``f_max_iter = 30`` counts evaluations, ``max_iter = 29`` counts
  iterations after the one at z₀);
* backward: implicit differentiation (``ift = True`` / ``backward = "implicit"``), the adjoint
  fixed point w = g + Jᵀw solved by the same Anderson (m, λ and mixing as forward), at most 30
  evaluations, and no Jacobian-free fallback on the torchnewton side (``fallback = None``;
  torchdeq has none).

Differences that remain, none of them a solver setting: torchdeq stops when the worst sample
of the batch meets the tolerance, torchnewton freezes each sample when it does (both spend the
same batched evaluations); torchdeq's adjoint stops at an absolute 1e-6 (its default), torchnewton's
at 1e-4 relative to the incoming gradient, and starts from 0 where torchnewton's starts from g (one
evaluation ahead); torchdeq returns f applied to its best image f(z), torchnewton f(z) at its best z.
With these settings the two runs stay within a few validation images of each other per seed.
torchnewton's own defaults (``memory = 10``, the regularization relative to each difference's
size, the fallback) converge in fewer evaluations; they are not what this comparison measures.

Models: an MLP cell f(z, u) = tanh(W z + u) of width 64 (u = a linear injection of the 64
pixels), and a convolutional cell f(z, u) = tanh(conv₃ₓ₃(z) + u) with 16 channels on the 8×8
images (u = a convolution of the image); both cells start with operator norm 0.5 in z. The
head is linear on the flattened equilibrium state. torchnewton's Anderson runs
without its safeguard (the DEQ default), so both sides spend one evaluation per iteration.
Forward+backward time per batch is measured interleaved (the two libraries alternate, in
alternating order, on the same batch); forward and backward evaluations of f are counted by
wrapping the solvers' maps.

Accuracy is compared over seeds (3 quick, 5 full), each seed giving both libraries the same
initial weights and data order; the two count as equal when the difference of their mean final
accuracies is at most 2·s_pooled/√seeds (s_pooled² the mean of the two sample variances), and
the per-seed differences are reported too. Quick mode trains the conv cell on 14 of the 22
batches of each epoch to fit three seeds into its time budget. The absolute λ = 1e-4 matters:
at the sizes of these residuals and incoming gradients (rows far below 1e-2) it pulls the
combination weights toward uniform, so both Anderson solves average their last iterates rather
than extrapolate, a damping that the accuracy of both sides owes to (with λ = 1e-8 torchdeq's
MLP training diverged on one seed of five, measured once, outside this suite).
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...nn import DEQ
from ..problems.digits_cnn import digits_split
from ..suite import BenchContext, markdown_table, torch_threads

TOL = 1e-4
MAX_ITER = 30
MEMORY = 6  # torchdeq's m: stored iterates, i.e. MEMORY − 1 stored differences in torchnewton's Anderson
LAMBDA = 1e-4  # torchdeq's default lam: absolute, on the combination weights
BATCH = 64
LR = 2e-3


class MLPCell(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)
        with torch.no_grad():  # start contractive: spectral norm 0.5
            self.linear.weight.mul_(0.5 / torch.linalg.matrix_norm(self.linear.weight, 2))

    def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(z) + u)


class ConvCell(nn.Module):
    def __init__(self, channels: int, side: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():  # start contractive: operator norm 0.5 on side×side images
            self.conv.weight.mul_(0.5 / _conv_operator_norm(self.conv.weight, channels, side))

    def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(z) + u)


def _conv_operator_norm(weight: torch.Tensor, channels: int, side: int, iterations: int = 50) -> float:
    """‖K‖₂ of the bias-free same-padded convolution, by power iteration on KᵀK."""
    v = torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(0))
    for _ in range(iterations):
        v = F.conv_transpose2d(F.conv2d(v, weight, padding=1), weight, padding=1)
        v = v / v.norm()
    return float(F.conv2d(v, weight, padding=1).norm())


class DigitsDEQ(nn.Module):
    """inject → equilibrium layer (``solve(cell, u)``) → head; the solver is the only difference."""

    def __init__(self, kind: str, width: int):
        super().__init__()
        self.kind = kind
        if kind == "mlp":
            self.inject, self.cell, self.head = nn.Linear(64, width), MLPCell(width), nn.Linear(width, 10)
        else:
            self.inject, self.cell = nn.Conv2d(1, width, 3, padding=1), ConvCell(width)
            self.head = nn.Linear(width * 64, 10)
        self.solve: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        u = self.inject(images.flatten(1) if self.kind == "mlp" else images)
        z = self.solve(self.cell, u)
        return self.head(z.flatten(1))


class Counter:
    """Counts the calls of the maps a solver iterates (forward f, backward adjoint map)."""

    def __init__(self):
        self.forward = self.backward = 0


def torchnewton_side(model: DigitsDEQ, counter: Counter) -> Callable[[], dict]:
    # the same evaluation budget as torchdeq, whose limit counts evaluations of f: torchnewton's
    # counts iterations after the evaluation at z₀, so MAX_ITER − 1 of them make MAX_ITER evaluations
    deq = DEQ(model.cell, method="anderson", tol=TOL, max_iter=MAX_ITER - 1, norm="2", backward_tol=TOL,
              backward_max_iter=MAX_ITER - 1, fallback=None,
              options={"memory": MEMORY - 1, "regularization": LAMBDA, "regularization_form": "weights"})
    model.add_module("deq", deq)

    def solve(cell: nn.Module, u: torch.Tensor) -> torch.Tensor:
        return deq(u, torch.zeros_like(u))

    model.solve = solve

    def stats() -> dict:
        s = deq.last_stats
        counter.forward += s.nfev
        counter.backward += s.backward_nfev or 0
        return {"residual": float(s.residual.max()), "unconverged": int((~s.success).sum())}

    return stats


def torchdeq_side(model: DigitsDEQ, counter: Counter) -> Callable[[], dict]:
    from torchdeq import get_deq
    from torchdeq.solver import anderson_solver, register_solver

    def counted(kind: str):
        def solver(func, x0, **kwargs):
            def counting(z):
                setattr(counter, kind, getattr(counter, kind) + 1)
                return func(z)
            # the backward solve gets no solver_kwargs from torchdeq: set both solves' m and λ here
            return anderson_solver(counting, x0, **{**kwargs, "m": MEMORY, "lam": LAMBDA})
        return solver

    register_solver("bench_anderson_forward", counted("forward"))
    register_solver("bench_anderson_backward", counted("backward"))
    deq = get_deq(core="indexing", ift=True, f_solver="bench_anderson_forward", b_solver="bench_anderson_backward",
                  f_max_iter=MAX_ITER, b_max_iter=MAX_ITER, f_tol=TOL, b_stop_mode="abs", f_stop_mode="abs")
    last: dict[str, Any] = {}

    def solve(cell: nn.Module, u: torch.Tensor) -> torch.Tensor:
        z_out, info = deq(lambda z: cell(z, u), torch.zeros_like(u), solver_kwargs={"m": MEMORY, "lam": LAMBDA})
        last["info"] = info
        return z_out[-1]

    model.solve = solve

    def stats() -> dict:
        residual = last["info"]["abs_lowest"]
        return {"residual": float(residual.max()), "unconverged": int((residual > TOL).sum())}

    return stats


SIDES = {"torchnewton": torchnewton_side, "torchdeq": torchdeq_side}


def _accuracy(model: DigitsDEQ, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(images[i:i + 256]).argmax(-1) == labels[i:i + 256]).sum())
                      for i in range(0, len(labels), 256))
    model.train()
    return correct / len(labels)


def train_pair(kind: str, width: int, epochs: int, seed: int, ctx: BenchContext,
               batches: int | None = None) -> dict[str, Any]:
    """Train the same model with both libraries, interleaved batch by batch; ``batches`` caps the
    batches per epoch (the first ones of each epoch's permutation; None: the whole epoch)."""
    train_x, train_y, val_x, val_y = digits_split()
    torch.manual_seed(seed)
    base = DigitsDEQ(kind, width)
    models, optimizers, counters, stats = {}, {}, {}, {}
    for side, attach in SIDES.items():
        models[side] = copy.deepcopy(base)
        counters[side] = Counter()
        stats[side] = attach(models[side], counters[side])
        optimizers[side] = torch.optim.Adam(models[side].parameters(), lr=LR)
    order = torch.Generator().manual_seed(seed)
    record = {side: {"step_s": [], "loss": [], "accuracy": [], "forward_evals": [], "backward_evals": [],
                     "unconverged": 0, "max_residual": 0.0} for side in SIDES}
    step = 0
    for _ in ctx.track(range(epochs), desc=f"deq {kind} seed {seed}"):
        permutation = torch.randperm(len(train_y), generator=order)
        epoch_loss = {side: [] for side in SIDES}
        for start in list(range(0, len(train_y) - BATCH + 1, BATCH))[:batches]:
            index = permutation[start:start + BATCH]
            images, labels = train_x[index], train_y[index]
            sides = list(SIDES) if step % 2 == 0 else list(SIDES)[::-1]
            step += 1
            for side in sides:
                model, counter = models[side], counters[side]
                forward0, backward0 = counter.forward, counter.backward
                optimizers[side].zero_grad()
                begin = time.perf_counter()
                loss = F.cross_entropy(model(images), labels)
                loss.backward()
                elapsed = time.perf_counter() - begin
                optimizers[side].step()
                info = stats[side]()
                r = record[side]
                r["step_s"].append(elapsed)
                r["forward_evals"].append(counter.forward - forward0)
                r["backward_evals"].append(counter.backward - backward0)
                r["unconverged"] += info["unconverged"]
                r["max_residual"] = max(r["max_residual"], info["residual"])
                epoch_loss[side].append(float(loss.detach()))
        for side in SIDES:
            record[side]["loss"].append(statistics.fmean(epoch_loss[side]))
            record[side]["accuracy"].append(_accuracy(models[side], val_x, val_y))
    return record


def run_deq(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    # (cell, width, epochs, batches per epoch): quick mode trains the costlier conv cell on the
    # first 14 of the 22 batches of each epoch, so that three seeds fit its time budget
    configs = [("mlp", 64, 3, None), ("conv", 16, 2, 14)] if ctx.quick else [("mlp", 64, 15, None), ("conv", 16, 6, None)]
    seeds = [ctx.seed + s for s in range(3 if ctx.quick else 5)]
    figures: dict[str, Any] = {}
    rows = []
    with torch_threads(1):
        for kind, width, epochs, batches in configs:
            runs = [train_pair(kind, width, epochs, seed, ctx, batches) for seed in seeds]
            summary = {side: _summarize([run[side] for run in runs]) for side in SIDES}
            figures[kind] = {"width": width, "epochs": epochs, "batches_per_epoch": batches, "seeds": seeds, **summary,
                             "accuracy": _accuracy_verdict(runs),
                             "time_ratio_torchdeq_over_torchnewton": summary["torchdeq"]["step_median_s"]
                             / summary["torchnewton"]["step_median_s"],
                             # the same batch's two steps, taken back to back: robust to a drifting machine load
                             "paired_time_ratio_median": statistics.median(
                                 a / b for run in runs for a, b in zip(run["torchdeq"]["step_s"], run["torchnewton"]["step_s"])),
                             "curves": {side: [run[side]["accuracy"] for run in runs] for side in SIDES}}
            for side in SIDES:
                s = summary[side]
                rows.append([kind, side, f"{s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f}", s["step_median_s"] * 1e3,
                             s["step_min_s"] * 1e3, s["forward_evals_mean"], s["backward_evals_mean"],
                             s["unconverged_fraction"], f"{s['max_residual']:.1e}"])
    plots = [_plot(figures, ctx)]
    ratios = ", ".join(f"{k}: {figures[k]['time_ratio_torchdeq_over_torchnewton']:.2f}x (median of the per-batch "
                       f"ratios {figures[k]['paired_time_ratio_median']:.2f}x)" for k, *_ in configs)
    verdicts = " ".join(f"{k}: {figures[k]['accuracy']['text']}." for k, *_ in configs)
    budget = ", ".join(f"{k} {e} epochs" + (f" of {b} batches" if b else "") for k, _, e, b in configs)
    markdown = "\n".join([
        "### (a) DEQ on scikit-learn's digits: torchnewton.nn.DEQ vs torchdeq",
        "",
        f"Same cell, initial weights, data order and Adam (lr {LR}), batch {BATCH}, and the same solver settings: "
        f"Anderson storing {MEMORY} iterates (torchdeq m = {MEMORY}, torchnewton memory = {MEMORY - 1} differences), "
        f"mixing 1, the same absolute penalty λ = {LAMBDA:g} on the combination weights (torchdeq lam, torchnewton "
        "regularization with regularization_form=\"weights\": the same iterates), forward "
        f"to ‖f(z) − z‖₂ ≤ {TOL:g} per sample, at most {MAX_ITER} evaluations of f per solve; implicit backward by the "
        "same Anderson on the adjoint fixed point, no Jacobian-free fallback. "
        "Time: forward + backward of one batch (optimizer step excluded), one thread, "
        "the libraries alternating on each batch; median and min over all steps. Evaluations of f per batch "
        "(forward solve; backward: adjoint iterations, one VJP each). Unconverged: fraction of training samples "
        "whose forward solve missed the tolerance. Accuracy on the 360 held-out images after the last epoch, "
        f"mean ± std (sample) over {len(seeds)} seeds ({budget}); each seed gives both libraries the same "
        "initial weights and data order.",
        "",
        markdown_table(["cell", "library", "val accuracy", "fwd+bwd median (ms)", "min (ms)", "fwd evals",
                        "bwd evals", "unconverged", "max residual"], rows),
        "",
        f"Per-step time ratio torchdeq / torchnewton (>1: torchnewton faster): {ratios}. "
        "Goal: no slower than torchdeq per step, equal accuracy (met when torchnewton's mean is not below "
        "torchdeq's by more than the seed spread; a mean above it by more is reported as higher).",
        "",
        f"Accuracy, torchnewton − torchdeq (rule: equal when |difference of the means| ≤ 2·s_pooled/√seeds, "
        f"s_pooled² the mean of the two sample variances): {verdicts}",
    ])
    return markdown, figures, plots


def _accuracy_verdict(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Final accuracies of both libraries over the seeds: the difference of the means, the bound
    2·s_pooled/√n under which it counts as within the seed spread, and the per-seed (paired)
    differences, which share initial weights and data order."""
    ours = [run["torchnewton"]["accuracy"][-1] for run in runs]
    theirs = [run["torchdeq"]["accuracy"][-1] for run in runs]
    n = len(runs)
    difference = statistics.fmean(ours) - statistics.fmean(theirs)
    paired = [a - b for a, b in zip(ours, theirs)]
    if n < 2:
        return {"difference": difference, "paired": paired, "bound": None, "equal": None, "not_worse": None,
                "text": f"{difference:+.3f} over one seed, no spread to judge it by"}
    bound = 2 * ((statistics.variance(ours) + statistics.variance(theirs)) / 2) ** 0.5 / n ** 0.5
    equal = abs(difference) <= bound
    # "equal accuracy" in the goal guards against speed bought with accuracy: a torchnewton mean
    # above torchdeq's by more than the spread is reported as such and does not fail the goal
    not_worse = difference >= -bound
    verdict = ("equal within the seed spread" if equal else
               "torchnewton higher beyond the seed spread (not worse)" if not_worse else
               "NOT equal: torchnewton lower beyond the seed spread")
    return {"difference": difference, "paired": paired, "bound": bound, "equal": equal, "not_worse": not_worse,
            "text": f"{difference:+.3f} (bound {bound:.3f}; per seed " + ", ".join(f"{d:+.3f}" for d in paired)
                    + f"): {verdict}"}


def _summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    steps = [t for run in runs for t in run["step_s"]]
    accuracies = [run["accuracy"][-1] for run in runs]
    samples = sum(len(run["step_s"]) for run in runs) * BATCH
    return {"accuracy_mean": statistics.fmean(accuracies),
            "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "step_median_s": statistics.median(steps), "step_min_s": min(steps),
            "forward_evals_mean": statistics.fmean(e for run in runs for e in run["forward_evals"]),
            "backward_evals_mean": statistics.fmean(e for run in runs for e in run["backward_evals"]),
            "unconverged_fraction": sum(run["unconverged"] for run in runs) / samples,
            "max_residual": max(run["max_residual"] for run in runs),
            "final_loss_mean": statistics.fmean(run["loss"][-1] for run in runs)}


def _plot(figures: dict[str, Any], ctx: BenchContext):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(figures)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for side, curves in figures[kind]["curves"].items():
            for i, curve in enumerate(curves):
                ax.plot(range(1, len(curve) + 1), curve, marker="o", label=side if i == 0 else None,
                        color="C0" if side == "torchnewton" else "C1")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"DEQ {kind} on digits")
        ax.legend()
    fig.tight_layout()
    path = ctx.out_dir / "fixed_point_deq_digits.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
