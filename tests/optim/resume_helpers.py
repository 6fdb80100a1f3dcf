"""The resume check shared by the optimizer tests: stopped, saved and resumed equals uninterrupted."""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch


def mse_steps(model: torch.nn.Module, optimizer: Any, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for X, Y in batches:
        optimizer.zero_grad()
        (model(X) - Y).square().mean().backward()
        optimizer.step()


def assert_resume_is_bit_identical(model: torch.nn.Module, build: Callable[[torch.nn.Module], Any],
                                   batches: list, split: int,
                                   train: Callable[[torch.nn.Module, Any, list], None] = mse_steps) -> None:
    """Train a copy of ``model`` on all ``batches``; train another on ``batches[:split]``, move its
    optimizer's ``state_dict`` into a fresh optimizer and train on the rest: the parameters must be
    bitwise equal."""
    straight = copy.deepcopy(model)
    train(straight, build(straight), batches)
    resumed = copy.deepcopy(model)
    first = build(resumed)
    train(resumed, first, batches[:split])
    second = build(resumed)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    train(resumed, second, batches[split:])
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
