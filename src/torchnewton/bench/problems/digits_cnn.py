"""A small convolutional network on scikit-learn's handwritten digits (offline, 1797 8x8 images).

The split is fixed for every run (a permutation from its own seed; by default 1437 training and
360 validation images), pixel values are scaled to [0, 1]. The network, in the standard modern
form of a small CNN (conv–BatchNorm–ReLU blocks, as in ResNets and in the CIFAR-10 speedruns on
which Muon was first measured):

    conv 3x3 – BN – ReLU, conv 3x3 – BN – ReLU, 2x2 max pooling,
    linear – BN – ReLU, linear head (10 classes),

the loss is the mean cross-entropy. BatchNorm uses the minibatch's statistics in training and its
running statistics for validation (``val_loss`` and ``val_accuracy`` switch the model to eval mode
and back). The layers before a BatchNorm have no bias (BN's shift replaces it).

``norm=False`` gives the network without normalization (convolutions and hidden layer with
biases, no BN), the model the optim benchmark was piloted on and still runs. Its output starts
near zero (logit RMS about 0.09) and its first gradients are nearly rank one, so Muon's
fixed-spectral-norm steps start slowly, and larger Muon lrs that fix the start overfit late;
in the full optim benchmark (300 steps) torchnewton's Muon ended at validation loss
0.0859 ± 0.0185 against AdamW's 0.0730 ± 0.0004 and never reached AdamW's final loss
(torch.optim.Muon 0.0880, pytorch-optimizer's Muon 0.0889: the same), while classifying more
validation images correctly (accuracy 0.9824 vs 0.9806: the loss was set by a few confidently
wrong images). With BatchNorm every hidden weight matrix is scale-invariant, the setting Muon's
fixed-size steps are designed for: Muon then starts far faster than AdamW and ends at a lower or
equal validation loss, but both approach the same floor (about 0.035-0.045 on these 360 images),
so Muon still needs 89-100 % of AdamW's steps to reach AdamW's final loss (the figures are in
``bench/suites/optim.py``, beside ``DIGITS_NORM``, which says which variant the benchmark runs).

The convolution kernels are stored as matrices (out, in·3·3), the shape a Muon-type optimizer
acts on. ``torch.optim.Muon`` accepts only 2-D parameters, so with 4-D kernels it could not
update the convolutions at all; with the matrix storage every optimizer of the benchmark sees
the same parameters and orthogonalizes the same matrices (torchnewton would flatten a 4-D
kernel to exactly this matrix).

Example:
    >>> task = DigitsTask(channels=(8, 16), hidden=32, batch_size=16)
    >>> model = task.model(seed=0)
    >>> loss = task.loss(model, task.batch(torch.Generator().manual_seed(0)))
    >>> 0.0 <= task.val_accuracy(model) <= 1.0
    True
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

SPLIT_SEED = 1234
VAL_SIZE = 360
N_IMAGES = 1797


@functools.lru_cache(maxsize=4)
def digits_split(val_size: int = VAL_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images (n, 1, 8, 8) float32, train labels, val images, val labels); the first
    ``val_size`` images of one fixed permutation are the validation split."""
    if not 0 < val_size < N_IMAGES:
        raise ValueError(f"val_size must be in (0, {N_IMAGES}), got {val_size}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val, train = order[:val_size], order[val_size:]
    return images[train], labels[train], images[val], labels[val]


class MatrixConv2d(nn.Module):
    """A 2-D convolution whose kernel is a (out, in·k·k) matrix parameter (same padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels * kernel_size**2))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight.view(self.shape), a=5**0.5)  # nn.Conv2d's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.view(self.shape), self.bias, padding=self.shape[-1] // 2)


class DigitsCNN(nn.Module):
    """Two conv blocks, max pooling, a hidden linear block and a linear head; with ``norm`` each
    block is layer – BatchNorm – ReLU (layer without bias), without it layer – ReLU."""

    def __init__(self, channels: tuple[int, int], hidden: int, norm: bool = True) -> None:
        super().__init__()
        self.conv1 = MatrixConv2d(1, channels[0], bias=not norm)
        self.conv2 = MatrixConv2d(channels[0], channels[1], bias=not norm)
        self.hidden = nn.Linear(channels[1] * 16, hidden, bias=not norm)
        self.head = nn.Linear(hidden, 10)
        self.norm1, self.norm2, self.norm3 = ((nn.BatchNorm2d(channels[0]), nn.BatchNorm2d(channels[1]),
                                               nn.BatchNorm1d(hidden)) if norm
                                              else (nn.Identity(), nn.Identity(), nn.Identity()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.norm2(self.conv2(x))), 2)
        return self.head(F.relu(self.norm3(self.hidden(x.flatten(1)))))


class DigitsTask:
    """Minibatches drawn with replacement from the training split; the whole validation split,
    evaluated with the model in eval mode."""

    name = "digits-cnn"

    def __init__(self, *, channels: tuple[int, int] = (16, 32), hidden: int = 64, batch_size: int = 64,
                 norm: bool = True, val_size: int = VAL_SIZE) -> None:
        if min(channels) < 1 or hidden < 1 or batch_size < 1:
            raise ValueError(f"channels, hidden and batch_size must be positive, got {channels}, {hidden}, {batch_size}")
        if norm and batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 with BatchNorm (norm=True), got {batch_size}")
        self.channels, self.hidden_size, self.batch_size, self.norm = tuple(channels), hidden, batch_size, norm
        self.train_images, self.train_labels, self.val_images, self.val_labels = digits_split(val_size)

    def describe(self) -> str:
        block = " – BN – ReLU" if self.norm else " – ReLU"
        return (f"CNN on sklearn digits: conv 3x3 x{self.channels[0]}{block}, conv 3x3 x{self.channels[1]}{block}, "
                f"max-pool, linear {self.hidden_size}{block}, head 10{'' if self.norm else ' (no normalization)'}; "
                f"batch {self.batch_size}, "
                f"{len(self.train_labels)} training / {len(self.val_labels)} validation images")

    def model(self, seed: int) -> DigitsCNN:
        torch.manual_seed(seed)
        return DigitsCNN(self.channels, self.hidden_size, self.norm)

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(self.train_labels), (self.batch_size,), generator=generator)
        return self.train_images[index], self.train_labels[index]

    @staticmethod
    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(model(images), labels)

    def val_loss(self, model: nn.Module) -> float:
        return F.cross_entropy(self._val_logits(model), self.val_labels).item()

    def val_accuracy(self, model: nn.Module) -> float:
        """The fraction of validation images whose largest logit is the true class."""
        return (self._val_logits(model).argmax(1) == self.val_labels).float().mean().item()

    @torch.no_grad()
    def _val_logits(self, model: nn.Module) -> torch.Tensor:
        mode = model.training
        model.eval()
        try:
            return model(self.val_images)
        finally:
            model.train(mode)
