"""`torchnewton bench fixed_point`: torchnewton.nn.DEQ against torchdeq, and torchnewton.fixed_point
against Picard iteration and scipy.optimize.fixed_point.

(a) :mod:`.fixed_point_deq`: the same deep-equilibrium MLP and convolutional net on scikit-learn's
    digits, trained with ``torchnewton.nn.DEQ`` and with ``torchdeq`` (same cell, weights, data
    order, solver settings and epochs): forward/backward evaluations, forward+backward time per
    batch, accuracy.
(b) :mod:`.fixed_point_contractions`: evaluations of T to solve contractions with spread
    spectra: Anderson against Picard and ``scipy.optimize.fixed_point``.
(c) :mod:`.fixed_point_monotone`: variance-reduced Halpern against Halpern and extragradient on a
    finite-sum monotone inclusion (a regularized bilinear game): single-component oracle calls.
(e) :mod:`.fixed_point_residual_stack`: a trained residual MLP evaluated layer-parallel (Newton
    over depth) against its sequential forward, with and without the regularizer that trains for it.

Quick mode (the default) runs in about a minute on one core; ``--full`` trains longer, over
three seeds, and adds larger and harder contractions.
"""
from __future__ import annotations

from ..suite import BenchContext, Section
from .fixed_point_contractions import run_contractions
from .fixed_point_deq import run_deq
from .fixed_point_monotone import run_monotone
from .fixed_point_residual_stack import run_residual_stack


def run(ctx: BenchContext) -> Section:
    deq_markdown, deq_figures, deq_plots = run_deq(ctx)
    contraction_markdown, contraction_figures, contraction_plots = run_contractions(ctx)
    monotone_markdown, monotone_figures, monotone_plots = run_monotone(ctx)
    stack_markdown, stack_figures, stack_plots = run_residual_stack(ctx)
    return Section(title="fixed_point: DEQ vs torchdeq, Anderson vs Picard and scipy, variance-reduced Halpern, "
                         "layer-parallel residual stacks",
                   markdown="\n\n".join([deq_markdown, contraction_markdown, monotone_markdown, stack_markdown]),
                   figures={"deq_digits": deq_figures, "contractions": contraction_figures,
                            "monotone": monotone_figures, "residual_stack": stack_figures},
                   plots=deq_plots + contraction_plots + monotone_plots + stack_plots)
