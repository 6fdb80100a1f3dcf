"""A small convolutional network on scikit-learn's handwritten digits (offline, 1797 8x8 images).

The split is fixed for every run (a permutation from its own seed, 1437 training and 360
validation images), pixel values are scaled to [0, 1]. The network: two 3x3 convolutions
(same padding, ReLU), 2x2 max pooling, a hidden linear layer with ReLU and a linear head;
the loss is the mean cross-entropy over the 10 classes.

The convolution kernels are stored as matrices (out, in·3·3), the shape a Muon-type optimizer
acts on. ``torch.optim.Muon`` accepts only 2-D parameters, so with 4-D kernels it could not
update the convolutions at all; with the matrix storage every optimizer of the benchmark sees
the same parameters and orthogonalizes the same matrices (torchnewton would flatten a 4-D
kernel to exactly this matrix).

Example:
    >>> task = DigitsTask(channels=(8, 16), hidden=32, batch_size=16)
    >>> model = task.model(seed=0)
    >>> loss = task.loss(model, task.batch(torch.Generator().manual_seed(0)))
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

SPLIT_SEED = 1234
VAL_SIZE = 360


@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images (n, 1, 8, 8) float32, train labels, val images, val labels)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val, train = order[:VAL_SIZE], order[VAL_SIZE:]
    return images[train], labels[train], images[val], labels[val]


class MatrixConv2d(nn.Module):
    """A 2-D convolution whose kernel is a (out, in·k·k) matrix parameter (same padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels * kernel_size**2))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight.view(self.shape), a=5**0.5)  # nn.Conv2d's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.view(self.shape), self.bias, padding=self.shape[-1] // 2)


class DigitsCNN(nn.Module):
    def __init__(self, channels: tuple[int, int], hidden: int) -> None:
        super().__init__()
        self.conv1 = MatrixConv2d(1, channels[0])
        self.conv2 = MatrixConv2d(channels[0], channels[1])
        self.hidden = nn.Linear(channels[1] * 16, hidden)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.head(F.relu(self.hidden(x.flatten(1))))


class DigitsTask:
    """Minibatches drawn with replacement from the training split; the whole validation split."""

    name = "digits-cnn"

    def __init__(self, *, channels: tuple[int, int] = (16, 32), hidden: int = 64, batch_size: int = 64) -> None:
        if min(channels) < 1 or hidden < 1 or batch_size < 1:
            raise ValueError(f"channels, hidden and batch_size must be positive, got {channels}, {hidden}, {batch_size}")
        self.channels, self.hidden_size, self.batch_size = tuple(channels), hidden, batch_size
        self.train_images, self.train_labels, self.val_images, self.val_labels = digits_split()

    def describe(self) -> str:
        return (f"CNN on sklearn digits: conv 3x3 x{self.channels[0]}, conv 3x3 x{self.channels[1]}, "
                f"max-pool, linear {self.hidden_size}, head 10; batch {self.batch_size}, "
                f"{len(self.train_labels)} training / {len(self.val_labels)} validation images")

    def model(self, seed: int) -> DigitsCNN:
        torch.manual_seed(seed)
        return DigitsCNN(self.channels, self.hidden_size)

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(self.train_labels), (self.batch_size,), generator=generator)
        return self.train_images[index], self.train_labels[index]

    @staticmethod
    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(model(images), labels)

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        return self.loss(model, (self.val_images, self.val_labels)).item()
