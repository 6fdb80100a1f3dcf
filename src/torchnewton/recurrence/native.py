"""Fused CPU kernels for the structured cells and for diagonal / 2x2-block / dense linear recurrences.

On a CPU the Newton iteration of :mod:`.newton` is memory bound: the torch version of a cell
evaluation makes about 25 elementwise passes over sequence-sized data, and the chunked scan a
dozen. The kernels in ``native_kernels.c`` do each in one pass (the cell's gates, residual and
Jacobian together; the recurrence along time, vectorized across the state), 3-4x less time; the
implicit backward's vector-Jacobian product of the cell is one pass too (:func:`cell_vjp`).

The C file is compiled at first use with the system C compiler (``$CC``, else ``cc``/``gcc``),
once per floating type, into a temporary directory (about 0.2 s). Where no compiler is found,
the build fails, the tensors are not float32/float64 on the CPU, or ``TORCHNEWTON_NATIVE=0`` is
set, every caller falls back to its torch implementation, which computes the same numbers.

Work is split across ``torch.get_num_threads()`` threads (by sequence, else by time range for
cells and by state entries for scans); ``ctypes`` releases the GIL during the calls.

Example::

    >>> from torchnewton.recurrence import native
    >>> native.available(torch.float32)        # True on Linux with gcc
    True
"""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch

from .cells import DiagonalCIFGLSTMCell, DiagonalGRUCell

_SOURCE = Path(__file__).with_name("native_kernels.c")
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fopenmp-simd", "-fPIC", "-shared")
_REAL = {torch.float32: "float", torch.float64: "double"}
# Elements per thread below which splitting the work costs more than it saves.
_MIN_ELEMENTS_PER_THREAD = 2 ** 15
_JAC_MODE = {"none": 0, "full": 1, "diagonal": 2}

_long, _ptr = ctypes.c_long, ctypes.c_void_p
_SIGNATURES = {
    "tn_gru": [_long] * 5 + [_ptr] * 7,
    "tn_lstm": [_long] * 5 + [_ptr] * 6 + [ctypes.c_int],
    "tn_gru_vjp": [_long] * 5 + [_ptr] * 8,
    "tn_lstm_vjp": [_long] * 5 + [_ptr] * 7,
    "tn_scan_diagonal": [_long] * 5 + [_ptr] * 4,
    "tn_scan_block2": [_long] * 5 + [_ptr] * 4,
    "tn_scan_dense": [_long] * 3 + [_ptr, _long, _long, _ptr, _long, _ptr, _ptr],
}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and (path := shutil.which(name)):
            return path
    return None


@functools.cache
def _library(dtype: torch.dtype) -> ctypes.CDLL | None:
    if os.environ.get("TORCHNEWTON_NATIVE", "1") == "0" or dtype not in _REAL:
        return None
    compiler = _compiler()
    if compiler is None:
        return None
    build = Path(tempfile.mkdtemp(prefix="torchnewton-native-"))
    target = build / f"kernels_{_REAL[dtype]}.so"
    command = [compiler, f"-DREAL={_REAL[dtype]}", *_FLAGS, str(_SOURCE), "-o", str(target), "-lmvec"]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(build, ignore_errors=True)  # a loaded library no longer needs its file
    for name, argtypes in _SIGNATURES.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = None
    return lib


def available(dtype: torch.dtype) -> bool:
    """Whether the kernels are built (or can be) for ``dtype``."""
    return _library(dtype) is not None


def applies(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can take these tensors: contiguous, on the CPU, one float dtype."""
    return _usable(*tensors) is not None


def _usable(*tensors: torch.Tensor) -> ctypes.CDLL | None:
    """The library when every tensor is a contiguous CPU tensor of one supported dtype, with its own
    storage (not a torch.func wrapper: a vmapped backward, ``is_grads_batched``, reaches the scan's
    kernels with batched tensors that have no data pointer; they take the torch scan)."""
    dtype = tensors[0].dtype
    if any(t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous() or _wrapped(t) for t in tensors):
        return None
    return _library(dtype)


def batched(*tensors: torch.Tensor) -> bool:
    """Whether some tensor is a torch.func / legacy vmap wrapper (no storage of its own)."""
    return any(_wrapped(t) for t in tensors)


def _wrapped(t: torch.Tensor) -> bool:
    functorch = torch._C._functorch
    return functorch.is_functorch_wrapped_tensor(t) or functorch.is_legacy_batchedtensor(t)


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    # one pool per process: a child forked from this one (a DataLoader worker) inherits the pool
    # object but not its threads, and would wait on it forever
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="torchnewton-native")


def _run(tasks: list[Callable[[], None]]) -> None:
    if len(tasks) == 1:
        tasks[0]()
        return
    for future in [_pool(len(tasks), os.getpid()).submit(task) for task in tasks]:
        future.result()


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def _threads(elements: int) -> int:
    return max(1, min(torch.get_num_threads(), elements // _MIN_ELEMENTS_PER_THREAD))


def _address(t: torch.Tensor, *index: int) -> int:
    """Address of ``t[index]`` (leading indices) without making a view."""
    offset = sum(i * s for i, s in zip(index, t.stride()))
    return t.data_ptr() + offset * t.element_size()


def _supports(cell: Any, dtype: torch.dtype) -> bool:
    """The library's own cells only (``type(cell)`` exactly: a subclass may change the math)."""
    return type(cell) in (DiagonalGRUCell, DiagonalCIFGLSTMCell) and _library(dtype) is not None


def _recurrent(cell: DiagonalGRUCell | DiagonalCIFGLSTMCell) -> tuple[torch.Tensor, ...]:
    """What the kernels read of the cell's parameters: the recurrent weights (3, d), and for the
    GRU its c_n (the other recurrent biases are folded into ``us``)."""
    a = cell.recurrent_weight.detach().contiguous()
    return (a, cell.recurrent_bias.detach()[2].contiguous()) if type(cell) is DiagonalGRUCell else (a,)


def cell_kernel(cell: Any, dtype: torch.dtype) -> Callable[..., None] | None:
    """A fused evaluator ``(h0, h, us, rhs, jac, kind)`` for ``cell``, or None.

    It writes ``rhs = f(h_{t-1}, u_t) - h_t`` (B, T, n) and, for ``kind`` ``"full"`` or
    ``"diagonal"``, the Jacobians into ``jac`` ((B, T, n) diagonal; (B, T, n/2, 2, 2) for the
    LSTM's blocks), exactly as the cell's ``transition_and_jacobian``.
    """
    if not _supports(cell, dtype):
        return None
    gru = type(cell) is DiagonalGRUCell

    def evaluate(h0: torch.Tensor, h: torch.Tensor, us: torch.Tensor, rhs: torch.Tensor,
                 jac: torch.Tensor | None, kind: str) -> None:
        params = _recurrent(cell)
        lib = _usable(h0, h, us, rhs, *params, *(() if jac is None else (jac,)))
        if lib is None:
            raise RuntimeError("native cell kernel called on unsupported tensors")
        B, T, n = h.shape
        d = cell.hidden_size
        splits = _split(B, T, _threads(B * T * n))

        def task(b0: int, b1: int, t0: int, t1: int) -> Callable[[], None]:
            ptrs = [_address(h0, b0), _address(h, b0), _address(us, b0), *(p.data_ptr() for p in params),
                    _address(rhs, b0), None if jac is None else _address(jac, b0)]
            if gru:
                return lambda: lib.tn_gru(b1 - b0, T, t0, t1, d, *ptrs)
            return lambda: lib.tn_lstm(b1 - b0, T, t0, t1, d, *ptrs, _JAC_MODE[kind])

        _run([task(*s) for s in splits])

    return evaluate


def cell_vjp(cell: Any, dtype: torch.dtype) -> Callable[..., tuple] | None:
    """A fused vector-Jacobian product ``(h0, h, us, lam, params) -> (grad_us, grads)`` of the
    cell's transition over a whole sequence, or None (as :func:`cell_kernel`).

    ``lam`` (B, T, n) is the cotangent of ``f(h_{t-1}, u_t)``; ``grad_us`` is shaped like ``us``;
    ``grads`` lines up with ``params`` (the cell's parameters): the recurrent weights (and the
    GRU's recurrent bias, whose first two rows reach f only through ``us``) get their gradient,
    the input projection None (it acts through ``us``).
    """
    if not _supports(cell, dtype):
        return None
    gru = type(cell) is DiagonalGRUCell

    def vjp(h0: torch.Tensor, h: torch.Tensor, us: torch.Tensor, lam: torch.Tensor,
            params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list[torch.Tensor | None]] | None:
        recurrent = _recurrent(cell)
        grad_us = torch.empty_like(us)
        lib = _usable(h0, h, us, lam, grad_us, *recurrent)
        if lib is None:
            return None
        B, T, n = h.shape
        d = cell.hidden_size
        splits = _split(B, T, _threads(B * T * n))
        # float64 sums (one row per task, no shared writes): B T terms each
        acc = torch.zeros(len(splits), (4 if gru else 3) * d, dtype=torch.float64)

        def task(k: int, b0: int, b1: int, t0: int, t1: int) -> Callable[[], None]:
            ptrs = (_address(h0, b0), _address(h, b0), _address(us, b0), *(p.data_ptr() for p in recurrent),
                    _address(lam, b0), _address(grad_us, b0), _address(acc, k))
            kernel = lib.tn_gru_vjp if gru else lib.tn_lstm_vjp
            return lambda: kernel(b1 - b0, T, t0, t1, d, *ptrs)

        _run([task(k, *piece) for k, piece in enumerate(splits)])
        total = acc.sum(0).view(-1, d).to(h.dtype)
        grad_a = total[:3]
        grad_bias = torch.cat([torch.zeros_like(total[:2]), total[3:]]) if gru else None
        grads = [grad_a if p is cell.recurrent_weight else grad_bias if gru and p is cell.recurrent_bias
                 else None for p in params]
        return grad_us, grads

    return vjp


def _split(B: int, T: int, threads: int) -> list[tuple[int, int, int, int]]:
    """(b0, b1, t0, t1) pieces: whole sequences when there are enough, else time ranges."""
    if B >= threads:
        return [(b0, b1, 0, T) for b0, b1 in _ranges(B, threads)]
    return [(b, b + 1, t0, t1) for b in range(B) for t0, t1 in _ranges(T, max(1, threads // B))]


def scan(A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, block: int,
         out: torch.Tensor | None = None) -> torch.Tensor | None:
    """``h_t = A_t h_{t-1} + b_t`` for b (B, T, ...) with n entries per step and A diagonal
    (``block`` 1, A shaped like b), of 2x2 blocks (``block`` 2, A (B, T, n/2, 2, 2)) or dense
    stored as one block (A (B, T, 1, n, n), b (B, T, 1, n), see :func:`scan_dense`), written
    into ``out`` when given (it may be ``b``); None where the kernels do not apply (then use the
    torch scan)."""
    if block not in (1, 2):
        return _scan_one_block(A, b, h0, out)
    A, b, h0 = A.contiguous(), b.contiguous(), h0.contiguous()
    out = torch.empty_like(b) if out is None else out
    lib = _usable(A, b, h0, out)
    if lib is None or out.shape != b.shape:
        return None
    B, T = b.shape[:2]
    n = b[0, 0].numel()
    kernel = lib.tn_scan_diagonal if block == 1 else lib.tn_scan_block2
    units = n // block
    threads = _threads(B * T * n)
    if B >= threads:
        pieces = [(b0, b1, 0, units) for b0, b1 in _ranges(B, threads)]
    else:
        # split the state, in whole vectors of 8 units, so each thread walks all of time
        lanes = max(1, min(threads, units // 8))
        pieces = [(b0, b0 + 1, 8 * lo, min(units, 8 * hi)) for b0 in range(B)
                  for lo, hi in _ranges(-(-units // 8), lanes)]
    _run([functools.partial(kernel, b1 - b0, T, n, lo, hi, _address(A, b0), _address(b, b0),
                            _address(h0, b0), _address(out, b0)) for b0, b1, lo, hi in pieces])
    return out


def _scan_one_block(A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor,
                    out: torch.Tensor | None) -> torch.Tensor | None:
    """:func:`scan` for a dense A stored as one block: A (B, T, 1, d, d), b (B, T, 1, d)."""
    if A.dim() != 5 or A.shape[2] != 1 or b.dim() != 4 or b.shape[2] != 1:
        return None
    B, T, _, d = b.shape
    b, h0 = b.reshape(B, T, d), h0.reshape(B, d).contiguous()
    target = torch.empty_like(b) if out is None else out.view(B, T, d)
    if not b.is_contiguous():
        b = b.contiguous()
    if not scan_dense(A.reshape(B, T, d, d).contiguous(), b, h0, target):
        return None
    return target.view(B, T, 1, d)


def scan_dense(A: torch.Tensor | list[torch.Tensor], b: torch.Tensor, h0: torch.Tensor, out: torch.Tensor) -> bool:
    """``out_t = A_t out_{t-1} + b_t`` with dense ``A_t``, given either as a contiguous tensor
    (B, T, d, d) or by rows: ``A[i]`` (B * T, d) contiguous holds row i of every ``A_t``
    (sequence-major), the layout of d vector-Jacobian products with the cotangents ``e_i``.
    ``b`` and ``out`` (B, T, d) with contiguous rows (``out`` may be ``b``), ``h0`` (B, d)
    contiguous. Returns False, touching nothing, where the kernel does not apply (then use the
    torch scan).

    One thread per sequence: each step needs the whole previous state, so a split of the state
    would synchronize every step.
    """
    B, T, d = b.shape
    if isinstance(A, torch.Tensor):
        if tuple(A.shape) != (B, T, d, d) or not A.is_contiguous():
            return False
        rows, step = [A[..., i, :] for i in range(d)], d * d
    else:
        if len(A) != d or any(r.shape != (B * T, d) or not r.is_contiguous() for r in A):
            return False
        rows, step = A, d
    if not h0.is_contiguous() or b.stride(0) != out.stride(0) or h0.shape != (B, d):
        return False
    if any(t.stride(-1) != 1 or t.stride(-2) != d for t in (b, out)):
        return False
    if any(t.device.type != "cpu" or t.dtype != b.dtype for t in (*rows, h0, out)):
        return False
    lib = _library(b.dtype)
    if lib is None:
        return False
    item = b.element_size()

    def task(b0: int, b1: int) -> Callable[[], None]:
        pointers = (ctypes.c_void_p * d)(*(r.data_ptr() + b0 * T * step * item for r in rows))
        return lambda: lib.tn_scan_dense(b1 - b0, T, d, pointers, T * step, step, _address(b, b0), b.stride(0),
                                         _address(h0, b0), _address(out, b0))

    _run([task(b0, b1) for b0, b1 in _ranges(B, max(1, min(B, _threads(B * T * d * d))))])
    return True
