"""Benchmark: parallel Newton over time (torchnewton.recurrence) vs the sequential loop and torch.nn.GRU.

Three comparisons, all in one process with the same thread setting:

1. Structured cells (``DiagonalGRUCell``: diagonal Jacobian; ``DiagonalCIFGLSTMCell``: 2x2 blocks)
   solved by ``solve(method="newton")`` vs ``run_sequential`` of the same cell (a Python loop,
   input projections precomputed) and vs torch.nn.GRU (C++ loop) holding the *same function*:
   ``DiagonalGRUCell.to_torch_gru()`` puts the diagonal recurrent weights into dense ``weight_hh``.
2. The dense path: a full-weight ``torch.nn.GRUCell`` wrapped as a generic cell (dense autograd
   Jacobians, O(d^3) scans) vs its own sequential loop and vs torch.nn.GRU with the same weights.
3. Newton iteration counts.
4. User-defined cells at T = 64k, warm and first call in a fresh process (:mod:`.recurrence_generic`).

Forward runs under ``torch.no_grad``; forward+backward differentiates ``sum(w * h)`` for a fixed
random ``w`` with respect to the cell's parameters (implicit adjoint for the parallel solve,
autograd through the loop for the sequential one and torch.nn.GRU).
"""
from __future__ import annotations

import inspect
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ... import recurrence
from ...recurrence import DiagonalCIFGLSTMCell, DiagonalGRUCell, native, run_sequential, solve
from ..suite import BenchContext, Section, code_fingerprint, markdown_table, median_time, torch_threads
from .recurrence_generic import run_generic

GOAL_SPEEDUP = 10.0
THREADS = 1
DENSE_MEMORY_LIMIT = 2 * 2**30  # bytes of one (B*T, d, d) Jacobian the dense path may allocate
# Autograd through the sequential loop keeps about 15 float32 tensors of (B, d) per step.
LOOP_GRAPH_BYTES_PER_STATE = 60
LOOP_GRAPH_MEMORY_LIMIT = 8 * 2**30


class _TorchGRUCell(nn.Module):
    """torch.nn.GRUCell with full weights in the ``f(h, x)`` argument order: a generic cell."""

    def __init__(self, gru: nn.GRU):
        super().__init__()
        self.cell = nn.GRUCell(gru.input_size, gru.hidden_size)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, name).copy_(getattr(gru, name + "_l0"))
        self.state_size, self.input_size = gru.hidden_size, gru.input_size

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.cell(x, h)


def _zero_grads(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def _with_cpu_time(fn: Callable[[], Any], cpu: list[float]) -> Callable[[], Any]:
    """``fn`` that appends its process CPU time to ``cpu``: with one intra-op thread this is
    the time it takes on an idle core, a figure that other processes' load does not inflate
    the way it inflates wall time on a shared machine."""
    def timed() -> Any:
        start = time.process_time()
        out = fn()
        cpu.append(time.process_time() - start)
        return out

    return timed


def _timings(name: str, module: nn.Module, forward: Callable[[bool], torch.Tensor], weight: torch.Tensor,
             repeats: int, backward: bool = True) -> dict[str, Any]:
    """Median forward (and forward+backward) wall and CPU times of ``forward(grad) -> states``."""
    def fwd() -> torch.Tensor:
        with torch.no_grad():
            return forward(False)

    def fwd_bwd() -> None:
        _zero_grads(module)
        (forward(True) * weight).sum().backward()

    warmup = 1 if repeats > 1 else 0
    cpu_fwd: list[float] = []
    cpu_bwd: list[float] = []
    t_fwd, states = median_time(_with_cpu_time(fwd, cpu_fwd), repeats=repeats, warmup=warmup)
    t_bwd = median_time(_with_cpu_time(fwd_bwd, cpu_bwd), repeats=repeats, warmup=warmup)[0] if backward \
        else math.nan
    return {"impl": name, "forward_s": t_fwd, "forward_backward_s": t_bwd, "repeats": repeats, "states": states,
            "forward_cpu_s": statistics.median(cpu_fwd[warmup:]),
            "forward_backward_cpu_s": statistics.median(cpu_bwd[warmup:]) if backward else math.nan}


def _repeats(T: int, B: int, d: int) -> int:
    """Loops over long sequences run once (a sequential 64k-step loop takes tens of seconds)."""
    return 3 if T * B * d <= 4_000 * 8 else 1


def _newton_repeats(T: int, B: int, d: int) -> int:
    """Newton solves run 3 times up to 64k x 256 states; the batch-16 giants (1 GB per state
    tensor, tens of seconds per solve) once."""
    return 3 if T * B * d <= 64_000 * 256 else 1


def _parallel_solve(cell: nn.Module, h0: torch.Tensor, xs: torch.Tensor,
                    nit: list[int]) -> Callable[[bool], torch.Tensor]:
    """The timed Newton solve; records its iteration counts in ``nit`` and refuses to time a
    solve that did not converge."""
    def parallel(grad: bool) -> torch.Tensor:
        result = solve(cell, h0, xs, method="newton")
        nit[:] = result.nit.tolist()
        if not bool(result.success.all()):
            raise RuntimeError(f"benchmark solve did not converge: {result.message}")
        return result.h

    return parallel


def _structured_case(ctx: BenchContext, kind: str, T: int, d: int, B: int, backward: bool,
                     machine_threads: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(ctx.seed)
    torch.manual_seed(ctx.seed)
    m = 4
    cell = DiagonalGRUCell(m, d) if kind == "gru" else DiagonalCIFGLSTMCell(m, d)
    xs = torch.randn(B, T, m, generator=gen)
    h0 = torch.zeros(B, cell.state_size)
    weight = torch.randn(B, T, cell.state_size, generator=gen)
    seq_repeats = _repeats(T, B, d)
    nit: list[int] = []

    parallel = _parallel_solve(cell, h0, xs, nit)

    row: dict[str, Any] = {"cell": kind, "T": T, "d": d, "B": B}
    if backward and T * B * cell.state_size * LOOP_GRAPH_BYTES_PER_STATE > LOOP_GRAPH_MEMORY_LIMIT:
        backward = False  # autograd through the loop would not fit in memory (24 GB here)
        row["backward_skipped"] = "the sequential loop's autograd graph would exceed the memory limit"
    par = _timings("newton", cell, parallel, weight, _newton_repeats(T, B, d), backward)
    seq = _timings("sequential", cell, lambda grad: run_sequential(cell, h0, xs), weight, seq_repeats, backward)
    if machine_threads > 1:
        with torch_threads(machine_threads):
            par_all = _timings("newton", cell, parallel, weight, _newton_repeats(T, B, d), backward)
            seq_all = _timings("sequential", cell, lambda grad: run_sequential(cell, h0, xs), weight, seq_repeats,
                               backward=False)
        # each side at its faster thread count
        best_seq = min(seq["forward_s"], seq_all["forward_s"])
        row.update(parallel_forward_all_s=par_all["forward_s"],
                   parallel_forward_backward_all_s=par_all["forward_backward_s"],
                   sequential_forward_all_s=seq_all["forward_s"],
                   speedup_forward_all=best_seq / min(par["forward_s"], par_all["forward_s"]),
                   speedup_forward_backward_all=seq["forward_backward_s"] / min(par["forward_backward_s"],
                                                                                par_all["forward_backward_s"]))
    ref = seq["states"]
    row["max_rel_diff"] = float((par["states"] - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    row["nit"] = max(nit)
    row["parallel_forward_s"], row["parallel_forward_backward_s"] = par["forward_s"], par["forward_backward_s"]
    row["sequential_forward_s"], row["sequential_forward_backward_s"] = seq["forward_s"], seq["forward_backward_s"]
    row["sequential_repeats"] = seq["repeats"]
    row["speedup_forward"] = seq["forward_s"] / par["forward_s"]
    row["speedup_forward_backward"] = seq["forward_backward_s"] / par["forward_backward_s"]
    row["speedup_forward_cpu"] = seq["forward_cpu_s"] / par["forward_cpu_s"]
    row["speedup_forward_backward_cpu"] = seq["forward_backward_cpu_s"] / par["forward_backward_cpu_s"]
    if kind == "gru":
        gru = cell.to_torch_gru()
        torch_gru = _timings("torch.nn.GRU", gru, lambda grad: gru(xs, h0.unsqueeze(0))[0], weight,
                             seq_repeats, backward)
        row["torch_gru_max_rel_diff"] = float((torch_gru["states"] - ref).abs().max() / ref.abs().max())
        row["torch_gru_forward_s"] = torch_gru["forward_s"]
        row["torch_gru_forward_backward_s"] = torch_gru["forward_backward_s"]
        row["vs_torch_gru_forward"] = torch_gru["forward_s"] / par["forward_s"]
        row["vs_torch_gru_forward_backward"] = torch_gru["forward_backward_s"] / par["forward_backward_s"]
    return row


def _dense_case(ctx: BenchContext, T: int, d: int, B: int) -> dict[str, Any]:
    row: dict[str, Any] = {"T": T, "d": d, "B": B}
    jac_bytes = B * T * d * d * 4
    if jac_bytes > DENSE_MEMORY_LIMIT:
        row["skipped"] = f"dense Jacobians need {jac_bytes / 2**30:.1f} GiB per iteration"
        return row
    gen = torch.Generator().manual_seed(ctx.seed)
    torch.manual_seed(ctx.seed)
    gru = nn.GRU(4, d, batch_first=True)
    cell = _TorchGRUCell(gru)
    xs = torch.randn(B, T, 4, generator=gen)
    h0 = torch.zeros(B, d)
    weight = torch.randn(B, T, d, generator=gen)
    nit: list[int] = []

    parallel = _parallel_solve(cell, h0, xs, nit)

    repeats = _repeats(T, B, d)
    par = _timings("newton (dense)", cell, parallel, weight, repeats)
    seq = _timings("sequential", cell, lambda grad: run_sequential(cell, h0, xs), weight, repeats)
    ref = _timings("torch.nn.GRU", gru, lambda grad: gru(xs, h0.unsqueeze(0))[0], weight, _repeats(T, B, d))
    row.update(nit=max(nit), max_rel_diff=float((par["states"] - ref["states"]).abs().max() / ref["states"].abs().max()),
               parallel_forward_s=par["forward_s"], parallel_forward_backward_s=par["forward_backward_s"],
               sequential_forward_s=seq["forward_s"], sequential_forward_backward_s=seq["forward_backward_s"],
               torch_gru_forward_s=ref["forward_s"], torch_gru_forward_backward_s=ref["forward_backward_s"])
    row["speedup_forward"] = seq["forward_s"] / par["forward_s"]
    row["vs_torch_gru_forward"] = ref["forward_s"] / par["forward_s"]
    return row


def _plots(ctx: BenchContext, rows: list[dict[str, Any]]) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault((r["cell"], r["d"], r["B"]), []).append(r)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for (cell, d, B), rs in series.items():
        rs = sorted(rs, key=lambda r: r["T"])
        ax.plot([r["T"] for r in rs], [r["speedup_forward"] for r in rs], "o-", label=f"{cell} d={d} B={B} fwd")
        fb = [(r["T"], r["speedup_forward_backward"]) for r in rs if not math.isnan(r["speedup_forward_backward"])]
        if fb:
            ax.plot(*zip(*fb), "s--", label=f"{cell} d={d} B={B} fwd+bwd")
    ax.axhline(GOAL_SPEEDUP, color="gray", lw=0.8, ls=":", label="goal 10x")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="sequential time / Newton time",
           title="Parallel Newton vs sequential loop (CPU)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(ctx.out_dir / "recurrence_speedup.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for (cell, d, B), rs in series.items():
        rs = sorted(rs, key=lambda r: r["T"])
        ax.plot([r["T"] for r in rs], [r["nit"] for r in rs], "o-", label=f"{cell} d={d} B={B}")
    ax.set(xscale="log", xlabel="sequence length T", ylabel="Newton iterations", title="Iterations to tolerance")
    ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(ctx.out_dir / "recurrence_iterations.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def _grid(quick: bool) -> tuple[list[tuple[str, int, int, int, bool]], list[tuple[int, int, int]]]:
    """(cell, T, d, B, with backward) for structured cells; (T, d, B) for the dense path."""
    if quick:
        # Backward only at T = 1k: autograd through a 64k-step Python loop alone takes minutes.
        structured = [("gru", 1_000, 8, 1, True), ("gru", 16_000, 8, 1, False), ("gru", 64_000, 8, 1, False),
                      ("gru", 64_000, 64, 1, False), ("gru", 64_000, 256, 1, False), ("lstm", 1_000, 8, 1, True),
                      ("lstm", 64_000, 8, 1, False)]
        return structured, [(2_000, 8, 1), (2_000, 64, 1)]
    structured = [(cell, T, d, B, True) for cell in ("gru", "lstm") for T in (1_000, 16_000, 64_000)
                  for d in (8, 64, 256) for B in (1, 16)]
    dense = [(T, d, B) for T in (1_000, 16_000, 64_000) for d in (8, 64, 256) for B in (1, 16)]
    return structured, dense


def _code_fingerprint() -> str:
    """What cached rows depend on: the recurrence package and the functions that time it (not
    the report's formatting)."""
    package = sorted(Path(recurrence.__file__).parent.glob("*.[pc]"))
    measuring = [_timings, _repeats, _newton_repeats, _parallel_solve, _structured_case, _dense_case]
    return code_fingerprint([*package, *map(inspect.getsource, measuring)])


class _RowCache:
    """Rows of a long run, appended to ``recurrence_rows.jsonl`` in the output directory as they
    finish: a run that is stopped keeps what it measured, and a rerun with the same code (same
    fingerprint) and machine thread count measures only the rest."""

    def __init__(self, ctx: BenchContext, machine_threads: int):
        self.path = ctx.out_dir / "recurrence_rows.jsonl"
        self.key = {"code": _code_fingerprint(), "machine_threads": machine_threads, "seed": ctx.seed}
        self.rows: dict[str, dict[str, Any]] = {}
        self.reused = 0
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                entry = json.loads(line)
                if entry["key"] == self.key:
                    self.rows[entry["case"]] = entry["row"]

    def get(self, case: tuple, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        name = repr(case)
        if name in self.rows:
            self.reused += 1
            return self.rows[name]
        row = measure()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"key": self.key, "case": name, "row": row}) + "\n")
        return row


def run(ctx: BenchContext) -> Section:
    machine_threads = torch.get_num_threads()
    cache = _RowCache(ctx, machine_threads)
    # One intra-op thread for every implementation first (core for core); the structured cells
    # are then timed again with all of the machine's threads. On a loaded machine OpenMP barriers
    # with several threads stall for milliseconds per op, so only a quiet run's figures count.
    with torch_threads(THREADS):
        structured, dense = _grid(ctx.quick)
        rows = [cache.get(("structured", *case), lambda: _structured_case(ctx, *case, machine_threads))
                for case in ctx.track(structured, desc="recurrence: structured cells")]
        dense_rows = [cache.get(("dense", *case), lambda: _dense_case(ctx, *case))
                      for case in ctx.track(dense, desc="recurrence: dense path")]
        generic_markdown, generic_figures = run_generic(ctx)
    plots = _plots(ctx, rows)
    kernels = native.available(torch.float32)
    return Section(title="recurrence: parallel Newton over time (DEER)",
                   markdown=_markdown(rows, dense_rows, machine_threads, kernels, cache.reused) + "\n\n"
                   + generic_markdown,
                   figures={"structured": rows, "dense": dense_rows, **generic_figures, "threads": THREADS,
                            "machine_threads": machine_threads, "goal_speedup": GOAL_SPEEDUP,
                            "native_kernels": kernels, "rows_reused": cache.reused},
                   plots=plots)


def _markdown(rows: list[dict[str, Any]], dense_rows: list[dict[str, Any]], machine_threads: int,
              kernels: bool, reused: int) -> str:
    lines = [
        "Newton's evaluations and scans for the structured cells ran on "
        + ("the fused C kernels of `torchnewton.recurrence.native` (built at first use)." if kernels else
           "torch ops: the fused C kernels of `torchnewton.recurrence.native` could not be built here.")
        + (f" {reused} rows were measured by an earlier run of the same code (`recurrence_rows.jsonl`)."
           if reused else ""),
        "",
        f"CPU, float32, {THREADS} intra-op thread for all implementations. `newton` = "
        "`torchnewton.recurrence.solve(method='newton')` (default float32 tolerance 6.4e-6 on max "
        "|h_t - f(h_{t-1}, x_t)| and on the estimated state error); "
        "`sequential` = Python loop of the same cell (input projections precomputed); torch.nn.GRU = "
        "C++ loop computing the same function (diagonal GRU weights placed in dense `weight_hh`). "
        "Times are medians (s) of wall time; speedup = other / newton; the CPU-time speedups use the "
        "process CPU time of the same runs. Sequential runs at T*B*d > 32k are single "
        "runs (column `seq reps`), as are torch.nn.GRU runs there. Quick mode measures forward+backward "
        "at T = 1k only (nan elsewhere); `--full` runs the whole grid with backward. Wall times on a "
        "shared machine: other processes' load inflates both sides, single sequential runs most.",
        "",
        "### Structured cells (diagonal GRU, CIFG LSTM with 2x2-block Jacobian)",
        "",
    ]
    header = ["cell", "T", "d", "B", "nit", "newton fwd", "seq fwd", "speedup fwd", "newton fwd+bwd",
              "seq fwd+bwd", "speedup fwd+bwd", "nn.GRU fwd", "nn.GRU / newton fwd", "nn.GRU fwd+bwd",
              "nn.GRU / newton fwd+bwd", "speedup fwd (CPU time)", "speedup fwd+bwd (CPU time)", "max rel diff",
              "seq reps"]
    table = [[r["cell"], r["T"], r["d"], r["B"], r["nit"], r["parallel_forward_s"], r["sequential_forward_s"],
              r["speedup_forward"], r["parallel_forward_backward_s"], r["sequential_forward_backward_s"],
              r["speedup_forward_backward"], r.get("torch_gru_forward_s", "-"), r.get("vs_torch_gru_forward", "-"),
              r.get("torch_gru_forward_backward_s", "-"), r.get("vs_torch_gru_forward_backward", "-"),
              r["speedup_forward_cpu"], r["speedup_forward_backward_cpu"], f"{r['max_rel_diff']:.1e}",
              r["sequential_repeats"]] for r in rows]
    lines += [markdown_table(header, table), ""]
    if machine_threads > 1:
        lines += [f"### Structured cells with all {machine_threads} threads of the machine", "",
                  f"Newton and the sequential loop again with {machine_threads} intra-op threads. The speedups "
                  f"compare each side at its faster thread count (1 or {machine_threads}); fwd+bwd of the loop "
                  "is timed at 1 thread only (its per-step ops are too small to split).", ""]
        header = ["cell", "T", "d", "B", f"newton fwd ({machine_threads} thr)", f"seq fwd ({machine_threads} thr)",
                  "seq fwd (1 thr)", "speedup fwd (best each)", f"newton fwd+bwd ({machine_threads} thr)",
                  "seq fwd+bwd (1 thr)",
                  "speedup fwd+bwd (best each)"]
        table = [[r["cell"], r["T"], r["d"], r["B"], r["parallel_forward_all_s"], r["sequential_forward_all_s"],
                  r["sequential_forward_s"], r["speedup_forward_all"], r["parallel_forward_backward_all_s"],
                  r["sequential_forward_backward_s"], r["speedup_forward_backward_all"]] for r in rows]
        lines += [markdown_table(header, table), ""]
    lines += ["### Dense path (full-weight torch.nn.GRUCell as a generic cell, autograd Jacobians)", ""]
    header = ["T", "d", "B", "nit", "newton fwd", "seq fwd", "nn.GRU fwd", "seq / newton", "nn.GRU / newton",
              "newton fwd+bwd", "seq fwd+bwd", "nn.GRU fwd+bwd", "max rel diff vs nn.GRU"]
    table = []
    for r in dense_rows:
        if "skipped" in r:
            table.append([r["T"], r["d"], r["B"], "skipped: " + r["skipped"]] + ["-"] * 9)
        else:
            table.append([r["T"], r["d"], r["B"], r["nit"], r["parallel_forward_s"], r["sequential_forward_s"],
                          r["torch_gru_forward_s"], r["speedup_forward"], r["vs_torch_gru_forward"],
                          r["parallel_forward_backward_s"], r["sequential_forward_backward_s"],
                          r["torch_gru_forward_backward_s"], f"{r['max_rel_diff']:.1e}"])
    lines += [markdown_table(header, table), ""]
    lines += ["### Goals", ""]
    lines.append(f"Goal: forward at T = 64k at least {GOAL_SPEEDUP:.0f}x faster than the sequential loop, judged on "
                 "the whole machine" + (f" (each side at its faster of 1 and {machine_threads} threads)"
                                        if machine_threads > 1 else "")
                 + "; the core-for-core figure (1 thread, the smaller of the wall and CPU-time ratios) "
                 "is shown beside it.")
    for r in rows:
        if r["T"] == 64_000:
            core = min(r["speedup_forward"], r["speedup_forward_cpu"])
            machine = r.get("speedup_forward_all", core)
            met = "met" if machine >= GOAL_SPEEDUP else "NOT met"
            line = (f"- {r['cell']} d={r['d']} B={r['B']}, T=64k: forward speedup vs sequential loop "
                    f"{machine:.1f}x on the machine (goal >= {GOAL_SPEEDUP:.0f}x: {met}); core for core "
                    f"{r['speedup_forward']:.1f}x wall, {r['speedup_forward_cpu']:.1f}x CPU time")
            if not math.isnan(r["speedup_forward_backward"]):
                line += f"; fwd+bwd {r.get('speedup_forward_backward_all', r['speedup_forward_backward']):.1f}x " \
                        f"on the machine, {r['speedup_forward_backward']:.1f}x core for core"
            if "backward_skipped" in r:
                line += f"; fwd+bwd not measured ({r['backward_skipped']})"
            if "vs_torch_gru_forward" in r:
                line += f"; forward vs torch.nn.GRU (same function) {r['vs_torch_gru_forward']:.2f}x"
            lines.append(line + ".")
    for r in dense_rows:
        if "skipped" not in r:
            verdict = "loses to" if r["vs_torch_gru_forward"] < 1 else "beats"
            lines.append(f"- dense path T={r['T']} d={r['d']} B={r['B']}: {r['speedup_forward']:.1f}x vs its "
                         f"sequential loop, {verdict} torch.nn.GRU ({r['vs_torch_gru_forward']:.2f}x).")
    lines.append("- The dense path does O(T d^3) scan work and stores (B T d^2) Jacobians; it loses at large d.")
    lines += ["", "### Cost per state (T = 64k, each side at its faster thread count)", "",
              "The sequential loop pays a fixed overhead per time step, so its cost per state falls as the "
              "step holds more states (B x state size); Newton's cost is a few passes over every state, nearly "
              "constant per state. The speedup is their ratio, and it falls below 10x where the loop's cost "
              "per state drops under ten times Newton's.", ""]
    table = []
    for r in rows:
        if r["T"] == 64_000:
            states = r["T"] * r["B"] * r["d"] * (2 if r["cell"] == "lstm" else 1)
            loop = min(r["sequential_forward_s"], r.get("sequential_forward_all_s", math.inf))
            newton = min(r["parallel_forward_s"], r.get("parallel_forward_all_s", math.inf))
            table.append([r["cell"], r["d"], r["B"], states // r["T"], r["nit"],
                          f"{1e9 * loop / states:.1f}", f"{1e9 * newton / states:.2f}", f"{loop / newton:.1f}x"])
    lines.append(markdown_table(["cell", "d", "B", "states per step", "nit", "loop ns/state",
                                 "newton ns/state", "speedup"], table))
    return "\n".join(lines)
