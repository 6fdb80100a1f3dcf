"""torchnewton.nn.DEQ: the forward fixed point, implicit / phantom / JFB gradients, statistics, modes."""
import pytest
import torch
from torch import nn

from torchnewton.core.status import Status
from torchnewton.nn import DEQ

DOUBLE = torch.float64


class Cell(nn.Module):
    """f(z, x) = tanh(W z + U x + b) with ‖W‖₂ = 0.7: a contraction in z."""

    def __init__(self, width: int, inputs: int, seed: int = 0, dtype=DOUBLE):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        W = torch.randn(width, width, generator=generator, dtype=dtype)
        self.W = nn.Parameter(0.7 * W / torch.linalg.matrix_norm(W, 2))
        self.U = nn.Parameter(torch.randn(width, inputs, generator=generator, dtype=dtype) / inputs**0.5)
        self.b = nn.Parameter(0.1 * torch.randn(width, generator=generator, dtype=dtype))
        self.calls_with_grad = 0

    def forward(self, z, x):
        self.calls_with_grad += int(torch.is_grad_enabled())
        return torch.tanh(z @ self.W.T + x @ self.U.T + self.b)


def unrolled(cell, x, steps=300):
    z = torch.zeros(x.shape[0], cell.W.shape[0], dtype=x.dtype)
    for _ in range(steps):
        z = cell(z, x)
    return z


def data(batch=5, inputs=3, width=4, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, inputs, dtype=DOUBLE, generator=generator)
    c = torch.randn(batch, width, dtype=DOUBLE, generator=generator)
    return x, c


@pytest.mark.parametrize("method", ["anderson", "picard", "krasnoselskii-mann"])
def test_forward_solves_the_fixed_point_without_a_graph_through_the_iterations(method):
    cell = Cell(4, 3)
    x, _ = data()
    deq = DEQ(cell, method=method, tol=1e-11, max_iter=500)
    z0 = torch.zeros(5, 4, dtype=DOUBLE)
    z = deq(x, z0)
    # one graph-recording call of the cell (the implicit rule's f(z*, x)); the solve records none
    assert cell.calls_with_grad == 1
    with torch.no_grad():
        assert torch.allclose(z, unrolled(cell, x), atol=1e-10)
        assert float((cell(z, x) - z).abs().max()) <= 1e-10
    stats = deq.last_stats
    assert bool(stats.success.all()) and stats.nit.shape == (5,) and bool((stats.residual <= 1e-11).all())
    assert stats.nfev >= int(stats.nit.max()) + 1


def test_implicit_gradient_matches_finite_differences_and_unrolling():
    cell = Cell(4, 3)
    x, c = data()
    x.requires_grad_(True)
    deq = DEQ(cell, tol=1e-12, max_iter=200, backward_tol=1e-12)
    loss = (c * deq(x, torch.zeros(5, 4, dtype=DOUBLE))).sum()
    params = [cell.W, cell.U, cell.b, x]
    grads = torch.autograd.grad(loss, params)
    reference = torch.autograd.grad((c * unrolled(cell, x)).sum(), params)
    for g, r in zip(grads, reference):
        assert torch.allclose(g, r, atol=1e-9)
    stats = deq.last_stats
    assert stats.backward_status is not None and bool((stats.backward_status == int(Status.SUCCESS)).all())
    # central differences on a few entries of W
    with torch.no_grad():
        for i, j in [(0, 0), (1, 3), (3, 2)]:
            eps = 1e-6
            cell.W[i, j] += eps
            plus = (c * deq(x.detach(), torch.zeros(5, 4, dtype=DOUBLE))).sum()
            cell.W[i, j] -= 2 * eps
            minus = (c * deq(x.detach(), torch.zeros(5, 4, dtype=DOUBLE))).sum()
            cell.W[i, j] += eps
            assert float(grads[0][i, j]) == pytest.approx(float((plus - minus) / (2 * eps)), abs=1e-7)


def test_phantom_converges_to_the_implicit_gradient_and_jfb_is_one_step():
    cell = Cell(4, 3)
    x, c = data()
    exact = DEQ(cell, tol=1e-12, max_iter=200, backward_tol=1e-12)
    implicit = torch.autograd.grad((c * exact(x, torch.zeros(5, 4, dtype=DOUBLE))).sum(), cell.W)[0]
    long_phantom = DEQ(cell, backward="phantom", phantom_steps=200, phantom_damping=1.0, tol=1e-12, max_iter=200)
    phantom_grad = torch.autograd.grad((c * long_phantom(x, torch.zeros(5, 4, dtype=DOUBLE))).sum(), cell.W)[0]
    assert torch.allclose(phantom_grad, implicit, atol=1e-10)
    short = DEQ(cell, backward="phantom", phantom_steps=3, phantom_damping=0.5, tol=1e-12, max_iter=200)
    out = short(x, torch.zeros(5, 4, dtype=DOUBLE))
    assert torch.allclose(out, unrolled(cell, x), atol=1e-10)  # z* is a fixed point of the damped steps
    short_grad = torch.autograd.grad((c * out).sum(), cell.W)[0]
    assert not torch.allclose(short_grad, implicit, atol=1e-4)
    jfb = DEQ(cell, backward="jfb", tol=1e-12, max_iter=200)
    jfb_grad = torch.autograd.grad((c * jfb(x, torch.zeros(5, 4, dtype=DOUBLE))).sum(), cell.W)[0]
    z_star = unrolled(cell, x).detach()
    one_step = torch.autograd.grad((c * cell(z_star, x)).sum(), cell.W)[0]
    assert torch.allclose(jfb_grad, one_step, atol=1e-10)
    # JFB is a descent direction here, as Fung et al. show for contractive cells
    assert float((jfb_grad * implicit).sum()) > 0


def test_jacobian_regularization_estimates_the_frobenius_norm_and_is_differentiable():
    torch.manual_seed(0)
    W = nn.Parameter(0.3 * torch.randn(6, 6, dtype=DOUBLE))
    deq = DEQ(lambda z, x: z @ W.T + x, tol=1e-12, max_iter=200, jacobian_samples=400)
    x = torch.randn(8, 6, dtype=DOUBLE)
    deq(x)
    exact = float((W.detach() ** 2).sum())  # f is linear: ∂f/∂z = W for every sample
    assert float(deq.jacobian_loss.detach()) == pytest.approx(exact, rel=0.1)
    (grad,) = torch.autograd.grad(deq.jacobian_loss, W)
    assert torch.allclose(grad, 2 * W.detach(), atol=0.3 * float(W.detach().abs().max()))
    deq.eval()
    deq(x)
    assert deq.jacobian_loss is None


def test_train_and_eval_modes_and_iteration_limits():
    cell = Cell(4, 3)
    x, c = data()
    deq = DEQ(cell, method="picard", tol=1e-14, max_iter=3, eval_max_iter=50)
    deq(x, torch.zeros(5, 4, dtype=DOUBLE))
    assert deq.last_stats.nit.tolist() == [3] * 5
    assert (deq.last_stats.status == int(Status.MAX_ITER)).all()
    deq.eval()
    z = deq(x, torch.zeros(5, 4, dtype=DOUBLE))
    assert deq.last_stats.nit.max() <= 50 and deq.last_stats.nit.max() > 3
    # gradients still flow in eval mode when asked for (e.g. input gradients)
    x.requires_grad_(True)
    assert torch.autograd.grad((c * deq(x, torch.zeros(5, 4, dtype=DOUBLE))).sum(), x)[0].abs().sum() > 0
    with torch.no_grad():
        assert not deq(x, torch.zeros(5, 4, dtype=DOUBLE)).requires_grad
    assert torch.allclose(z, unrolled(cell, x), atol=1e-10)


def test_image_shaped_states_default_z0_and_per_sample_statistics():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(0.3)

    def cell(z, x):
        return torch.tanh(conv(z) + x)

    x = torch.randn(3, 2, 5, 5)
    x[2] *= 0  # an all-zero sample: z* = tanh(bias) fixed point reached fast
    deq = DEQ(cell, tol=1e-5, max_iter=60)
    z = deq(x)
    assert z.shape == x.shape
    assert float((cell(z, x) - z).abs().max()) <= 2e-5
    assert deq.last_stats.nit.shape == (3,) and bool(deq.last_stats.success.all())
    z.sum().backward()
    assert conv.weight.grad is not None and deq.last_stats.backward_nit.shape == (3,)


def test_training_a_deq_reduces_the_loss():
    torch.manual_seed(0)
    width = 8
    cell = Cell(width, 2, dtype=torch.float32)
    head = nn.Linear(width, 1)
    deq = DEQ(cell, tol=1e-5, max_iter=40)
    x = torch.randn(64, 2)
    y = torch.sin(x[:, :1] * 2) * x[:, 1:]
    optimizer = torch.optim.Adam(list(deq.parameters()) + list(head.parameters()), lr=0.02)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = ((head(deq(x, torch.zeros(64, width))) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert set(dict(deq.named_parameters())) == {"cell.W", "cell.U", "cell.b"}


def test_samples_far_from_their_fixed_point_get_the_jacobian_free_gradient():
    cell = Cell(4, 3)
    x, c = data()
    z0 = torch.zeros(5, 4, dtype=DOUBLE)
    # two Picard steps end far above 100·tol: every sample falls back
    capped = DEQ(cell, method="picard", tol=1e-12, max_iter=2, backward_tol=1e-12, backward_max_iter=200)
    grad = torch.autograd.grad((c * capped(x, z0)).sum(), cell.W)[0]
    assert not bool(capped.last_stats.success.any()) and bool(capped.last_stats.backward_fallback.all())
    jfb = DEQ(cell, method="picard", backward="jfb", tol=1e-12, max_iter=2)
    assert torch.allclose(grad, torch.autograd.grad((c * jfb(x, z0)).sum(), cell.W)[0], atol=1e-14)
    # without the fallback the adjoint at the unconverged point is used: a different gradient
    raw = DEQ(cell, method="picard", tol=1e-12, max_iter=2, backward_tol=1e-12, backward_max_iter=200, fallback=None)
    raw_grad = torch.autograd.grad((c * raw(x, z0)).sum(), cell.W)[0]
    assert raw.last_stats.backward_fallback is None
    assert not torch.allclose(raw_grad, grad, atol=1e-6)
    # converged samples are untouched by the fallback
    exact = DEQ(cell, tol=1e-12, max_iter=200, backward_tol=1e-12)
    exact_grad = torch.autograd.grad((c * exact(x, z0)).sum(), cell.W)[0]
    assert not bool(exact.last_stats.backward_fallback.any())
    assert torch.allclose(exact_grad, torch.autograd.grad((c * unrolled(cell, x)).sum(), cell.W)[0], atol=1e-9)


def test_digits_bench_accuracy_verdict_applies_its_seed_spread_rule():
    from torchnewton.bench.suites.fixed_point_deq import _accuracy_verdict

    def runs(ours, theirs):
        return [{"torchnewton": {"accuracy": [0.5, a]}, "torchdeq": {"accuracy": [0.5, b]}} for a, b in zip(ours, theirs)]

    # means 0.90 and 0.91, sample stds 0.01 and 0.02: bound 2·√((1e-4 + 4e-4)/2)/√3 = 0.01826
    close = _accuracy_verdict(runs([0.89, 0.90, 0.91], [0.89, 0.91, 0.93]))
    assert close["difference"] == pytest.approx(-0.01) and close["bound"] == pytest.approx(0.018257, abs=1e-6)
    assert close["equal"] is True and close["paired"] == pytest.approx([0.0, -0.01, -0.02])
    apart = _accuracy_verdict(runs([0.85, 0.86, 0.87], [0.89, 0.91, 0.93]))
    assert apart["equal"] is False and apart["not_worse"] is False and "NOT equal" in apart["text"]
    above = _accuracy_verdict(runs([0.89, 0.91, 0.93], [0.85, 0.86, 0.87]))
    assert above["equal"] is False and above["not_worse"] is True and "higher" in above["text"]
    assert close["not_worse"] is True
    single = _accuracy_verdict(runs([0.9], [0.8]))
    assert single["equal"] is None and single["bound"] is None
