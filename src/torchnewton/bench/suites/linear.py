"""`torchnewton bench linear`: sequences of linear systems.

(a) :mod:`.linear_skr`: SKR-style neural-operator data generation — Darcy flow,
    convection–diffusion and Helmholtz systems solved independently by scipy (CG / GMRES /
    LGMRES), torchnewton and
    PyAMG, and by torchnewton in SKR order with Krylov recycling (deflated CG / GCRO-DR):
    products with A and wall time to 1e-8 relative residual.
(b) :mod:`.linear_sor`: the "Learning to Relax" SOR sequence — bandit-chosen ω against the best
    fixed ω in hindsight, ω = 1 and Young's optimum.

Quick mode uses small grids and few systems (SOR: 500 systems); ``--full`` uses 100 Darcy, 60
convection–diffusion and 60 Helmholtz systems of 128² unknowns and the paper's 5,000-system SOR
sequence.
"""
from __future__ import annotations

from ..suite import BenchContext, Section
from .linear_skr import run_skr
from .linear_sor import run_sor


def run(ctx: BenchContext) -> Section:
    skr_markdown, skr_figures, skr_plots = run_skr(ctx)
    sor_markdown, sor_figures, sor_plots = run_sor(ctx)
    return Section(title="linear: Krylov recycling with SKR ordering, bandit-tuned SOR",
                   markdown="\n\n".join([skr_markdown, sor_markdown]),
                   figures={"skr": skr_figures, "sor": sor_figures}, plots=skr_plots + sor_plots)
