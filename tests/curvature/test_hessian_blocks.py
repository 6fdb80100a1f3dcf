"""HessianOperator on blocks of vectors: every route (double backward, reverse-over-reverse in
chunks, forward-over-reverse) equals the dense float64 Hessian of torch.autograd.functional, and
mode='auto' takes the route its docstring states."""
import pytest
import torch

from curvature_helpers import F64, classification_batch, conv_net, dense_hessian, mlp, regression_batch, relative_error
from torchnewton.curvature import HessianOperator
from torchnewton.curvature.params import flatten, unflatten
from torchnewton.curvature.products import forward_elements, hessian_reverse_over_reverse

TOL = 1e-10


def _cases():
    g = torch.Generator().manual_seed(3)
    conv_batch = (torch.randn(3, 2, 4, 4, dtype=F64, generator=g), torch.randint(0, 3, (3, 4, 4), generator=g))
    return {  # name: (model, loss, batch)
        "mlp cross-entropy": (mlp(sizes=(3, 5, 4, 3)), torch.nn.CrossEntropyLoss(), classification_batch()),
        "mlp mse sum": (mlp(), torch.nn.MSELoss(reduction="sum"), regression_batch()),
        "conv per-pixel cross-entropy": (conv_net(), torch.nn.CrossEntropyLoss(), conv_batch),
        "plain function (autograd loss backward)": (mlp(), lambda f, y: ((f - y) ** 4).mean(), regression_batch()),
    }


def _block(n: int, count: int) -> torch.Tensor:
    return torch.randn(count, n, dtype=F64, generator=torch.Generator().manual_seed(count))


@pytest.mark.parametrize("mode", HessianOperator.MODES)
@pytest.mark.parametrize("case", list(_cases()))
def test_every_route_equals_dense_hessian_on_blocks(case, mode):
    model, loss, batch = _cases()[case]
    H = HessianOperator(model, loss, batch, mode=mode)
    reference = dense_hessian(model, loss, [batch])
    for count in (1, 2, 7):
        V = _block(H.num_parameters, count)
        assert relative_error(H.matvec(V), V @ reference) < TOL, (count, H.route(count, batch[0]))


@pytest.mark.parametrize("case", list(_cases()))
def test_chunks_that_do_not_divide_the_block(case):
    """A budget of three forward passes' elements: chunks of 3, 2 and 2 vectors for a block of 7."""
    model, loss, batch = _cases()[case]
    H = HessianOperator(model, loss, batch)
    H.CHUNK_BYTES = (3 * forward_elements(H.function, H.params, batch[0]) + 1) * 8  # float64
    assert H.route(7, batch[0]) == ("reverse-over-reverse", 3)
    V = _block(H.num_parameters, 7)
    reference = V @ dense_hessian(model, loss, [batch])
    assert relative_error(H.matvec(V), reference) < TOL
    gradient = H.output_loss.reduced_gradient if H.output_loss is not None else None
    for chunk in (1, 4):  # one vector per pullback; chunks of 4 and 3
        parts = hessian_reverse_over_reverse(H.function, loss, *batch, H.params, unflatten(V, H.params), gradient,
                                             chunk)
        assert relative_error(flatten(parts, batch_dims=1), reference) < TOL


def test_auto_route_choice():
    model, loss, (x, y) = _cases()["mlp cross-entropy"]
    H = HessianOperator(model, loss, (x, y))
    assert H.mode == "auto"
    assert H.route(1, x) == ("double-backward", 1)
    assert H.route(16, x) == ("reverse-over-reverse", 16)  # a tiny model: the whole block in one chunk
    per_vector = forward_elements(H.function, H.params, x) * 8  # bytes in float64
    H.CHUNK_BYTES = 4 * per_vector + 7
    assert H.route(16, x) == ("reverse-over-reverse", 4)
    H.CHUNK_BYTES = 2 * per_vector - 1  # fewer than two vectors fit: one backward per vector
    assert H.route(16, x) == ("double-backward", 1)
    for mode in ("double-backward", "reverse-over-reverse", "forward-over-reverse"):
        fixed = HessianOperator(model, loss, (x, y), mode=mode)
        expected = (mode, 1) if mode == "double-backward" else (mode, 16)
        assert fixed.route(16, x) == expected
    with pytest.raises(ValueError, match="block"):
        H.route(0, x)
    with pytest.raises(ValueError, match="mode"):
        HessianOperator(model, loss, (x, y), mode="reverse")


def test_forward_elements_grow_with_the_batch_by_the_activations_per_sample():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(F64)
    H = HessianOperator(model, torch.nn.MSELoss(), regression_batch(n=5, outputs=2))
    small, large = (forward_elements(H.function, H.params, torch.zeros(n, 3, dtype=F64)) for n in (5, 15))
    assert large - small == 10 * (4 + 4 + 2)  # linear, tanh and linear outputs of 10 more samples
    assert small >= 5 * (4 + 4 + 2)


def test_one_dropout_mask_for_the_whole_block():
    """In training mode with dropout each product draws a mask; the block routes draw one for
    all vectors, so equal vectors give equal products."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(6, 3)).to(F64).train()
    x, y = classification_batch()
    with pytest.warns(UserWarning, match="dropout"):
        H = HessianOperator(model, torch.nn.CrossEntropyLoss(), (x, y), mode="reverse-over-reverse")
    v = _block(H.num_parameters, 1)
    out = H.matvec(v.expand(4, -1).contiguous())
    assert torch.equal(out[0], out[3]) and float(out.norm()) > 0
