"""Training optimizers built on the matrix Newton iterations and on network curvature.

The Muon family shares one pipeline (``pipeline.MatrixOptimizer``): momentum -> matrix transform
-> scaling -> decoupled weight decay and apply, with a built-in AdamW for the parameters that are
not hidden matrices, so one optimizer object trains a whole model. ``SpectralClip`` wraps any
torch.optim optimizer. The second-order optimizers (``NewtonRaphson``, ``KFAC``, ``Shampoo``,
``SOAP``, ``AdaHessian``) precondition with the curvature of the loss.

Example:
    >>> import torch, torchnewton as tn
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    >>> opt = tn.optim.Muon(tn.optim.param_groups(model), lr=0.02, adamw_lr=1e-3)
    >>> model(torch.randn(16, 8)).square().mean().backward(); opt.step(); opt.zero_grad()
"""
from .adahessian import AdaHessian
from .adamuon import AdaMuon, NorMuon
from .auon import AuON, HybridAuON
from .groups import param_groups
from .kfac import KFAC
from .muon import Muon
from .newton_raphson import NewtonRaphson
from .pion import Pion
from .pipeline import MatrixOptimizer
from .root import ROOT
from .shampoo import Shampoo
from .soap import SOAP
from .spectral_clip import SpectralClip

__all__ = ["AdaHessian", "AdaMuon", "AuON", "HybridAuON", "KFAC", "MatrixOptimizer", "Muon", "NewtonRaphson",
           "NorMuon", "Pion", "ROOT", "SOAP", "Shampoo", "SpectralClip", "param_groups"]
