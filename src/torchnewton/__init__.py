"""torchnewton: batched, differentiable Newton-type methods for PyTorch."""
from .core.result import Result
from .core.status import Status

__all__ = ["Result", "Status"]
__version__ = "0.1.0"
