"""Benchmark of ``torchnewton.minimize``: CUTEst against scipy, logistic regression against
scikit-learn, and a 1,024-start batched multi-start against a loop over scipy.

Quick mode runs a fixed subset of the CUTEst problems (every twelfth problem with n ≤ 10, named in
the report); full mode runs every unconstrained S2MPJ problem with n ≤ 100 that has an exact
Hessian, from the resumable cache of :mod:`.minimize_cutest`.
"""
from __future__ import annotations

from ..suite import BenchContext, Section
from .minimize_cutest import cutest_comparison
from .minimize_logistic import logistic_comparison
from .minimize_multistart import multistart_comparison


def run(ctx: BenchContext) -> Section:
    parts = [("CUTEst (S2MPJ) vs scipy.optimize", cutest_comparison),
             ("Logistic regression vs scikit-learn", logistic_comparison),
             ("Batched multi-start vs a scipy loop", multistart_comparison)]
    markdown, figures, plots = [], {}, []
    for title, part in ctx.track(parts, desc="minimize suite"):
        text, numbers, images = part(ctx)
        markdown += [f"### {title}", "", text, ""]
        figures[title] = numbers
        plots += images
    return Section(title="minimize", markdown="\n".join(markdown), figures=figures, plots=plots)
