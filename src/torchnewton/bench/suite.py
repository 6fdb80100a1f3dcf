"""The contract between `torchnewton bench` and each benchmark suite.

A suite is a module under ``torchnewton.bench.suites`` with a function ``run(ctx) -> Section``.
It runs torchnewton and the named peer side by side in the same process, and returns a markdown
section (tables of ratios, medians, evaluation counts), a JSON-able dict of every figure, and
the paths of the PNG plots it wrote into ``ctx.out_dir``.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")


@dataclass
class BenchContext:
    quick: bool
    out_dir: Path
    seed: int = 0
    progress: Callable[..., Any] = lambda iterable, **kwargs: iterable  # tqdm-like

    def track(self, iterable: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
        """Wrap a loop of a long benchmark in the progress bar."""
        return self.progress(iterable, desc=desc, total=total, leave=False)


@dataclass
class Section:
    title: str
    markdown: str
    figures: dict[str, Any] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)


def code_fingerprint(sources: Iterable[str | Path]) -> str:
    """A hash of code that cached benchmark results depend on. Python sources (file paths or
    source text) count by their syntax trees without docstrings, so comments and documentation
    do not invalidate a cache; other files (C) by their bytes."""
    digest = hashlib.sha256()
    for source in sources:
        if isinstance(source, Path) and source.suffix != ".py":
            digest.update(source.read_bytes())
            continue
        tree = ast.parse(source.read_text() if isinstance(source, Path) else source)
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:]
        digest.update(ast.dump(tree).encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, restoring the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_time(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time (seconds) of ``fn()`` over ``repeats`` runs, and the last return value."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
