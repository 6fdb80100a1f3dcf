"""The data a curvature matrix is averaged over: one batch, or every batch of a loader.

For a loss with ``reduction='mean'`` over a data set split into batches of sizes N_b, the
full-data loss is L = Σ_b (N_b / N) L_b, so every curvature matrix of L is the same weighted sum
of the per-batch matrices; with ``reduction='sum'`` the weights are 1. This holds when the batches
partition the data the same way on every pass (no ``drop_last`` changing with shuffling, no
augmentation), as for ``torch.utils.data.DataLoader(..., drop_last=False)``.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


def is_single_batch(data: Any) -> bool:
    """A pair ``(inputs, targets)`` of tensors, as opposed to an iterable of such pairs."""
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and isinstance(data[0], torch.Tensor) and isinstance(data[1], torch.Tensor))


def check_batch(batch: Any, where: str, dtype: torch.dtype) -> Batch:
    """A pair of tensors with a common leading batch size and inputs in the parameters' dtype."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"{where} must be a pair (inputs, targets), got {type(batch).__name__}"
                        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    inputs, targets = batch
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(f"{where}: inputs and targets must be torch.Tensors, got "
                        f"{type(inputs).__name__} and {type(targets).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"{where}: inputs must have a floating dtype, got {inputs.dtype}")
    if inputs.dtype != dtype:
        raise TypeError(f"{where}: inputs have dtype {inputs.dtype} but the model's trainable "
                        f"parameters have {dtype}; convert one of them")
    if inputs.dim() == 0 or targets.dim() == 0:
        raise ValueError(f"{where}: inputs and targets need a leading batch dimension, got shapes "
                         f"{tuple(inputs.shape)} and {tuple(targets.shape)}")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"{where}: inputs and targets have different batch sizes "
                         f"({inputs.shape[0]} and {targets.shape[0]})")
    if inputs.shape[0] == 0:
        raise ValueError(f"{where} is empty")
    return inputs, targets


class Batches:
    """The batches of ``data`` on the parameters' device, with their weights in the full loss."""

    def __init__(self, data: Any, *, dtype: torch.dtype, device: torch.device):
        self.device, self.dtype = device, dtype
        if is_single_batch(data):
            self._source: Iterable[Any] = [check_batch(data, "data", dtype)]
        else:
            if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
                raise TypeError("data must be a batch (inputs, targets) or an iterable of batches "
                                f"(e.g. a DataLoader), got {type(data).__name__}")
            if iter(data) is data:
                raise TypeError("data is a one-shot iterator; pass a list of batches or a DataLoader, "
                                "which every product iterates again")
            self._source = data
        self.num_data = 0
        self.num_batches = 0
        for index, batch in enumerate(self._source):
            inputs, _ = check_batch(batch, f"batch {index} of data", dtype)
            self.num_data += inputs.shape[0]
            self.num_batches += 1
        if self.num_batches == 0:
            raise ValueError("data holds no batches")

    def weighted(self, reduction: str) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """Yield (inputs, targets, weight) with weight N_b/N for 'mean' and 1 for 'sum'."""
        for batch in self._source:
            inputs, targets = batch
            weight = inputs.shape[0] / self.num_data if reduction == "mean" else 1.0
            yield inputs.to(self.device), targets.to(self.device), weight

    def first(self) -> Batch:
        inputs, targets = next(iter(self._source))
        return inputs.to(self.device), targets.to(self.device)
