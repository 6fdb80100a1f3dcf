"""`torchnewton bench`: run benchmark suites side by side with their peers and write a report."""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

from .suite import BenchContext, Section

# Suite name -> module under torchnewton.bench.suites. Order is report order.
SUITES = {
    "root": "root",
    "least_squares": "least_squares",
    "minimize": "minimize",
    "linalg": "linalg",
    "ot": "ot",
    "recurrence": "recurrence",
    "optim": "optim",
    "curvature": "curvature",
    "fixed_point": "fixed_point",
    "constrained": "constrained",
    "linear": "linear",
    "latency": "latency",
}


def _progress():
    try:
        from tqdm.auto import tqdm

        return tqdm
    except ImportError:  # the bench extra installs tqdm; without it, no bar
        return lambda iterable, **kwargs: iterable


def run_suites(names: list[str], ctx: BenchContext) -> list[Section]:
    sections = []
    for name in ctx.progress(names, desc="suites", leave=True):
        module = importlib.import_module(f"torchnewton.bench.suites.{SUITES[name]}")
        start = time.perf_counter()
        section = module.run(ctx)
        section.figures["suite_seconds"] = time.perf_counter() - start
        sections.append(section)
    return sections


def write_report(sections: list[Section], ctx: BenchContext) -> Path:
    header = [
        "# torchnewton benchmark report",
        "",
        f"- mode: {'quick' if ctx.quick else 'full'}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, CUDA available: {torch.cuda.is_available()}",
        "",
    ]
    body = []
    for s in sections:
        body += [f"## {s.title}", "", s.markdown, ""]
        body += [f"![{p.stem}]({p.name})" for p in s.plots]
        body += ["", f"_suite time: {s.figures['suite_seconds']:.1f} s_", ""]
    report = ctx.out_dir / "report.md"
    report.write_text("\n".join(header + body))
    figures = {s.title: s.figures for s in sections}
    (ctx.out_dir / "results.json").write_text(json.dumps(figures, indent=2, default=str))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchnewton")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run benchmarks against peers and write a report")
    bench.add_argument("suites", nargs="*", help=f"suites to run (default: all): {', '.join(SUITES)}")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="small sizes, finishes in minutes (default)")
    mode.add_argument("--full", dest="quick", action="store_false", help="the full sizes of the issues")
    bench.add_argument("--out", default="bench-report", help="output directory (default: bench-report)")
    bench.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {unknown}; valid suites: {', '.join(SUITES)}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = BenchContext(quick=args.quick, out_dir=out_dir, seed=args.seed, progress=_progress())
    sections = run_suites(args.suites or list(SUITES), ctx)
    report = write_report(sections, ctx)
    print(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
