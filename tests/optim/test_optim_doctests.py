"""The examples in the docstrings of torchnewton.optim and torchnewton.curvature run as written."""
from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys

import pytest
import torch

import torchnewton.curvature
import torchnewton.optim

MODULES = [f"{package.__name__}.{info.name}" for package in (torchnewton.optim, torchnewton.curvature)
           for info in pkgutil.iter_modules(package.__path__)] + ["torchnewton.optim", "torchnewton.curvature"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    importlib.import_module(name)
    module = sys.modules[name]  # not the attribute: ``curvature.trace`` is also a function's name
    torch.manual_seed(0)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
