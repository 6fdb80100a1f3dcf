"""Small test objectives shared by the minimize tests."""


def rosenbrock(x):
    return (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2


def saddle(x):
    """x² + y⁴/4 − y²/2: a saddle at the origin, minimizers at (0, ±1) with f = −¼."""
    return x[..., 0] ** 2 + 0.25 * x[..., 1] ** 4 - 0.5 * x[..., 1] ** 2


def styblinski_tang(x):
    """½Σ(xᵢ⁴ − 16xᵢ² + 5xᵢ): 2ⁿ local minimizers, global one at xᵢ ≈ −2.903534."""
    return 0.5 * (x**4 - 16 * x**2 + 5 * x).sum(-1)
