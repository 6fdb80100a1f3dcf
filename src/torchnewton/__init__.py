"""torchnewton: batched, differentiable Newton-type methods for PyTorch."""
from .core.result import Result
from .core.status import Status
from .solvers.least_squares import least_squares
from .solvers.root import root

__all__ = ["Result", "Status", "least_squares", "root"]
__version__ = "0.1.0"
