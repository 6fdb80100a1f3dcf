"""Curvature of neural networks: Hessian, Gauss–Newton and Fisher matrices of an ``nn.Module``
as linear operators of ``torchnewton.linear``, and the tools on top of their products —
extreme eigenvalues (thick-restart Lanczos), trace (Hutchinson, Hutch++), spectral density
(stochastic Lanczos quadrature) and inverse products with damping (influence functions)."""
from .density import SpectralDensity, spectral_density
from .eigen import EigenResult, eigenvalues
from .inverse import InverseResult, inverse_hvp
from .lanczos import lanczos_quadrature, lanczos_tridiagonal
from .operators import (CurvatureOperator, EmpiricalFisherOperator, GaussNewtonOperator, HessianOperator,
                        MonteCarloFisherOperator)
from .params import flatten, trainable_parameters, unflatten
from .trace import trace

__all__ = ["CurvatureOperator", "EigenResult", "EmpiricalFisherOperator", "GaussNewtonOperator",
           "HessianOperator", "InverseResult", "MonteCarloFisherOperator", "SpectralDensity", "eigenvalues",
           "flatten", "inverse_hvp", "lanczos_quadrature", "lanczos_tridiagonal", "spectral_density",
           "trace", "trainable_parameters", "unflatten"]
