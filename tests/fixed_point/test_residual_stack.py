"""LayerParallelResidualStack: layer-parallel sweeps reproduce the sequential forward, Newton's and
Identity-Newton's exactness after L sweeps, gradients, and the SNLP regularizer."""
import pytest
import torch
from torch import nn

from torchnewton.core.status import Status
from torchnewton.nn.residual_stack import LayerParallelResidualStack

DOUBLE = torch.float64


def make_stack(depth: int = 10, width: int = 6, scale: float = 1.0, seed: int = 0) -> LayerParallelResidualStack:
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Linear(width, 12), nn.Tanh(), nn.Linear(12, width)) for _ in range(depth)]
    for block in blocks:
        block[2].weight.data.mul_(scale)
    return LayerParallelResidualStack(blocks).double()


def loop_reference(stack: LayerParallelResidualStack, x: torch.Tensor) -> torch.Tensor:
    """An independent sequential forward with the stacked weights, written out by hand."""
    p = dict(stack.stacked())
    h = x
    for l in range(stack.depth):
        hidden = torch.tanh(h @ p["0.weight"][l].T + p["0.bias"][l])
        h = h + hidden @ p["2.weight"][l].T + p["2.bias"][l]
    return h


@pytest.mark.parametrize("method", ["identity-newton", "newton"])
def test_layer_parallel_equals_sequential(method):
    stack = make_stack(scale=2.0)
    x = torch.randn(5, 6, dtype=DOUBLE)
    with torch.no_grad():
        out = stack(x, method=method)
        reference = loop_reference(stack, x)
    assert torch.allclose(out, reference, atol=1e-6, rtol=0)
    assert bool(stack.last_stats.success.all())
    assert stack.last_stats.sweeps <= stack.depth
    assert float(stack.last_stats.residual.max()) <= 1e-10


def test_identity_newton_exact_after_depth_sweeps_and_newton_faster():
    stack = make_stack(depth=8, scale=3.0)
    x = torch.randn(3, 6, dtype=DOUBLE)
    with torch.no_grad():
        reference = stack.sequential(x)
        errors = [float((stack.trace(x, sweeps=k) - reference).abs().max()) for k in range(1, 9)]
        # after sweep i the first i layers are exact
        for i in range(1, 8):
            partial = stack.trace(x, sweeps=i)
            assert torch.equal(partial[:, :i], reference[:, :i]) or \
                torch.allclose(partial[:, :i], reference[:, :i], atol=1e-13, rtol=0)
        assert errors[-1] <= 1e-13 and errors[0] > 1e-2
        stack(x, method="newton")
        assert stack.last_stats.sweeps <= stack.depth
        newton_sweeps = stack.last_stats.sweeps
        stack(x, method="identity-newton")
        assert newton_sweeps < stack.last_stats.sweeps


def test_too_few_sweeps_reported_honestly():
    stack = make_stack(scale=3.0)
    x = torch.randn(2, 6, dtype=DOUBLE)
    with torch.no_grad():
        stack(x, sweeps=2)
    assert stack.last_stats.sweeps == 2
    assert not bool(stack.last_stats.success.any())
    assert bool((stack.last_stats.status == int(Status.MAX_ITER)).all())
    assert float(stack.last_stats.residual.min()) > 1e-6


@pytest.mark.parametrize("method", ["identity-newton", "newton"])
def test_gradients_match_the_sequential_forward(method):
    stack = make_stack(depth=6, scale=1.5)
    x = torch.randn(4, 6, dtype=DOUBLE, requires_grad=True)
    weights = torch.randn(4, 6, dtype=DOUBLE)
    (stack(x, method=method) * weights).sum().backward()
    grads = [p.grad.clone() for p in stack.parameters()] + [x.grad.clone()]
    stack.zero_grad()
    x.grad = None
    (loop_reference(stack, x) * weights).sum().backward()
    expected = [p.grad for p in stack.parameters()] + [x.grad]
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-9, rtol=1e-7)


def test_regularizer_reduces_the_sweeps_needed():
    torch.manual_seed(1)
    data = torch.randn(64, 6, dtype=DOUBLE)
    target = torch.sin(2 * data)

    def train(weight: float) -> LayerParallelResidualStack:
        stack = make_stack(depth=10, scale=1.0, seed=3)
        optimizer = torch.optim.Adam(stack.parameters(), lr=1e-2)
        for _ in range(60):
            optimizer.zero_grad()
            loss = (stack(data, method="sequential") - target).square().mean()
            if weight:
                loss = loss + weight * stack.snlp_regularizer(data, sweeps=1)
            loss.backward()
            optimizer.step()
        return stack

    def sweeps_to(stack: LayerParallelResidualStack, rel: float) -> int:
        with torch.no_grad():
            reference = stack(data, method="sequential")
            for k in range(1, stack.depth + 1):
                if float((stack(data, sweeps=k) - reference).norm() / reference.norm()) <= rel:
                    return k
        return stack.depth + 1

    plain, regularized = train(0.0), train(1.0)
    with torch.no_grad():
        one_sweep = [float(s.snlp_regularizer(data, sweeps=1)) for s in (plain, regularized)]
    assert one_sweep[1] < 0.5 * one_sweep[0]
    # measured: 8 sweeps without, 5 with the regularizer to 1e-2 relative
    assert sweeps_to(regularized, 1e-2) + 2 <= sweeps_to(plain, 1e-2)


def test_bad_input():
    with pytest.raises(TypeError, match="blocks"):
        LayerParallelResidualStack([])
    with pytest.raises(ValueError, match="identical structure"):
        LayerParallelResidualStack([nn.Linear(3, 3), nn.Linear(3, 3, bias=False)])
    stack = make_stack(depth=2)
    with pytest.raises(ValueError, match="method"):
        stack(torch.randn(2, 6, dtype=DOUBLE), method="jacobi")
    with pytest.raises(ValueError, match="sweeps"):
        stack(torch.randn(2, 6, dtype=DOUBLE), sweeps=0)
    with pytest.raises(ValueError, match="x"):
        stack(torch.full((2, 6), float("nan"), dtype=DOUBLE))


def linear_stack(depth: int, width: int, seed: int, read=None, write=None) -> LayerParallelResidualStack:
    """Blocks g_l(h) = M_l h + c_l; with ``read``/``write`` masks, M_l only reads the coordinates in
    ``read`` and M_l, c_l only write those in ``write``."""
    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(depth):
        block = nn.Linear(width, width).double()
        block.weight.data = 0.5 * torch.randn(width, width, dtype=DOUBLE, generator=generator) / width**0.5
        block.bias.data = torch.randn(width, dtype=DOUBLE, generator=generator)
        if read is not None:
            block.weight.data *= write.unsqueeze(1) * read.unsqueeze(0)
            block.bias.data *= write
        blocks.append(block)
    return LayerParallelResidualStack(blocks).double()


def test_identity_newton_error_follows_the_sweep_operator():
    # the recursion the SNLP regularizer's docstring rests on: e'_l = Σ_{j≤l} M_j e_{j−1}, e_0 = 0,
    # from e_l = x − h_l (exact for linear blocks)
    stack = linear_stack(depth=7, width=5, seed=0)
    x = torch.randn(3, 5, dtype=DOUBLE)
    with torch.no_grad():
        h = stack.trace(x, method="sequential")
        M = stack.stacked()["weight"]
        error = x.unsqueeze(1) - h
        for k in range(1, 5):
            previous = torch.cat([torch.zeros_like(error[:, :1]), error[:, :-1]], 1)  # e_{l−1}
            error = torch.einsum("lij,blj->bli", M, previous).cumsum(1)
            assert torch.allclose(stack.trace(x, sweeps=k) - h, error, atol=1e-12, rtol=0), k
        assert float(error.abs().max()) > 1e-3  # 4 sweeps of 7 layers: not yet exact


def test_one_sweep_is_exact_when_no_block_reads_what_another_writes():
    # blocks read coordinates 0..2 and write 3..5: each sees x only, so h_L = x + Σ g_l(x) after one sweep
    read = torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=DOUBLE)
    stack = linear_stack(depth=9, width=6, seed=1, read=read, write=1 - read)
    x = torch.randn(4, 6, dtype=DOUBLE)
    with torch.no_grad():
        one = stack(x, sweeps=1)
        assert torch.allclose(one, stack(x, method="sequential"), atol=1e-12, rtol=0)
        assert float(stack.snlp_regularizer(x, sweeps=1)) <= 1e-24
