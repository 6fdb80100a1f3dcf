"""A character-level Transformer language model on the Python documentation that ships with Python.

The text is ``pydoc_data.topics.topics`` (the help() pages of the standard library, about
0.46 M characters, present in every CPython install, so the benchmark needs no download). The
topics are joined in sorted key order; the first 90 % of the characters are the training split,
the last 10 % the validation split (a split by position, so no validation window overlaps a
training one). The vocabulary is fixed: newline, the 95 printable ASCII characters, and one
unknown token for everything else (curly quotes, dashes, ...), 97 tokens in all.

The model is a GPT-style decoder (Radford et al. 2019): token + learned position embeddings,
``layers`` pre-LayerNorm blocks of causal multi-head attention and a 4x GELU MLP, a final
LayerNorm and a linear head. The loss is the mean next-character cross-entropy (nats).

Example:
    >>> task = CharTask(CharConfig(layers=2, d_model=32, heads=2, context=16), batch_size=4, val_windows=8)
    >>> model = task.model(seed=0)
    >>> loss = task.loss(model, task.batch(torch.Generator().manual_seed(0)))
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
UNKNOWN = len(VOCAB)
VOCAB_SIZE = len(VOCAB) + 1
TRAIN_FRACTION = 0.9


@functools.lru_cache(maxsize=1)
def corpus_tokens() -> torch.Tensor:
    """The whole corpus as token ids (int64), in sorted topic order."""
    from pydoc_data.topics import topics

    text = "".join(topics[key] for key in sorted(topics))
    index = {c: i for i, c in enumerate(VOCAB)}
    return torch.tensor([index.get(c, UNKNOWN) for c in text], dtype=torch.long)


@dataclass(frozen=True)
class CharConfig:
    layers: int = 2
    d_model: int = 64
    heads: int = 4
    context: int = 64

    def __post_init__(self) -> None:
        if self.layers < 1 or self.d_model < 1 or self.heads < 1 or self.context < 1:
            raise ValueError(f"layers, d_model, heads and context must be positive, got {self}")
        if self.d_model % self.heads:
            raise ValueError(f"heads={self.heads} must divide d_model={self.d_model}")


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model, bias=False), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    """Decoder-only Transformer; ``forward(tokens (b, t)) -> logits (b, t, VOCAB_SIZE)``."""

    def __init__(self, config: CharConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB_SIZE, config.d_model)
        self.position_embedding = nn.Embedding(config.context, config.d_model)
        self.blocks = nn.ModuleList(Block(config.d_model, config.heads) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, VOCAB_SIZE, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class CharTask:
    """Next-character prediction: random training windows, a fixed set of validation windows.

    ``val_windows`` windows start at evenly spaced positions of the validation split, so the
    validation loss of every run is measured on the same characters.
    """

    name = "char-transformer"

    def __init__(self, config: CharConfig, *, batch_size: int, val_windows: int) -> None:
        if batch_size < 1 or val_windows < 1:
            raise ValueError(f"batch_size and val_windows must be positive, got {batch_size}, {val_windows}")
        self.config = config
        self.batch_size = batch_size
        tokens = corpus_tokens()
        split = int(TRAIN_FRACTION * len(tokens))
        self.train_tokens, val_tokens = tokens[:split], tokens[split:]
        span = config.context + 1
        starts = torch.linspace(0, len(val_tokens) - span, val_windows).long()
        windows = torch.stack([val_tokens[s:s + span] for s in starts.tolist()])
        self.val_inputs, self.val_targets = windows[:, :-1], windows[:, 1:]

    def describe(self) -> str:
        c = self.config
        return (f"character Transformer, {c.layers} layers, d_model {c.d_model}, {c.heads} heads, "
                f"context {c.context}, batch {self.batch_size}, vocabulary {VOCAB_SIZE}, "
                f"{len(self.train_tokens)} training characters, {self.val_inputs.numel()} validation "
                f"characters (pydoc_data.topics, split by position)")

    def model(self, seed: int) -> CharTransformer:
        torch.manual_seed(seed)
        return CharTransformer(self.config)

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        span = self.config.context + 1
        starts = torch.randint(0, len(self.train_tokens) - span, (self.batch_size,), generator=generator)
        windows = self.train_tokens[starts[:, None] + torch.arange(span)]
        return windows[:, :-1], windows[:, 1:]

    @staticmethod
    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        logits = model(inputs)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        return float(self.loss(model, (self.val_inputs, self.val_targets)))
