"""Dense user cells: the blocked Newton step (recurrence.dense), the native dense scan, and
method="auto" (Jacobi, then Newton when Jacobi is predicted slower)."""
import pytest
import torch
from torch import nn

from torchnewton import Status
from torchnewton.derivatives import rowwise
from torchnewton.recurrence import DiagonalGRUCell, ParallelRNN, native, run_sequential, solve
from torchnewton.recurrence import problem as problem_module
from torchnewton.recurrence.dense import DenseLinearization
from torchnewton.recurrence.scan import scan_batched

F64 = torch.float64


class Elman(nn.Module):
    """h' = tanh(W h + U x + b), nothing declared: a dense Jacobian. ``orthogonal`` makes every
    eigenvalue of W of modulus ``scale`` (slow mixing: Jacobi needs many iterations)."""

    def __init__(self, m, d, dtype, scale=0.9, orthogonal=False, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w_h = nn.Linear(d, d, bias=False, dtype=dtype)
        self.w_x = nn.Linear(m, d, dtype=dtype)
        with torch.no_grad():
            w = torch.randn(d, d, generator=g, dtype=dtype)
            w = torch.linalg.qr(w)[0] if orthogonal else w / torch.linalg.matrix_norm(w, 2)
            self.w_h.weight.copy_(scale * w)

    def forward(self, h, x):
        return torch.tanh(self.w_h(h) + self.w_x(x))


class DiagonalDeclared(nn.Module):
    jacobian_structure = "diagonal"

    def __init__(self, m, d, dtype):
        super().__init__()
        self.proj = nn.Linear(m, d, dtype=dtype)

    def forward(self, h, x):
        return torch.tanh(0.8 * h + self.proj(x))


def _data(B, T, m, d, dtype, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.zeros(B, d, dtype=dtype), scale * torch.randn(B, T, m, generator=g, dtype=dtype)


def _rel(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_native_dense_scan_matches_torch(dtype):
    if not native.available(dtype):
        pytest.skip("no C compiler: the torch scan is used (covered by the solve tests)")
    B, T, d = 3, 40, 5
    g = torch.Generator().manual_seed(0)
    rows = [0.4 * torch.randn(B * T, d, generator=g, dtype=dtype) for _ in range(d)]
    b = torch.randn(B, T, d, generator=g, dtype=dtype)
    h0 = torch.randn(B, d, generator=g, dtype=dtype)
    A = torch.stack(rows, 1).view(B, T, d, d)
    ref = scan_batched(A, b, h0, "dense", algorithm="sequential")
    out = b.clone()
    assert native.scan_dense(rows, out, h0, out)  # in place, as the Newton step uses it
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(out, ref, atol=tol, rtol=tol)
    # a time slice of a longer buffer (rows strided by T * d between sequences)
    big = torch.randn(B, T + 7, d, generator=g, dtype=dtype)
    part = big[:, 3:3 + T]
    expected = scan_batched(A, part.clone(), h0, "dense", algorithm="sequential")
    assert native.scan_dense(rows, part, h0, part)
    assert torch.allclose(part, expected, atol=tol, rtol=tol)
    assert not native.scan_dense(rows[:-1], b.clone(), h0, b.clone())  # wrong row count: declined


def test_dense_linearization_matches_autograd_jacobian():
    cell = Elman(3, 6, F64)
    h = torch.randn(9, 6, dtype=F64)
    x = torch.randn(9, 3, dtype=F64)
    lin = DenseLinearization(cell)
    out, jac = lin.jacobian(h, x)
    ref_out, ref_jac = rowwise.dense_jacobian(cell, h, x)
    with torch.no_grad():  # the Elman Jacobian in closed form: diag(1 - y^2) W
        y = cell(h, x)
        explicit = (1 - y ** 2).unsqueeze(-1) * cell.w_h.weight
    assert torch.allclose(out, ref_out) and torch.allclose(jac, explicit, atol=1e-12)
    assert torch.allclose(ref_jac, explicit, atol=1e-12)


def test_dense_linearization_of_state_independent_cell_is_zero():
    lin = DenseLinearization(lambda h, x: torch.tanh(x))
    out, rows = lin.rows(torch.zeros(4, 3), torch.randn(4, 3))
    assert len(rows) == 3 and all(bool((r == 0).all()) for r in rows)


@pytest.mark.parametrize("native_scan", [True, False])
def test_blocked_newton_agrees_with_loop(monkeypatch, native_scan):
    """Many small blocks (each with its carry) and the torch fallback give the loop's states."""
    cell = Elman(3, 6, F64, scale=0.95)
    h0, xs = _data(2, 300, 3, 6, F64)
    ref = run_sequential(cell, h0, xs)
    whole = solve(cell, h0, xs, method="newton")
    monkeypatch.setattr(problem_module, "_DENSE_BLOCK_ELEMENTS", 2 * 6 * 37)  # 37 steps per block
    if not native_scan:
        monkeypatch.setattr(native, "scan_dense", lambda *args: False)
    blocked = solve(cell, h0, xs, method="newton")
    assert bool(blocked.success.all()) and blocked.method == "newton"
    assert _rel(blocked.h, ref) < 1e-10 and _rel(whole.h, ref) < 1e-10
    assert torch.equal(blocked.nit, whole.nit)
    assert int(blocked.nit.max()) <= 8  # quadratic convergence, not the T-step guarantee


def test_auto_uses_jacobi_on_a_fast_mixing_dense_cell():
    """Jacobi's ~10-20 iterations cost less than 3 Newton iterations (d = 24 products each)."""
    cell = Elman(4, 24, torch.float32, scale=0.5)
    h0, xs = _data(1, 2000, 4, 24, torch.float32)
    res = solve(cell, h0, xs)  # the default method
    assert res.method == "jacobi"
    assert bool(res.success.all()) and _rel(res.h, run_sequential(cell, h0, xs)) < 1e-5
    f64 = solve(cell.double(), h0.double(), xs.double())
    assert f64.method == "jacobi" and bool(f64.success.all())
    assert _rel(f64.h, run_sequential(cell, h0.double(), xs.double())) < 1e-6


def test_auto_switches_to_newton_when_jacobi_is_slow():
    cell = Elman(3, 8, F64, scale=0.995, orthogonal=True)
    h0, xs = _data(1, 3000, 3, 8, F64, scale=0.1)
    ref = run_sequential(cell, h0, xs)
    jacobi = solve(cell, h0, xs, method="jacobi")
    res = solve(cell, h0, xs, method="auto", record_history=True)
    assert res.method.startswith("jacobi (") and res.method.endswith("then newton")
    assert bool(res.success.all()) and _rel(res.h, ref) < 1e-6
    assert int(res.nit.max()) < int(jacobi.nit.max()) / 4
    flags = [bool(r["newton"].all()) for r in res.history]
    assert not flags[0] and flags[-1] and flags == sorted(flags)  # Jacobi first, Newton to the end


def test_auto_float32_meets_documented_tolerance():
    cell = Elman(4, 24, torch.float32, scale=0.9)
    h0, xs = _data(1, 4000, 4, 24, torch.float32)
    ref = run_sequential(cell.double(), h0.double(), xs.double())
    cell.float()
    for method in ("auto", "newton", "jacobi", "quasi-newton"):
        res = solve(cell, h0, xs, method=method)
        assert bool(res.success.all()), method
        assert _rel(res.h.double(), ref) < 1e-5, method


def test_auto_batched_statuses_and_agreement():
    cell = Elman(3, 6, F64, scale=0.99, orthogonal=True)
    h0, xs = _data(3, 500, 3, 6, F64, scale=0.2)
    ref = run_sequential(cell, h0, xs)
    res = solve(cell, h0, xs)
    assert res.status.shape == (3,) and bool((res.status == int(Status.SUCCESS)).all())
    assert _rel(res.h, ref) < 1e-6
    # every member converged to the loop's states, whichever phase finished it
    assert all(_rel(res.h[b], ref[b]) < 1e-6 for b in range(3))


def test_auto_is_newton_for_structured_and_declared_cells():
    torch.manual_seed(0)
    gru = DiagonalGRUCell(3, 8, dtype=F64)
    h0, xs = _data(1, 500, 3, 8, F64)
    res = solve(gru, h0, xs)
    assert res.method == "newton" and bool(res.success.all())
    assert _rel(res.h, run_sequential(gru, h0, xs)) < 1e-6
    declared = DiagonalDeclared(3, 8, F64)
    res = solve(declared, h0, xs)
    assert res.method == "newton" and _rel(res.h, run_sequential(declared, h0, xs)) < 1e-6
    assert solve(declared, h0, xs, method="jacobi").method == "jacobi"


def test_auto_reports_max_iter_honestly():
    cell = Elman(3, 8, F64, scale=0.995, orthogonal=True)
    h0, xs = _data(1, 3000, 3, 8, F64, scale=0.1)
    res = solve(cell, h0[0], xs[0], max_iter=2)
    assert res.status == Status.MAX_ITER and not res.success and res.nit == 2
    assert float(res.residual) > 1e-12


def test_parallel_rnn_defaults_to_auto():
    cell = Elman(4, 24, torch.float32, scale=0.5)
    rnn = ParallelRNN(cell)
    h0, xs = _data(2, 200, 4, 24, torch.float32)
    out = rnn(xs, h0)
    assert rnn.method == "auto" and rnn.last_result.method == "jacobi"
    assert _rel(out, run_sequential(cell, h0, xs)) < 1e-5
    out.sum().backward()  # implicit gradients through the dense Jacobians
    assert cell.w_h.weight.grad is not None and bool(torch.isfinite(cell.w_h.weight.grad).all())
