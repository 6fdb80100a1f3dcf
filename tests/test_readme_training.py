"""The README's examples run as written and do what they say."""
from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples(heading: str) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


def test_training_example_lowers_the_loss():
    namespace: dict = {}
    torch.manual_seed(0)
    exec(_examples("Training a network"), namespace)
    uniform_guess = torch.log(torch.tensor(64.0)).item()  # the loss of predicting every token alike
    assert namespace["loss"].item() < 0.5 * uniform_guess


def test_curvature_example_runs_and_the_inverse_product_solves_the_damped_system():
    namespace: dict = {"tn": __import__("torchnewton"), "torch": torch}
    torch.manual_seed(0)
    exec(_examples("Curvature of a network"), namespace)
    ihvp = namespace["ihvp"]
    assert ihvp.success and float(ihvp.residual_norm.max()) < 1e-3


def test_deq_example_converges_and_backpropagates():
    namespace: dict = {"tn": __import__("torchnewton"), "torch": torch}
    torch.manual_seed(0)
    exec(_examples("Fixed points and deep-equilibrium layers"), namespace)
    deq = namespace["deq"]
    assert float(deq.last_stats.residual.max()) <= 1e-4
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in deq.parameters())


def test_constrained_example_reaches_the_published_optimum():
    namespace: dict = {"tn": __import__("torchnewton"), "torch": torch}
    exec(_examples("Constrained minimization"), namespace)
    res = namespace["res"]
    assert bool(res.success) and abs(float(res.fun) - 17.0140173) < 1e-6  # Hock & Schittkowski's f*
    assert float(res.constraint_violation) < 1e-8


def test_linear_example_solves_and_recycling_saves_products():
    import numpy as np
    import scipy.sparse.linalg as spla

    namespace: dict = {"tn": __import__("torchnewton"), "torch": torch}
    torch.manual_seed(0)
    exec(_examples("Linear systems, one after another"), namespace)
    sol, results, systems = namespace["sol"], namespace["results"], namespace["systems"]
    A, b = namespace["A"], namespace["b"].numpy()
    assert sol.success and np.linalg.norm(A @ sol.x.numpy() - b) <= 1e-8 * np.linalg.norm(b)
    independent = 0
    for (As, bs), r in zip(systems, results):
        assert r.success and np.linalg.norm(As @ r.x.numpy() - bs.numpy()) <= 1e-7 * np.linalg.norm(bs.numpy())
        count = [0]
        spla.cg(As, bs.numpy(), rtol=1e-8, callback=lambda _: count.__setitem__(0, count[0] + 1))
        independent += count[0]
    assert sum(r.nmatvec for r in results) < 0.5 * independent  # deflation pays on ill-conditioned neighbours


def test_minimization_examples_run_and_the_second_compiled_solve_reuses_the_first():
    import shutil

    import pytest
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler for Inductor's CPU kernels")
    namespace: dict = {"tn": __import__("torchnewton"), "torch": torch}
    torch.manual_seed(0)
    exec(_examples("Minimization"), namespace)
    res = namespace["res"]
    assert res.success and res.compiled and res.compile_seconds == 0.0
    assert torch.allclose(res.x, torch.ones(2, dtype=torch.float64), atol=1e-8)
