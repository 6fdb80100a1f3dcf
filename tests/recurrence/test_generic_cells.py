"""User-defined cells: declared Jacobian structure, reverse-mode Jacobians, the success contract."""
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from torchnewton import Status
from torchnewton.recurrence import DiagonalCIFGLSTMCell, run_sequential, solve
from torchnewton.derivatives import rowwise
from torchnewton.recurrence.dense import DenseLinearization
from torchnewton.recurrence.problem import diagonal_of

F64 = torch.float64


class GatedDiagonalCell(nn.Module):
    """Elementwise in h (a diagonal Jacobian): h' = z h + (1 - z) tanh(a h + c), (z, c) from x."""

    jacobian_structure = "diagonal"

    def __init__(self, m, d, dtype, a=1.0):
        super().__init__()
        self.proj = nn.Linear(m, 2 * d, dtype=dtype)
        self.a = nn.Parameter(a * (2 * torch.rand(d, dtype=dtype) - 1))

    def forward(self, h, x):
        g, c = self.proj(x).chunk(2, -1)
        z = torch.sigmoid(g)
        return z * h + (1 - z) * torch.tanh(self.a * h + c)


class PairCell(nn.Module):
    """Couples consecutive pairs of coordinates only: 2x2-block-diagonal Jacobian."""

    jacobian_structure = "block-diagonal"
    block_size = 2

    def __init__(self, m, d, dtype):
        super().__init__()
        self.mix = nn.Parameter(0.6 * torch.randn(d // 2, 2, 2, dtype=dtype))
        self.proj = nn.Linear(m, d, dtype=dtype)

    def forward(self, h, x):
        pairs = h.unflatten(-1, (-1, 2))
        mixed = (self.mix * pairs.unsqueeze(-2)).sum(-1).flatten(-2)
        return torch.tanh(mixed + self.proj(x))


class ElmanCell(nn.Module):
    """A dense Jacobian: h' = tanh(W h + U x + b) with ||W||_2 = scale, declared nothing."""

    def __init__(self, m, d, dtype, scale=0.9):
        super().__init__()
        self.w_h = nn.Linear(d, d, bias=False, dtype=dtype)
        self.w_x = nn.Linear(m, d, dtype=dtype)
        with torch.no_grad():
            self.w_h.weight.mul_(scale / torch.linalg.matrix_norm(self.w_h.weight, 2))

    def forward(self, h, x):
        return torch.tanh(self.w_h(h) + self.w_x(x))


def make(kind, dtype, d=6, m=3, seed=0):
    torch.manual_seed(seed)
    return {"diagonal": GatedDiagonalCell, "block": PairCell, "dense": ElmanCell}[kind](m, d, dtype)


def data(B, T, d, m, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(B, d, generator=gen, dtype=dtype), torch.randn(B, T, m, generator=gen, dtype=dtype)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def per_row_jacobians(cell, h, x):
    """Reference: torch.autograd.functional.jacobian of one row at a time."""
    return torch.stack([torch.autograd.functional.jacobian(lambda v: cell(v[None], x[i:i + 1])[0], h[i])
                        for i in range(h.shape[0])])


@pytest.mark.parametrize("kind", ["diagonal", "block", "dense"])
def test_structured_products_agree_with_dense_jacobians(kind):
    cell = make(kind, F64)
    h, x = torch.randn(7, 6, dtype=F64), torch.randn(7, 3, dtype=F64)
    reference = per_row_jacobians(cell, h, x)
    out, dense = rowwise.dense_jacobian(cell, h, x)
    assert torch.allclose(out, cell(h, x), atol=1e-15) and torch.allclose(dense, reference, atol=1e-13)
    structure = kind  # the storage names: "diagonal", "block", "dense"
    _, structured = rowwise.cell_jacobian(cell, h, x, structure, 2 if kind == "block" else 1)
    if kind == "diagonal":
        embedded = torch.diag_embed(structured)
    elif kind == "block":
        embedded = torch.stack([torch.block_diag(*blocks) for blocks in structured])
    else:
        embedded = structured
    assert torch.allclose(embedded, reference, atol=1e-13)
    # the declared structure holds: nothing of the reference lies outside it
    assert torch.allclose(diagonal_of(structured, structure), torch.diagonal(reference, dim1=-2, dim2=-1),
                          atol=1e-13)
    _, diag = rowwise.dense_jacobian_diagonal(cell, h, x)
    assert torch.allclose(diag, torch.diagonal(reference, dim1=-2, dim2=-1), atol=1e-13)


@pytest.mark.parametrize("kind", ["diagonal", "block"])
@pytest.mark.parametrize("declared_by", ["attribute", "argument"])
def test_declared_structure_solves_like_dense(kind, declared_by):
    cell = make(kind, F64)
    h0, xs = data(2, 400, 6, 3, F64)
    ref = run_sequential(cell, h0, xs)
    dense = solve(cell, h0, xs, method="newton", jacobian="dense")
    if declared_by == "attribute":
        res = solve(cell, h0, xs, method="newton")
    else:
        plain = lambda h, x: cell(h, x)  # noqa: E731 - a function without attributes
        if kind == "block":
            plain = PairCellFunction(cell)
        res = solve(plain, h0, xs, method="newton", jacobian="diagonal" if kind == "diagonal" else "block-diagonal")
    assert bool(res.success.all()) and bool(dense.success.all())
    assert rel(res.h, ref) < 1e-10 and rel(dense.h, ref) < 1e-10
    # exact Jacobians either way: the same Newton iterates
    assert res.nit.tolist() == dense.nit.tolist()


class PairCellFunction:
    """A plain callable that declares only its block size (the structure comes from solve)."""

    block_size = 2

    def __init__(self, cell):
        self.cell = cell

    def __call__(self, h, x):
        return self.cell(h, x)


@pytest.mark.parametrize("kind", ["diagonal", "block", "dense"])
def test_gradients_of_user_cells_match_the_loop(kind):
    cell = make(kind, F64)
    h0, xs = data(2, 150, 6, 3, F64)
    h0.requires_grad_()
    weight = torch.randn(2, 150, 6, dtype=F64, generator=torch.Generator().manual_seed(4))
    inputs = [h0, xs.requires_grad_(), *cell.parameters()]
    ref = torch.autograd.grad((run_sequential(cell, h0, xs) * weight).sum(), inputs)
    got = torch.autograd.grad((solve(cell, h0, xs).h * weight).sum(), inputs)
    assert max(rel(g, r) for g, r in zip(got, ref)) < 1e-10


def slow_diagonal_cell(dtype):
    """Slow dynamics (|J| up to 0.97): a residual of tol leaves state errors ~30 tol."""
    cell = make("diagonal", dtype, d=8)
    with torch.no_grad():
        cell.proj.bias[:8] = 3.0  # z = sigmoid(3 + ...) ~ 0.95: a leaky state
    return cell


CONTRACT_CASES = {
    "slow diagonal": (slow_diagonal_cell, 8),
    "dense d=24": (lambda dtype: ElmanCell(3, 24, dtype), 24),
    "dense slow": (lambda dtype: ElmanCell(3, 6, dtype, scale=0.98), 6),
}


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (F64, 1e-6)])
@pytest.mark.parametrize("case", list(CONTRACT_CASES))
def test_success_means_agreement_with_the_loop(case, dtype, bound):
    torch.manual_seed(0)
    build, d = CONTRACT_CASES[case]
    cell = build(dtype)
    h0, xs = data(2, 3000, d, 3, dtype)
    with torch.no_grad():
        ref = run_sequential(cell, h0, xs)
        for method in ("newton", "quasi-newton", "damped", "jacobi"):
            res = solve(cell, h0, xs, method=method)
            # the default tolerance succeeds here and then meets both promises
            assert bool(res.success.all()), (method, res.message)
            tol = torch.finfo(dtype).eps ** 0.75
            assert float(res.residual.max()) <= tol, method
            assert rel(res.h, ref) < bound, (method, rel(res.h, ref))
            # a loose tolerance may stop early, but then only with residual <= tol
            loose = solve(cell, h0, xs, method=method, tol=1e-3, max_iter=3)
            ok = loose.status == int(Status.SUCCESS)
            assert bool((loose.residual[ok] <= 1e-3).all())


def test_quasi_newton_never_forms_a_dense_jacobian(monkeypatch):
    cell = make("dense", F64)
    h0, xs = data(2, 300, 6, 3, F64)
    ref = run_sequential(cell, h0, xs)
    calls = []
    original = rowwise.dense_jacobian_diagonal

    def counted(*args):
        calls.append(args[1].shape)
        return original(*args)

    def forbidden(*args):
        raise AssertionError("a dense Jacobian was formed")

    monkeypatch.setattr(rowwise, "dense_jacobian", forbidden)
    # newton's dense Jacobians (all d rows of every per-step Jacobian, block by block)
    monkeypatch.setattr(DenseLinearization, "rows", forbidden)
    monkeypatch.setattr(rowwise, "dense_jacobian_diagonal", counted)
    with torch.no_grad():
        res = solve(cell, h0, xs, method="quasi-newton")
        assert bool(res.success.all()) and rel(res.h, ref) < 1e-10
        assert calls and all(shape[-1] == 6 for shape in calls)
        with pytest.raises(AssertionError, match="dense Jacobian was formed"):
            solve(cell, h0, xs, method="newton")  # the patched path is the one newton takes


def test_first_solve_imports_no_dynamo():
    script = textwrap.dedent("""
        import sys
        import torch
        from torch import nn
        from torchnewton.recurrence import solve
        torch.manual_seed(0)
        lin = nn.Linear(4, 4, dtype=torch.float64)
        def diagonal(h, x):
            return 0.5 * h + torch.tanh(x) * h.sigmoid() + 1.0
        diagonal.jacobian_structure = "diagonal"
        dense = lambda h, x: torch.tanh(lin(h) + x)
        before = 'torch._dynamo' in sys.modules
        h0 = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
        xs = torch.randn(2, 50, 4, dtype=torch.float64)
        for cell in (diagonal, dense):
            for method in ("newton", "quasi-newton", "damped", "jacobi"):
                res = solve(cell, h0, xs, method=method)
                assert bool(res.success.all()), (method, res.message)
                res.h.sum().backward()
        print(before, 'torch._dynamo' in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_bad_structure_declarations():
    cell = make("dense", F64)
    h0, xs = data(1, 10, 6, 3, F64)
    with pytest.raises(ValueError, match="unknown jacobian 'tridiagonal'"):
        solve(cell, h0, xs, jacobian="tridiagonal")
    cell.jacobian_structure = "sparse"
    with pytest.raises(ValueError, match="unknown cell.jacobian_structure 'sparse'"):
        solve(cell, h0, xs)
    cell.jacobian_structure = "block-diagonal"
    with pytest.raises(ValueError, match="needs cell.block_size"):
        solve(cell, h0, xs)
    cell.block_size = 4  # does not divide 6
    with pytest.raises(ValueError, match="dividing the state size 6"):
        solve(cell, h0, xs)
    cell.block_size = 3
    assert bool(solve(cell, h0, xs, jacobian="dense").success.all())  # dense ignores the declaration
    with pytest.raises(ValueError, match="jacobian='structured' needs a cell"):
        solve(make("dense", F64), h0, xs, jacobian="structured")
    lstm = DiagonalCIFGLSTMCell(3, 3, dtype=F64)
    with pytest.raises(ValueError, match="contradicts the cell's own 'block'"):
        solve(lstm, h0, xs, jacobian="diagonal")
    # a declared structure satisfies jacobian='structured'
    diag = make("diagonal", F64)
    assert bool(solve(diag, h0, xs, jacobian="structured").success.all())
