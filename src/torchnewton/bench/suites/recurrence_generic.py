"""Benchmark part: user-defined cells (not the library's), T = 64k, warm and first call in a fresh process.

Two cells a user would write as an ``nn.Module``, d = 24, m = 4, float32, one thread:

* diagonal: ``h' = z h + (1 - z) tanh(a h + c)`` with ``(z, c)`` from a linear map of x,
  declared ``jacobian_structure = "diagonal"`` (one autograd product per Jacobian);
* dense: the Elman cell ``h' = tanh(W h + U x + b)`` with ``||W||_2 = 0.9``, nothing declared
  (d products per Jacobian and a compiled O(d^2)-per-step scan for newton, see
  :mod:`torchnewton.recurrence.dense`; d products per diagonal for quasi-newton).

Warm: each method's solve vs the sequential loop of the same cell in this process (best CPU
time of 1-3 runs, one thread: on a shared machine other processes' load inflates wall time).
Cold: the first ``solve`` in a fresh Python process (after ``import torch, torchnewton``), the
time a user waits the first time, vs the loop there; the subprocess also reports whether
``torch._dynamo`` was imported. Where the default ran newton (a declared structure: ``solve``
then builds the same solver for both), one subprocess serves both rows.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

from ...recurrence import run_sequential, solve
from ..suite import BenchContext, markdown_table

T, D, M = 64_000, 24, 4
GOALS = {"diagonal": 10.0, "dense": 3.0}
# "auto" is solve's default
METHODS = ("auto", "newton", "quasi-newton", "jacobi")
# first calls in a fresh process (a subprocess each, about 3 s): quick mode times the default and
# newton; --full every method and the loop
QUICK_COLD = ("auto", "newton")


class UserDiagonalCell(nn.Module):
    """A gated cell elementwise in h, with its structure declared."""

    jacobian_structure = "diagonal"

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(M, 2 * D)
        self.a = nn.Parameter(torch.empty(D).uniform_(-1, 1))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        g, c = self.proj(x).chunk(2, -1)
        z = torch.sigmoid(g)
        return z * h + (1 - z) * torch.tanh(self.a * h + c)


class UserDenseCell(nn.Module):
    """An Elman cell, nothing declared: dense Jacobians."""

    def __init__(self) -> None:
        super().__init__()
        self.w_h = nn.Linear(D, D, bias=False)
        self.w_x = nn.Linear(M, D)
        with torch.no_grad():
            self.w_h.weight.mul_(0.9 / torch.linalg.matrix_norm(self.w_h.weight, 2))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.w_h(h) + self.w_x(x))


def problem(kind: str, seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    cell = UserDiagonalCell() if kind == "diagonal" else UserDenseCell()
    xs = torch.randn(1, T, M, generator=torch.Generator().manual_seed(seed + 1))
    return cell, torch.zeros(1, D), xs


_COLD = """
import json, sys, time
import torch
torch.set_num_threads(1)
from torchnewton.bench.suites.recurrence_generic import problem
from torchnewton.recurrence import run_sequential, solve
kind, seed, method = json.loads(sys.argv[1])
cell, h0, xs = problem(kind, seed)
with torch.no_grad():
    start = time.process_time()
    if method == "loop":
        run_sequential(cell, h0, xs)
    elif method == "auto":
        solve(cell, h0, xs)
    else:
        solve(cell, h0, xs, method=method)
    first = time.process_time() - start
print(json.dumps({"first_s": first, "dynamo": "torch._dynamo" in sys.modules}))
"""


def _cold(kind: str, seed: int, method: str) -> dict[str, Any]:
    """CPU time of the first call of ``method`` ("loop" for the sequential loop, a ``solve``
    method otherwise) in a fresh process after the imports, and whether it imported torch._dynamo."""
    out = subprocess.run([sys.executable, "-c", _COLD, json.dumps([kind, seed, method])], capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"cold-start subprocess failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_time(fn: Any, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        times.append(time.process_time() - start)
    return min(times), out


def _case(kind: str, seed: int, quick: bool) -> dict[str, Any]:
    """Warm solves of every method and the loop of one cell, CPU time in this process."""
    cell, h0, xs = problem(kind, seed)
    row: dict[str, Any] = {"cell": kind, "T": T, "d": D}
    ran: set[str] = set()
    with torch.no_grad():
        loop_s, ref = _cpu_time(lambda: run_sequential(cell, h0, xs), 1)
        row["loop_s"] = loop_s
        for method in METHODS:
            # one solve before timing (this process has imported and run the library already),
            # except where an earlier method of this cell ran the same solver (auto is newton for a
            # declared structure, auto ran only jacobi on the dense cell) and dense quasi-newton in
            # quick mode (15 iterations of d products: seconds)
            slow = kind == "dense" and method == "quasi-newton"
            if method not in ran and not (quick and slow):
                solve(cell, h0, xs, method=method)
            repeats = 1 if quick or slow else 3
            t, res = _cpu_time(lambda: solve(cell, h0, xs, method=method), repeats)
            ran.add(res.method)
            row[method] = {"s": t, "speedup": loop_s / t, "nit": int(res.nit.max()), "ran": res.method,
                           "success": bool(res.success.all()),
                           "rel_err": float((res.h - ref).abs().max() / ref.abs().max())}
    return row


def _cold_rows(rows: list[dict[str, Any]], seed: int, quick: bool) -> None:
    """Each row's first calls, a fresh process each (``row["cold"]``). Where the default ran newton
    (a declared structure: ``solve`` builds the same solver for both) its first call is newton's:
    measured once, reported for both."""
    for r in rows:
        # the loop compiles and imports nothing: quick mode compares with the warm loop
        r["cold_loop_s"] = r["loop_s"] if quick else _cold(r["cell"], seed, "loop")["first_s"]
        r["cold"] = {}
        for method in QUICK_COLD if quick else METHODS:
            if method == "newton" and r["auto"]["ran"] == "newton":
                r["cold"][method] = r["cold"]["auto"] | {"same_call_as": "auto"}
                continue
            cold = _cold(r["cell"], seed, method)
            r["cold"][method] = {"s": cold["first_s"], "speedup": r["cold_loop_s"] / cold["first_s"],
                                 "dynamo_imported": cold["dynamo"]}


def run_generic(ctx: BenchContext) -> tuple[str, dict[str, Any]]:
    """Rows for the user-defined diagonal and dense cells: markdown and figures."""
    rows = [_case(kind, ctx.seed, ctx.quick) for kind in ctx.track(("diagonal", "dense"), desc="recurrence: user cells")]
    _cold_rows(rows, ctx.seed, ctx.quick)
    header = ["cell", "method", "ran", "nit", "solve (s)", "loop (s)", "loop / solve", "goal", "rel err vs loop",
              "success"]
    table = []
    for r in rows:
        for method in METHODS:
            m = r[method]
            name = f"{method} (default)" if method == "auto" else method
            table.append([r["cell"], name, m["ran"], m["nit"], m["s"], r["loop_s"], f"{m['speedup']:.1f}x",
                          f">= {GOALS[r['cell']]:.0f}x: {'met' if m['speedup'] >= GOALS[r['cell']] else 'NOT met'}",
                          f"{m['rel_err']:.1e}", m["success"]])
    cold = [[r["cell"], (f"{method} (default)" if method == "auto" else method)
             + (" (the default's call: measured once)" if "same_call_as" in c else ""), c["s"], r["cold_loop_s"],
             f"{c['speedup']:.2f}x", "met" if c["speedup"] >= 1 else "NOT met", c["dynamo_imported"]]
            for r in rows for method, c in r["cold"].items()]
    markdown = "\n".join([
        f"### User-defined cells (T = {T:,}, d = {D}, float32, 1 thread)", "",
        "A diagonal cell declaring `jacobian_structure = \"diagonal\"` and an undeclared dense Elman cell, "
        "written as plain `nn.Module`s. Warm: process CPU time of `solve(cell, h0, xs, method=...)` vs "
        "`run_sequential` in this process (best of 1-3 runs). `auto` is the default: newton for declared "
        "structure, and for the dense cell Jacobi iterations while their measured rate beats newton's cost, "
        "then newton; \"ran\" is `result.method`. Dense newton takes d autograd products per Jacobian and "
        "the blocked step of `recurrence.dense` (compiled O(d^2) scan, no sequence-sized Jacobian). "
        "Goals: >= 10x the loop for the diagonal cell, >= 3x for the dense cell.", "",
        markdown_table(header, table), "",
        "First call in a fresh process (CPU time of the first `solve` in its own subprocess after imports, vs "
        "the loop: also a first call in a fresh process with `--full`, the warm loop in quick mode; quick mode "
        "times the default and newton, `--full` every method; where the default ran newton, newton's first call "
        "is the default's, measured once; goal: no slower than the loop):", "",
        markdown_table(["cell", "method", "first solve (s)", "first loop (s)", "loop / solve", "goal",
                        "torch._dynamo imported"], cold), ""])
    return markdown, {"user_cells": rows}
