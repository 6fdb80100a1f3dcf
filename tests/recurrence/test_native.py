"""The fused C kernels (torchnewton.recurrence.native) against their torch equivalents."""
import shutil

import pytest
import torch

from torchnewton.recurrence import DiagonalCIFGLSTMCell, DiagonalGRUCell, linear_scan, native, solve
from torchnewton.recurrence.problem import RecurrenceProblem

from test_scan import loop, random_coefficients

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def test_kernels_build_where_a_compiler_exists():
    # CI has gcc: the fused path must be the one the other tests exercise, not a silent fallback
    if shutil.which("cc") or shutil.which("gcc"):
        assert native.available(torch.float32) and native.available(torch.float64)
    assert not native.available(torch.float16)


def _problems(Cell, dtype, B, T, seed=0):
    torch.manual_seed(seed)
    cell = Cell(3, 24).to(dtype)
    xs = torch.randn(B, T, 3, dtype=dtype)
    h0 = torch.randn(B, cell.state_size, dtype=dtype) * 0.3
    fused = RecurrenceProblem.from_cell(cell, h0, xs, jacobian="auto", tol=1e-6)
    plain = RecurrenceProblem.from_cell(cell, h0, xs, jacobian="auto", tol=1e-6)
    plain.fused = None
    return fused, plain, torch.randn(B, T, cell.state_size, dtype=dtype) * 0.7


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Cell", [DiagonalGRUCell, DiagonalCIFGLSTMCell])
@pytest.mark.parametrize("B, T, threads", [(1, 50, 1), (3, 40, 1), (1, 3000, 2), (5, 1000, 2)])
@pytest.mark.parametrize("kind", ["none", "full", "diagonal"])
def test_cell_kernel_matches_torch(dtype, Cell, B, T, threads, kind):
    torch.set_num_threads(threads)  # the larger cases are split across threads (by time or by sequence)
    fused, plain, h = _problems(Cell, dtype, B, T)
    assert fused.fused is not None
    with torch.no_grad():
        rhs, jac, res = fused.residual_and_jacobian(h, kind)
        rhs_ref, jac_ref, res_ref = plain.residual_and_jacobian(h, kind)
    assert (rhs - rhs_ref).abs().max() <= TOL[dtype] * rhs_ref.abs().max()
    assert torch.allclose(res, res_ref, rtol=TOL[dtype], atol=0)
    if kind == "none":
        assert jac is None
    else:
        assert jac.shape == jac_ref.shape
        assert (jac - jac_ref).abs().max() <= TOL[dtype] * jac_ref.abs().max()


@pytest.mark.parametrize("Cell", [DiagonalGRUCell, DiagonalCIFGLSTMCell])
def test_cell_kernel_propagates_nan(Cell):
    fused, _, h = _problems(Cell, torch.float32, 2, 30)
    h[1, 7, 3] = float("nan")
    with torch.no_grad():
        _, _, res = fused.residual_and_jacobian(h, "full")
    assert torch.isfinite(res[0]) and torch.isnan(res[1])


def test_subclasses_and_other_dtypes_use_torch():
    class MyGRU(DiagonalGRUCell):
        pass

    assert native.cell_kernel(MyGRU(2, 4), torch.float32) is None
    assert native.cell_kernel(DiagonalGRUCell(2, 4), torch.bfloat16) is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("structure, k", [("diagonal", 1), ("block", 2), ("dense", 0)])
@pytest.mark.parametrize("B, T, d, threads", [(1, 1, 6, 1), (2, 300, 6, 1), (1, 5000, 64, 2), (4, 3000, 16, 2)])
def test_scan_kernel_matches_loop(dtype, structure, k, B, T, d, threads):
    torch.set_num_threads(threads)  # split by sequence, or by state entries for one sequence
    gen = torch.Generator().manual_seed(T)
    A = random_coefficients(structure, (B,), T, d, k, dtype, gen)
    b = torch.randn(B, T, d, generator=gen, dtype=dtype)
    h0 = torch.randn(B, d, generator=gen, dtype=dtype)
    h = linear_scan(A, b, h0, structure=structure, algorithm="native")
    expected = loop(A.double(), b.double(), h0.double(), structure, False)
    assert (h.double() - expected).abs().max() <= TOL[dtype] * expected.abs().max()


def test_scan_in_place_into_b():
    from torchnewton.recurrence.scan import scan_batched

    gen = torch.Generator().manual_seed(1)
    A = random_coefficients("block", (3,), 200, 8, 2, torch.float64, gen)
    b = torch.randn(3, 200, 8, generator=gen, dtype=torch.float64)
    h0 = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    expected = loop(A, b, h0, "block", False)
    out = scan_batched(A, b, h0, "block", out=b)
    assert out is b and torch.allclose(b, expected, rtol=1e-12, atol=1e-12)


def test_native_algorithm_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="algorithm='native'"):  # 3x3 blocks: no kernel
        linear_scan(torch.rand(10, 2, 3, 3) * 0.1, torch.randn(10, 6), structure="block", algorithm="native")


def test_dense_scan_gradients_match_chunked():
    """The dense kernel also serves the adjoint (reverse) scan of the backward pass."""
    gen = torch.Generator().manual_seed(5)
    A = random_coefficients("dense", (2,), 150, 5, 0, torch.float64, gen).requires_grad_()
    b = torch.randn(2, 150, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    grads = []
    for algorithm in ("native", "chunked"):
        h = linear_scan(A, b, h0, structure="dense", algorithm=algorithm)
        grads.append(torch.autograd.grad((h * h.detach().cos()).sum(), (A, b, h0)))
    for native_grad, chunked_grad in zip(*grads):
        assert torch.allclose(native_grad, chunked_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["newton", "quasi-newton"])
@pytest.mark.parametrize("Cell", [DiagonalGRUCell, DiagonalCIFGLSTMCell])
def test_solve_same_with_and_without_kernels(monkeypatch, method, Cell):
    torch.manual_seed(3)
    cell = Cell(2, 12).double()
    xs = torch.randn(4, 2000, 2, dtype=torch.float64) * torch.tensor([0.1, 1, 3, 6]).view(4, 1, 1).double()
    h0 = torch.zeros(4, cell.state_size, dtype=torch.float64)
    fast = solve(cell, h0, xs, method=method)
    monkeypatch.setattr(native, "_library", lambda dtype: None)
    slow = solve(cell, h0, xs, method=method)
    assert bool(fast.success.all()) and bool(slow.success.all())
    assert torch.equal(fast.nit, slow.nit)
    assert (fast.h - slow.h).abs().max() < 1e-12


@pytest.mark.parametrize("Cell", [DiagonalGRUCell, DiagonalCIFGLSTMCell])
@pytest.mark.parametrize("frozen", [(), ("input_proj.weight", "recurrent_weight")])
def test_fused_backward_matches_autograd(monkeypatch, Cell, frozen):
    # the implicit backward's fused VJP against torch autograd through the cell, same adjoint
    torch.manual_seed(4)
    cell = Cell(2, 12).double()
    for name, p in cell.named_parameters():
        p.requires_grad_(name not in frozen)
    xs = torch.randn(3, 1500, 2, dtype=torch.float64, requires_grad=True)
    h0 = (0.3 * torch.randn(3, cell.state_size, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(3, 1500, cell.state_size, dtype=torch.float64)
    inputs = [h0, xs] + [p for p in cell.parameters() if p.requires_grad]

    def gradients():
        return torch.autograd.grad((solve(cell, h0, xs).h * weight).sum(), inputs)

    fast = gradients()
    monkeypatch.setattr(native, "_library", lambda dtype: None)
    slow = gradients()
    for f, s in zip(fast, slow):
        assert (f - s).abs().max() <= 1e-12 * s.abs().max()


_FORKED = {}


def test_kernels_work_in_a_forked_child():
    # A child forked from a process whose kernel thread pool exists (a DataLoader worker)
    # inherits the pool object but not its threads: it must build its own. (Only the kernel
    # runs in the child: torch's own OpenMP ops may hang after a fork, a libgomp limitation.)
    import multiprocessing

    torch.set_num_threads(2)
    fused, plain, h = _problems(DiagonalGRUCell, torch.float64, 4, 20000)
    with torch.no_grad():
        fused.residual_and_jacobian(h, "full")  # the parent's pool now exists
        expected = plain.residual_and_jacobian(h, "none")[0]
    _FORKED.update(problem=fused, h=h)  # the child inherits them by fork, nothing is pickled
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = torch.from_numpy(pool.apply_async(_residual_in_child).get(timeout=60))
    assert (child - expected).abs().max() < 1e-12


def _residual_in_child():
    problem, h = _FORKED["problem"], _FORKED["h"]
    rhs = torch.empty_like(h)
    problem.fused(problem.h0, h, problem.us, rhs, None, "none")  # split over 2 threads
    return rhs.numpy()
