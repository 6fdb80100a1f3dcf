"""The README's training and curvature examples run as written and do what they say."""
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
    G, ihvp = namespace["G"], namespace["ihvp"]
    assert ihvp.success and float(ihvp.residual_norm.max()) < 1e-3


def test_deq_example_converges_and_backpropagates():
    namespace: dict = {"tn": __import__("torchnewton"), "torch": torch}
    torch.manual_seed(0)
    exec(_examples("Fixed points and deep-equilibrium layers"), namespace)
    deq = namespace["deq"]
    assert float(deq.last_stats.residual.max()) <= 1e-4
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in deq.parameters())
