"""The training example, shortened: parallel and sequential evaluation train to the same loss."""
import importlib.util
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_paragru.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_paragru", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parallel_and_sequential_training_reach_same_loss():
    example = load_example()
    kwargs = dict(T=300, steps=12, batch=4, hidden=8, dtype=torch.float64)
    parallel = example.train("newton", **kwargs)
    sequential = example.train("sequential", **kwargs)
    assert parallel[-1] < 0.9 * parallel[0]  # it learns
    for a, b in zip(parallel, sequential):
        assert abs(a - b) <= 1e-9 * abs(b)
