"""Training optimizers built on the matrix Newton iterations (``torchnewton.linalg``).

The Muon family shares one pipeline (``pipeline.MatrixOptimizer``): momentum -> matrix transform
-> scaling -> decoupled weight decay and apply, with a built-in AdamW for the parameters that are
not hidden matrices, so one optimizer object trains a whole model.

Example:
    >>> import torch, torchnewton as tn
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    >>> opt = tn.optim.Muon(tn.optim.param_groups(model), lr=0.02, adamw_lr=1e-3)
    >>> model(torch.randn(16, 8)).square().mean().backward(); opt.step(); opt.zero_grad()
"""
from .groups import param_groups
from .muon import Muon
from .pipeline import MatrixOptimizer

__all__ = ["MatrixOptimizer", "Muon", "param_groups"]
