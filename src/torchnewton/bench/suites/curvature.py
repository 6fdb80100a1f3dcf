"""Benchmark of ``torchnewton.curvature`` and the second-order optimizers built on it.

Three parts, each side by side with its peers in one process:

- (a) a differentiable DSP model with a handful of parameters (one-pole smoother and feed-forward
  compressor) fitted by ``NewtonRaphson`` against Adam and L-BFGS;
- (b) an MLP and a small CNN on scikit-learn's digits: KFAC, Shampoo, SOAP, AdaHessian against
  AdamW and third-party implementations (pytorch-optimizer, heavyball);
- (c) the curvature tools on the digits MLP (top eigenvalues, trace, spectral density) against
  curvlinops.
"""
from __future__ import annotations

from torchnewton.bench.suite import BenchContext, Section
from torchnewton.bench.suites.curvature_digits import run_digits
from torchnewton.bench.suites.curvature_dsp import run_dsp
from torchnewton.bench.suites.curvature_tools import run_tools


def run(ctx: BenchContext) -> Section:
    markdown, figures, plots = [], {}, []
    for title, part in (("(a) DSP model: NewtonRaphson vs Adam and L-BFGS", run_dsp),
                        ("(b) digits: second-order optimizers vs AdamW and third-party peers", run_digits),
                        ("(c) curvature tools on the digits MLP vs curvlinops", run_tools)):
        text, part_figures, part_plots = part(ctx)
        markdown.append(f"### {title}\n\n{text}")
        figures[title] = part_figures
        plots += part_plots
    return Section(title="curvature: Newton for neural networks", markdown="\n\n".join(markdown),
                   figures=figures, plots=plots)
