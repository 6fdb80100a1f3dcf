"""Batched derivatives: Jacobians, JVP/VJP, gradients, Hessians and their products."""
from .autodiff import gauss_newton_product, gradient, hessian, hvp, jacobian, jvp, linearize, vjp
from .estimators import hutchinson_diagonal

__all__ = ["gauss_newton_product", "gradient", "hessian", "hutchinson_diagonal", "hvp", "jacobian", "jvp", "linearize", "vjp"]
