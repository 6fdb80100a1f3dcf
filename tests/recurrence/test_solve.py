import copy

import pytest
import torch
from torch import nn

from torchnewton import Status
from torchnewton.recurrence import DiagonalCIFGLSTMCell, DiagonalGRUCell, ParallelRNN, run_sequential, solve
from torchnewton.recurrence.problem import dense_jacobian

F64 = torch.float64


class TorchGRUCell(nn.Module):
    """A full-weight GRU as a generic cell f(h, x): goes through the dense path."""

    def __init__(self, m, d, dtype):
        super().__init__()
        self.gru = nn.GRUCell(m, d, dtype=dtype)

    def forward(self, h, x):
        return self.gru(x, h)


def make(kind, dtype, d=5, m=3, seed=0):
    torch.manual_seed(seed)
    if kind == "diagonal":
        return DiagonalGRUCell(m, d, dtype=dtype)
    if kind == "block":
        return DiagonalCIFGLSTMCell(m, d, dtype=dtype)
    return TorchGRUCell(m, d, dtype)


def data(cell, B, T, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    d = cell.state_size if hasattr(cell, "state_size") else cell.gru.hidden_size
    m = cell.input_size if hasattr(cell, "input_size") else cell.gru.input_size
    h0 = 0.5 * torch.randn(B, d, generator=gen, dtype=dtype)
    xs = torch.randn(B, T, m, generator=gen, dtype=dtype)
    return h0, xs


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("kind", ["diagonal", "block", "dense"])
@pytest.mark.parametrize("T", [1, 2, 777])
@pytest.mark.parametrize("method", ["newton", "quasi-newton", "damped", "jacobi"])
def test_agrees_with_sequential_float64(kind, T, method):
    cell = make(kind, F64)
    h0, xs = data(cell, 3, T, F64)
    ref = run_sequential(cell, h0, xs)
    res = solve(cell, h0, xs, method=method)
    assert bool(res.success.all()) and res.status.eq(int(Status.SUCCESS)).all()
    assert res.h.shape == ref.shape
    assert rel(res.h, ref) < 1e-10
    assert float(res.residual.max()) <= 4e-11


@pytest.mark.parametrize("kind", ["diagonal", "block", "dense"])
@pytest.mark.parametrize("T", [1, 2, 777, 100_000])
def test_newton_agrees_with_sequential_float32(kind, T):
    # The reference is the sequential float32 loop of the same cell. A residual at the default
    # tolerance alone leaves state errors amplified by slow dynamics; Newton's stopping rule
    # also bounds the estimated state error.
    cell = make(kind, torch.float32, d=8)
    h0, xs = data(cell, 1 if T > 1000 else 3, T, torch.float32)
    with torch.no_grad():
        ref = run_sequential(cell, h0, xs)
        res = solve(cell, h0, xs)
    assert bool(res.success.all())
    assert rel(res.h, ref) < 1e-5


@pytest.mark.parametrize("kind", ["diagonal", "block", "dense"])
@pytest.mark.parametrize("method", ["newton", "quasi-newton"])
def test_agrees_with_sequential_float32(kind, method):
    cell = make(kind, torch.float32)
    h0, xs = data(cell, 2, 3000, torch.float32)
    ref = run_sequential(cell, h0, xs)
    # quasi-newton converges linearly: its state error is the residual over (1 - rate), so it
    # needs a tighter residual tolerance than Newton for the same agreement.
    res = solve(cell, h0, xs, method=method, tol=1e-6 if method == "quasi-newton" else None)
    assert bool(res.success.all())
    assert rel(res.h, ref) < 1e-5


def test_long_diagonal_sequence_100k():
    cell = make("diagonal", F64, d=4)
    h0, xs = data(cell, 2, 100_000, F64)
    with torch.no_grad():
        ref = run_sequential(cell, h0, xs)
        res = solve(cell, h0, xs)
    assert bool(res.success.all()) and int(res.nit.max()) <= 6
    assert rel(res.h, ref) < 1e-10


def gradient_error(kind, dtype, T, method="newton", B=2, d=5):
    """Largest relative difference between the gradients (w.r.t. h0, xs and the cell's parameters)
    of sum(w * h) through ``solve`` (implicit) and through the sequential loop (autograd)."""
    cell = make(kind, dtype, d=d)
    h0, xs = data(cell, B, T, dtype)
    h0.requires_grad_()
    xs.requires_grad_()
    weight = torch.randn(B, T, h0.shape[-1], dtype=dtype, generator=torch.Generator().manual_seed(5))
    inputs = [h0, xs, *cell.parameters()]
    ref = torch.autograd.grad((run_sequential(cell, h0, xs) * weight).sum(), inputs)
    got = torch.autograd.grad((solve(cell, h0, xs, method=method).h * weight).sum(), inputs)
    return max(rel(g, r) for g, r in zip(got, ref))


@pytest.mark.parametrize("kind", ["diagonal", "block", "dense"])
@pytest.mark.parametrize("method", ["newton", "quasi-newton", "jacobi"])
def test_gradients_match_autograd_through_loop(kind, method):
    assert gradient_error(kind, F64, 300, method) < 1e-10


@pytest.mark.parametrize("kind", ["diagonal", "block", "dense"])
@pytest.mark.parametrize("T", [1, 2, 777])
def test_gradients_float64_and_float32(kind, T):
    assert gradient_error(kind, F64, T) < 1e-10
    assert gradient_error(kind, torch.float32, T) < 1e-5


def torch_gru_gradients(cell, h0, xs, weight):
    """Gradients of sum(w * h) w.r.t. h0, xs and the cell's parameters (by name) through
    torch.nn.GRU holding the same function as ``cell`` (a diagonal GRU or a GRUCell): the
    sequential loop in C++, fast enough to differentiate through 100,000 steps."""
    if isinstance(cell, DiagonalGRUCell):
        gru = cell.to_torch_gru()
    else:
        gru = nn.GRU(cell.gru.input_size, cell.gru.hidden_size, batch_first=True, dtype=h0.dtype)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(gru, name + "_l0").copy_(getattr(cell.gru, name))
    h0 = h0.detach().requires_grad_()
    xs = xs.detach().requires_grad_()
    names = ("weight_ih", "bias_ih", "weight_hh", "bias_hh")
    grads = torch.autograd.grad((gru(xs, h0.unsqueeze(0))[0] * weight).sum(),
                                [h0, xs, *(getattr(gru, n + "_l0") for n in names)])
    wrt = {"h0": grads[0], "xs": grads[1]}
    g = dict(zip(names, grads[2:]))
    if not isinstance(cell, DiagonalGRUCell):
        return wrt | {f"gru.{n}": v for n, v in g.items()}
    # the diagonal cell's recurrent weights are the diagonals of weight_hh's three (d, d) blocks
    diag = torch.stack([torch.diagonal(block) for block in g["weight_hh"].split(cell.hidden_size)])
    return wrt | {"input_proj.weight": g["weight_ih"], "input_proj.bias": g["bias_ih"],
                  "recurrent_weight": diag, "recurrent_bias": g["bias_hh"].reshape(3, -1)}


@pytest.mark.parametrize("kind", ["diagonal", "dense"])
def test_gradients_100k_steps(kind):
    # Reference: autograd through torch.nn.GRU's sequential loop computing the same function, in
    # float64. Float32 gradients are held to it too: the float32 loop's own gradients differ from
    # it by up to 1e-5 relative on this problem (sums of 100,000 terms).
    cell = make(kind, F64, d=4)
    h0, xs = data(cell, 1, 100_000, F64)
    weight = torch.randn(1, 100_000, 4, dtype=F64, generator=torch.Generator().manual_seed(5))
    ref = torch_gru_gradients(cell, h0, xs, weight)
    for dtype, tol in ((F64, 1e-10), (torch.float32, 1e-5)):
        c = copy.deepcopy(cell).to(dtype)
        h0_c, xs_c = h0.to(dtype).requires_grad_(), xs.to(dtype).requires_grad_()
        inputs = {"h0": h0_c, "xs": xs_c} | dict(c.named_parameters())
        assert set(inputs) == set(ref)
        got = torch.autograd.grad((solve(c, h0_c, xs_c).h * weight.to(dtype)).sum(), list(inputs.values()))
        for name, g in zip(inputs, got):
            assert rel(g.double(), ref[name]) < tol, (dtype, name)


def test_block_cell_gradients_100k_steps():
    # No torch module computes the CIFG LSTM, so the reference is autograd through the Python loop
    # in float64 (about a minute, nearly all of the test). As for the other cells, float32
    # gradients are held to that float64 reference.
    cell = make("block", F64, d=4)
    h0, xs = data(cell, 1, 100_000, F64)
    weight = torch.randn(1, 100_000, cell.state_size, dtype=F64, generator=torch.Generator().manual_seed(5))
    inputs = {"h0": h0.requires_grad_(), "xs": xs.requires_grad_()} | dict(cell.named_parameters())
    ref = torch.autograd.grad((run_sequential(cell, h0, xs) * weight).sum(), list(inputs.values()))
    for dtype, tol in ((F64, 1e-10), (torch.float32, 1e-5)):
        c = copy.deepcopy(cell).to(dtype)
        h0_c, xs_c = h0.detach().to(dtype).requires_grad_(), xs.detach().to(dtype).requires_grad_()
        got = torch.autograd.grad((solve(c, h0_c, xs_c).h * weight.to(dtype)).sum(),
                                  [h0_c, xs_c, *c.parameters()])
        for name, g, r in zip(inputs, got, ref):
            assert rel(g.double(), r) < tol, (dtype, name)


@pytest.mark.parametrize("kind", ["diagonal", "block"])
def test_structured_jacobian_is_exact(kind):
    cell = make(kind, F64)
    h, xs = data(cell, 40, 1, F64)
    u = cell.preprocess(xs[:, 0])
    out, jac = cell.transition_and_jacobian(h, u)
    ref_out, ref_jac = dense_jacobian(cell.transition, h, u)
    assert torch.allclose(out, ref_out, atol=1e-14)
    dense = torch.diag_embed(jac) if kind == "diagonal" else torch.block_diag(*jac[0]).expand(1, -1, -1)
    if kind == "block":
        dense = torch.stack([torch.block_diag(*blocks) for blocks in jac])
    assert torch.allclose(dense, ref_jac, atol=1e-13)


def test_diagonal_gru_equals_torch_gru():
    cell = make("diagonal", F64, d=6)
    h0, xs = data(cell, 3, 200, F64)
    ref = cell.to_torch_gru()(xs, h0.unsqueeze(0))[0]
    assert rel(solve(cell, h0, xs).h, ref) < 1e-12


def test_first_i_states_exact_after_i_iterations():
    # Weak contraction and a bad start make every method need many iterations.
    torch.manual_seed(0)
    W = torch.randn(4, 4, dtype=F64)
    W = 1.5 * W / torch.linalg.matrix_norm(W, 2)

    def cell(h, x):
        return torch.tanh(h @ W.T + x)

    h0 = torch.zeros(1, 4, dtype=F64)
    xs = 2 * torch.randn(1, 60, 4, dtype=F64)
    ref = run_sequential(cell, h0, xs)
    for method in ("newton", "quasi-newton", "jacobi"):
        for i in (1, 5, 17):
            res = solve(cell, h0, xs, method=method, max_iter=i)
            assert (res.h[:, :i] - ref[:, :i]).abs().max() < 1e-12
    jacobi = solve(cell, h0, xs, method="jacobi")  # default max_iter = T: converges
    assert bool(jacobi.success.all()) and int(jacobi.nit.max()) <= 60


def test_non_convergence_is_reported():
    cell = make("block", F64)
    h0, xs = data(cell, 2, 200, F64)
    res = solve(cell, h0, xs, method="jacobi", max_iter=3)
    assert not bool(res.success.any())
    assert res.status.eq(int(Status.MAX_ITER)).all()
    assert float(res.residual.min()) > 1e-3
    assert res.nit.tolist() == [3, 3]
    assert "MAX_ITER" in res.message
    rnn = ParallelRNN(cell, method="jacobi", max_iter=3)
    with pytest.raises(RuntimeError, match="did not converge"):
        rnn(xs, h0)
    fallback = ParallelRNN(cell, method="jacobi", max_iter=3, on_failure="sequential")
    assert rel(fallback(xs, h0), run_sequential(cell, h0, xs)) == 0.0


def test_nonfinite_cell_reports_status():
    def cell(h, x):
        return torch.where(x > 2.5, torch.nan, torch.tanh(h + x))

    xs = torch.zeros(1, 50, 3, dtype=F64)
    xs[0, 30] = 3.0
    res = solve(cell, torch.zeros(1, 3, dtype=F64), xs)
    assert res.status.tolist() == [int(Status.NONFINITE)] and not bool(res.success.any())


@pytest.mark.parametrize("gain", [1.5, 2.0, 3.0, 5.0])
def test_damped_handles_unstable_dynamics(gain):
    # Jacobians up to `gain` in magnitude: products over T steps grow like gain^T. The damped
    # (quasi-ELK filter) scans stay stable, and the undamped frontier bounds the iterations by T.
    def cell(h, x):
        return torch.tanh(gain * h + x)

    gen = torch.Generator().manual_seed(3)
    xs = torch.randn(2, 400, 3, generator=gen, dtype=F64)
    h0 = torch.zeros(2, 3, dtype=F64)
    ref = run_sequential(cell, h0, xs)
    res = solve(cell, h0, xs, method="damped", record_history=True)
    assert bool(res.success.all()) and int(res.nit.max()) <= 400
    assert rel(res.h, ref) < 1e-9
    assert len(res.history) == int(res.nit.max()) + 1 and "damping" in res.history[0]
    if gain == 2.0:  # mildly unstable: far fewer iterations than T
        assert int(res.nit.max()) < 100
    newton = solve(cell, h0, xs, method="newton")
    assert bool(newton.success.all()) and rel(newton.h, ref) < 1e-9


def test_newton_survives_overflowing_scans():
    # Gain 2.5 in float32: products of Jacobians overflow in the scan; those members fall back to
    # the Jacobi step for that iteration, and the prefix guarantee still gives convergence.
    def cell(h, x):
        return torch.tanh(2.5 * h + x)

    gen = torch.Generator().manual_seed(3)
    xs = torch.randn(2, 400, 3, generator=gen)
    h0 = torch.zeros(2, 3)
    res = solve(cell, h0, xs, method="newton")
    assert bool(res.success.all())
    assert rel(res.h, run_sequential(cell, h0, xs)) < 1e-5


def test_initial_guesses_and_unbatched_call():
    cell = make("diagonal", F64)
    h0, xs = data(cell, 1, 500, F64)
    ref = run_sequential(cell, h0, xs)[0]
    res = solve(cell, h0[0], xs[0], init="cell-at-zero")
    assert res.h.shape == (500, 5) and res.success is True and res.status == Status.SUCCESS
    assert isinstance(res.nit, int) and rel(res.h, ref) < 1e-10
    warm = solve(cell, h0[0], xs[0], init=res.h)
    assert warm.nit == 0 and warm.success
    assert "success" in repr(warm)
    # the iteration updates its states in place, never the caller's initial guess
    guess = res.h + 0.01
    kept = guess.clone()
    near = solve(cell, h0[0], xs[0], init=guess)
    assert near.nit >= 1 and rel(near.h, ref) < 1e-10 and torch.equal(guess, kept)


def test_sequential_method():
    cell = make("block", F64)
    h0, xs = data(cell, 2, 50, F64)
    res = solve(cell, h0, xs, method="sequential")
    assert res.nit.tolist() == [50, 50] and float(res.residual.max()) < 1e-14


def test_bad_inputs():
    cell = make("diagonal", F64)
    h0, xs = data(cell, 2, 10, F64)
    with pytest.raises(ValueError, match="h0 has last dimension 4 but cell.state_size is 5"):
        solve(cell, h0[:, :4], xs)
    with pytest.raises(ValueError, match="xs has last dimension 2 but cell.input_size is 3"):
        solve(cell, h0, xs[..., :2])
    with pytest.raises(ValueError, match="batch sizes differ"):
        solve(cell, h0, xs[:1])
    with pytest.raises(ValueError, match=r"xs must have shape \(B, T, m\)"):
        solve(cell, h0, xs[0])
    with pytest.raises(ValueError, match="at least one time step"):
        solve(cell, h0, xs[:, :0])
    with pytest.raises(TypeError, match="xs has dtype"):
        solve(cell, h0, xs.float())
    with pytest.raises(TypeError, match="h0 must be a torch.Tensor"):
        solve(cell, [0.0] * 5, xs)
    with pytest.raises(ValueError, match="h0 contains non-finite"):
        solve(cell, h0 * torch.nan, xs)
    with pytest.raises(TypeError, match="cell must be a callable"):
        solve(3, h0, xs)
    with pytest.raises(ValueError, match="unknown method 'deer'"):
        solve(cell, h0, xs, method="deer")
    with pytest.raises(ValueError, match="unknown jacobian"):
        solve(cell, h0, xs, jacobian="sparse")
    with pytest.raises(ValueError, match="damping applies to method='damped' only"):
        solve(cell, h0, xs, damping=1.0)
    with pytest.raises(ValueError, match="tol must be > 0"):
        solve(cell, h0, xs, tol=0.0)
    with pytest.raises(ValueError, match="init must have shape"):
        solve(cell, h0, xs, init=torch.zeros(2, 9, 5, dtype=F64))
    with pytest.raises(ValueError, match="unknown init"):
        solve(cell, h0, xs, init="random")
    generic = TorchGRUCell(3, 5, F64)
    with pytest.raises(ValueError, match="cell must map h"):
        solve(lambda h, x: h[:, :2], h0, xs)
    with pytest.raises(ValueError, match=r"cell\(h, x\) failed"):
        solve(generic, h0, xs[..., :2])
    with pytest.raises(ValueError, match="jacobian='structured' needs a cell"):
        solve(generic, h0, xs, jacobian="structured")


def test_parallel_rnn_trains_like_sequential():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(4, 300, 3, generator=gen, dtype=F64)
    target = torch.randn(4, 300, 8, generator=gen, dtype=F64)
    losses = {}
    for method in ("newton", "sequential"):
        torch.manual_seed(0)
        rnn = ParallelRNN(DiagonalCIFGLSTMCell(3, 4, dtype=F64), method=method)
        opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
        for _ in range(5):
            loss = (rnn(xs) - target).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[method] = loss.item()
        assert rnn.last_result is not None
    assert abs(losses["newton"] - losses["sequential"]) < 1e-12
    with pytest.raises(ValueError, match="h0 is required"):
        ParallelRNN(TorchGRUCell(3, 5, F64))(xs)
