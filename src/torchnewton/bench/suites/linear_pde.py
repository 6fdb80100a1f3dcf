"""Finite-difference PDE families for the linear suite: the SKR paper's data-generation workload.

Darcy flow −∇·(a∇u) = 1 on the unit square (zero Dirichlet data) with a piecewise-constant random
coefficient a ∈ {3, 12} thresholded from a smoothed Gaussian field (the FNO Darcy data set),
face coefficients by harmonic averaging; convection–diffusion −νΔu + v·∇u = 1 with random
ν and velocity v, first-order upwind convection; Helmholtz −Δu − κ²(x)u = 1 with a random
wavenumber field κ(x) = κ₀(1 + 0.1 g(x)), g a smoothed Gaussian field (the SKR paper's Helmholtz
family: indefinite once κ₀² passes the smallest Laplacian eigenvalues). All on an N×N interior
grid (n = N²).
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage
import scipy.sparse as sp


def darcy_system(N: int, rng: np.random.Generator) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(A, b, features): features are the coefficient field a on the grid (SKR sorts by the
    distance between the parameter fields themselves)."""
    field = scipy.ndimage.gaussian_filter(rng.standard_normal((N + 2, N + 2)), sigma=max(N / 16, 1.0))
    a = np.where(field > 0, 12.0, 3.0)
    h2 = float((N + 1) ** 2)
    east = 2 * a[1:-1, 1:-1] * a[1:-1, 2:] / (a[1:-1, 1:-1] + a[1:-1, 2:])
    west = 2 * a[1:-1, 1:-1] * a[1:-1, :-2] / (a[1:-1, 1:-1] + a[1:-1, :-2])
    north = 2 * a[1:-1, 1:-1] * a[2:, 1:-1] / (a[1:-1, 1:-1] + a[2:, 1:-1])
    south = 2 * a[1:-1, 1:-1] * a[:-2, 1:-1] / (a[1:-1, 1:-1] + a[:-2, 1:-1])
    index = np.arange(N * N).reshape(N, N)
    rows, cols, vals = [index.ravel()], [index.ravel()], [(east + west + north + south).ravel() * h2]
    for coefficient, di, dj in ((east, 0, 1), (west, 0, -1), (north, 1, 0), (south, -1, 0)):
        i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
        inside = (i + di >= 0) & (i + di < N) & (j + dj >= 0) & (j + dj < N)
        rows.append(index[inside])
        cols.append(index[(i + di)[inside], (j + dj)[inside]])
        vals.append(-coefficient[inside] * h2)
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(N * N, N * N))
    return A, np.ones(N * N), a[1:-1, 1:-1].ravel()


def convection_diffusion_system(N: int, rng: np.random.Generator) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(A, b, features = (ν, v_x, v_y))."""
    nu = rng.uniform(0.01, 0.05)
    angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5)
    vx, vy = speed * np.cos(angle), speed * np.sin(angle)
    h = 1.0 / (N + 1)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N)) / h**2
    backward = sp.diags([-1.0, 1.0], [-1, 0], shape=(N, N)) / h
    forward = sp.diags([-1.0, 1.0], [0, 1], shape=(N, N)) / h
    Dx = backward if vx > 0 else forward
    Dy = backward if vy > 0 else forward
    I = sp.eye(N)
    A = nu * (sp.kron(I, T) + sp.kron(T, I)) + vx * sp.kron(I, Dx) + vy * sp.kron(Dy, I)
    return A.tocsr(), np.ones(N * N), np.array([nu * 20, vx, vy])


def helmholtz_system(N: int, rng: np.random.Generator) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(A, b, features = κ²(x) on a coarse 8×8 grid): −Δ_h − diag(κ²), κ₀ ∈ [8, 12], so that
    a few (2 to 8) eigenvalues of A are negative and restarted GMRES stalls on them."""
    kappa0 = rng.uniform(5.2, 6.2)
    field = scipy.ndimage.gaussian_filter(rng.standard_normal((N, N)), sigma=max(N / 8, 1.0))
    field /= max(float(np.abs(field).max()), 1e-300)
    kappa2 = (kappa0 * (1.0 + 0.05 * field)) ** 2
    h = 1.0 / (N + 1)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N)) / h**2
    I = sp.eye(N)
    A = sp.kron(I, T) + sp.kron(T, I) - sp.diags(kappa2.ravel())
    return A.tocsr(), np.ones(N * N), kappa2[:: max(N // 8, 1), :: max(N // 8, 1)].ravel()
