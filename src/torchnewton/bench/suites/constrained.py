"""Benchmark of constrained ``torchnewton.minimize`` (issue #16): S2MPJ/CUTEst problems against
scipy SLSQP, trust-constr and Ipopt; batches of 256 perturbed HS71 (interior point) and HS7
(sqp) instances against a loop over SLSQP; and the paper's constrained logistic regression with direct vs sketched KKT solves.

Quick mode: 15 equality-constrained problems of the paper's list with five solvers, one timed
batch repeat, two sizes for the time per iteration. Full mode (``torchnewton bench constrained
--full``): the paper's list, every Hock–Schittkowski problem and every bound/linearly constrained
problem with n ≤ 50, six solvers, three batch repeats, n up to 1000 for the time per iteration.
"""
from __future__ import annotations

from ..suite import BenchContext, Section, torch_threads
from .constrained_batch import batch_comparison
from .constrained_cutest import cutest_comparison
from .constrained_logistic import logistic_comparison


def run(ctx: BenchContext) -> Section:
    parts = [("CUTEst (S2MPJ) vs SLSQP, trust-constr and Ipopt", cutest_comparison),
             ("256 perturbed HS71 and HS7 instances: one batched call vs an SLSQP loop", batch_comparison),
             ("Constrained logistic regression: direct vs sketched KKT solves", logistic_comparison)]
    markdown, figures, plots = [], {}, []
    with torch_threads(1):  # the peers are single-threaded; so is torchnewton here
        for title, part in ctx.track(parts, desc="constrained suite"):
            text, numbers, images = part(ctx)
            markdown += [f"### {title}", "", text, ""]
            figures[title] = numbers
            plots += images
    return Section(title="constrained", markdown="\n".join(markdown), figures=figures, plots=plots)
