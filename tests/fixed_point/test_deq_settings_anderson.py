"""Anderson's ``regularization_form="weights"``: torchdeq's solver settings reproduced exactly.

torchdeq's ``anderson_solver`` (m stored iterates, absolute penalty ``lam``·‖α‖² on the
combination weights) and torchnewton's Anderson with ``memory = m − 1`` stored differences and
``regularization_form="weights"`` must evaluate the map at the same points, iteration by
iteration, through the ring buffer's wrap-around.
"""
import pytest
import torch
from torch import nn
from torchdeq.solver.anderson import anderson_solver

from torchnewton.core.status import Status
from torchnewton.nn import DEQ
from torchnewton.solvers.fixed_point.anderson import Anderson
from torchnewton.solvers.fixed_point.problem import FixedPointProblem
from torchnewton.solvers.fixed_point.termination import FixedPointTermination
from torchnewton.solvers.loop import iterate

DOUBLE = torch.float64


def tanh_map(n=12, batch=3, rho=0.9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=generator, dtype=DOUBLE)
    W *= rho / torch.linalg.matrix_norm(W, 2)
    b = torch.randn(batch, n, generator=generator, dtype=DOUBLE)
    return lambda z: torch.tanh(z @ W.T + b), torch.zeros(batch, n, dtype=DOUBLE)


def evaluated_points(method: Anderson, T, z0, iterations):
    points = []

    def recording(z):
        points.append(z.clone())
        return T(z)

    iterate(method, FixedPointProblem(recording, "2"), z0, max_iter=iterations)
    return points


def anderson(memory, regularization, form="weights"):
    # tol 0 and no stall test: every iteration runs, as torchdeq's with tol 0
    return Anderson(FixedPointTermination(0.0, None), memory=memory, regularization=regularization,
                    safeguard=None, regularization_form=form)


@pytest.mark.parametrize("m", [2, 3, 6])
@pytest.mark.parametrize("lam", [0.0, 1e-4, 1e-1, 10.0])
def test_weights_form_evaluates_the_same_points_as_torchdeq(m, lam):
    T, z0 = tanh_map()
    theirs = []

    def recording(z):
        theirs.append(z.clone())
        return T(z)

    anderson_solver(recording, z0, max_iter=16, tol=0.0, m=m, lam=lam)
    ours = evaluated_points(anderson(m - 1, lam), T, z0, 15)
    assert len(ours) == len(theirs) == 16  # 16 evaluations each: 14 iterations wrap the buffer
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.allclose(a, b, rtol=0, atol=1e-11), k


def test_weights_form_without_penalty_is_the_plain_least_squares():
    # λ = 0: both forms solve the same unregularized least squares (up to the m·eps shift)
    T, z0 = tanh_map(rho=0.8)
    weights = evaluated_points(anderson(4, 0.0, "weights"), T, z0, 10)
    scaled = evaluated_points(anderson(4, 0.0, "scaled"), T, z0, 10)
    for a, b in zip(weights, scaled):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_a_large_weights_penalty_averages_the_stored_images():
    # λ ≫ ‖g‖²: α → uniform over the m + 1 stored iterates, the step → the mean of their images
    T, z0 = tanh_map(rho=0.8)
    memory = 3
    points = evaluated_points(anderson(memory, 1e8), T, z0, 9)
    for k in range(memory + 1, len(points)):
        mean_image = torch.stack([T(z) for z in points[k - memory - 1:k]]).mean(0)
        assert torch.allclose(points[k], mean_image, rtol=0, atol=1e-6), k


def test_default_form_is_unchanged_and_bad_forms_are_rejected():
    assert Anderson(FixedPointTermination(1e-6)).regularization_form == "scaled"
    with pytest.raises(ValueError, match="regularization_form"):
        Anderson(FixedPointTermination(1e-6), regularization_form="absolute")
    with pytest.raises(ValueError, match="regularization_form"):
        DEQ(nn.Linear(3, 3), options={"regularization_form": "absolute"})
    with pytest.raises(ValueError, match="regularization_form"):
        DEQ(nn.Linear(3, 3), method="picard", options={"regularization_form": "weights"})


class Cell(nn.Module):
    def __init__(self, width=6, inputs=4):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        W = torch.randn(width, width, generator=generator, dtype=DOUBLE)
        self.W = nn.Parameter(0.6 * W / torch.linalg.matrix_norm(W, 2))
        self.U = nn.Parameter(torch.randn(width, inputs, generator=generator, dtype=DOUBLE))

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x @ self.U.T)


def test_deq_with_torchdeq_settings_gives_the_exact_gradient():
    # the penalty changes how fast the adjoint converges, not its fixed point
    cell = Cell()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(5, 4, dtype=DOUBLE, generator=generator)
    c = torch.randn(5, 6, dtype=DOUBLE, generator=generator)
    deq = DEQ(cell, tol=1e-12, max_iter=300, norm="2", backward_tol=1e-12, fallback=None,
              options={"memory": 5, "regularization": 1e-4, "regularization_form": "weights"})
    grads = torch.autograd.grad((c * deq(x, torch.zeros(5, 6, dtype=DOUBLE))).sum(), [cell.W, cell.U])
    z = torch.zeros(5, 6, dtype=DOUBLE)
    for _ in range(400):
        z = cell(z, x)
    reference = torch.autograd.grad((c * z).sum(), [cell.W, cell.U])
    for g, r in zip(grads, reference):
        assert torch.allclose(g, r, rtol=0, atol=1e-9)
    assert bool(deq.last_stats.success.all()) and bool((deq.last_stats.backward_status == int(Status.SUCCESS)).all())
