"""Benchmark of ``torchnewton.linalg`` against the SVD polar factor, torch.optim.Muon's
Newton–Schulz, ``torch.linalg.eigh`` and ``torch.linalg.pinv``.

Errors are measured against a float64 SVD / eigendecomposition (the 1024 x 4096 timing case uses
the float32 SVD it times as its reference, whose own error, ~1e-6, is far below the ~1e-1 errors
measured there). Times are medians over repeats, in the same process, side by side.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from torchnewton import linalg
from torchnewton.bench.suite import BenchContext, Section, markdown_table, median_time
from torchnewton.linalg.methods import DEFAULT_STEPS, MATMULS_PER_STEP, normalize, schedule
from torchnewton.linalg.coefficients import MUON_QUINTIC, composite_map
from torchnewton.linalg.gram import use_gram
from torchnewton.linalg.polynomial import flatten_batch, odd_polynomial_step
from torchnewton.bench.problems.polar_express_published import PUBLISHED_POLAR_EXPRESS

F64 = torch.float64
FAMILIES = ("gaussian", "log-spectrum", "low-rank+noise", "levy")
METHODS = ("polar-express", "quintic", "newton-schulz", "aol")


def run(ctx: BenchContext) -> Section:
    torch.manual_seed(ctx.seed)
    figures: dict[str, Any] = {}
    goals: list[list[Any]] = []
    parts = [
        _coefficients(figures, goals),
        _accuracy(ctx, figures, goals),
        _speed(ctx, figures, goals),
        _muon(ctx, figures),
        _roots(ctx, figures, goals),
        _gradients(figures),
    ]
    plots = [_plot_error_vs_matmuls(ctx, figures)]
    summary = "### Goals\n\n" + markdown_table(["goal", "measured", "met"], goals)
    return Section(title="linalg: matrix Newton iterations", markdown="\n\n".join([summary] + parts),
                   figures=figures, plots=plots)


# ----------------------------------------------------------------------------- inputs and errors

def _family(name: str, m: int, n: int, generator: torch.Generator) -> torch.Tensor:
    k = min(m, n)
    if name == "gaussian":
        return torch.randn(m, n, dtype=F64, generator=generator)
    if name == "log-spectrum":
        U, _ = torch.linalg.qr(torch.randn(m, k, dtype=F64, generator=generator))
        V, _ = torch.linalg.qr(torch.randn(n, k, dtype=F64, generator=generator))
        return (U * torch.logspace(-6, 0, k, dtype=F64)) @ V.mT
    if name == "low-rank+noise":
        r = max(1, k // 16)
        low = torch.randn(m, r, dtype=F64, generator=generator) @ torch.randn(r, n, dtype=F64, generator=generator)
        return low + 1e-3 * torch.randn(m, n, dtype=F64, generator=generator)
    # Lévy: 1/Z^2 for Z ~ N(0, 1), with random signs
    z = torch.randn(m, n, dtype=F64, generator=generator)
    signs = torch.randint(0, 2, (m, n), generator=generator, dtype=F64) * 2 - 1
    return signs / z**2


def _svd_polar(A: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    return U @ Vh


def _errors(X: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(orthogonality ||X^T X - I||_F / sqrt(k), polar error ||X - UV^T||_F / ||UV^T||_F), batch max."""
    X, reference = X.to(F64), reference.to(F64)
    m, n = X.shape[-2:]
    k = min(m, n)
    G = X.mT @ X if m >= n else X @ X.mT
    orth = torch.linalg.matrix_norm(G - torch.eye(k, dtype=F64)) / math.sqrt(k)
    polar = torch.linalg.matrix_norm(X - reference) / torch.linalg.matrix_norm(reference)
    return float(orth.max()), float(polar.max())


def _iterates(A: torch.Tensor, method: str, steps: int) -> list[torch.Tensor]:
    """X_1..X_steps of ``method`` on wide A, the same loop as ``linalg.methods.run_fixed``."""
    X, G = normalize(flatten_batch(A), method)
    out = []
    for coeffs in schedule(method, steps, 1e-3):
        X = odd_polynomial_step(X, X @ X.mT if G is None else G, coeffs)
        G = None
        out.append(X.reshape(A.shape))
    return out


# ----------------------------------------------------------------------------- sections

def _coefficients(figures: dict, goals: list) -> str:
    ours = linalg.polar_express_coefficients(degree=5, steps=8, lower=1e-3, safety=1.0)
    worst = max(abs(a - b) / abs(b) for mine, theirs in zip(ours, PUBLISHED_POLAR_EXPRESS)
                for a, b in zip(mine, theirs))
    xs = torch.logspace(-3, 0, 4001, dtype=F64).tolist()
    pe5 = [composite_map(x, linalg.polar_express_coefficients(steps=5)) for x in xs]
    q5 = [composite_map(x, (MUON_QUINTIC,) * 5) for x in xs]
    x32 = torch.logspace(-3, 0, 4001, dtype=torch.float32)
    for a, b, c in linalg.polar_express_coefficients(steps=8):
        y = x32 * x32
        x32 = x32 * (a + y * (b + c * y))
    pe8 = float((x32 - 1).abs().max())
    figures["coefficients"] = {"max_relative_difference_vs_published": worst,
                               "polar_express_5_image": [min(pe5), max(pe5)],
                               "quintic_5_image": [min(q5), max(q5)],
                               "polar_express_8_float32_max_abs_sigma_minus_1": pe8}
    goals.append(["Remez coefficients = published (8 steps, l=1e-3)", f"max rel. diff {worst:.1e}", worst < 1e-9])
    goals.append(["5 PE steps map [1e-3,1] into ~[0.85,1.13]", f"[{min(pe5):.3f}, {max(pe5):.3f}]",
                  0.84 < min(pe5) and max(pe5) < 1.14])
    goals.append(["5 fixed-quintic steps map [1e-3,1] into ~[0.47,1.20]", f"[{min(q5):.3f}, {max(q5):.3f}]",
                  0.46 < min(q5) and max(q5) < 1.21])
    goals.append(["8 PE steps: max|sigma-1| < 1e-2 in float32", f"{pe8:.2e}", pe8 < 1e-2])
    rows = [[t + 1, *(f"{c:.6f}" for c in mine), *(f"{c:.6f}" for c in theirs)]
            for t, (mine, theirs) in enumerate(zip(ours, PUBLISHED_POLAR_EXPRESS))]
    return ("### Polar Express coefficients (Remez, l = 1e-3, before safety) vs the paper\n\n"
            + markdown_table(["step", "a", "b", "c", "paper a", "paper b", "paper c"], rows))


def _accuracy(ctx: BenchContext, figures: dict, goals: list) -> str:
    m, n = (128, 256) if ctx.quick else (1024, 2048)
    generator = torch.Generator().manual_seed(ctx.seed)
    muon_ns = _muon_newton_schulz()
    rows, per_family, per_family_gram, curves = [], {}, {}, {}
    for family in ctx.track(FAMILIES, desc="linalg accuracy"):
        A = _family(family, m, n, generator)
        reference = _svd_polar(A)
        A32 = A.float()
        errors, gram = {}, {}
        curves[family] = {}
        for method in METHODS:
            max_steps = 18 if method == "newton-schulz" else 12
            iterates = _iterates(A32, method, max_steps)
            curves[family][method] = [(MATMULS_PER_STEP[method] * (k + 1), *_errors(X, reference))
                                      for k, X in enumerate(iterates)]
            X = iterates[DEFAULT_STEPS[method] - 1]
            errors[method] = _errors(X, reference)
            gram[method] = _errors(linalg.orthogonalize(A32, method=method, gram=True), reference)
        if muon_ns is not None:
            errors["torch Muon NS (bf16)"] = _errors(muon_ns(A32), reference)
        per_family[family] = errors
        per_family_gram[family] = gram
        for name, (orth, pol) in errors.items():
            steps = DEFAULT_STEPS.get(name, 5)
            mm = MATMULS_PER_STEP.get(name, 3) * steps
            rows.append([family, name, steps, mm, orth, pol, *gram.get(name, ("-", "-"))])
    figures["accuracy"] = {"shape": [m, n], "errors": per_family, "errors_gram": per_family_gram}
    figures["error_vs_matmuls"] = curves
    wins = {f: per_family[f]["polar-express"][1] < per_family[f]["quintic"][1] for f in FAMILIES}
    detail = ", ".join(f"{f}: {per_family[f]['polar-express'][1]:.3f} vs {per_family[f]['quintic'][1]:.3f}"
                       for f in FAMILIES)
    goals.append(["5 steps: PE polar error < fixed quintic on every family (15 matmuls each)", detail,
                  all(wins.values())])
    change = max(abs(per_family_gram[f][k][1] - per_family[f][k][1]) / per_family[f][k][1]
                 for f in FAMILIES for k in METHODS)
    goals.append(["Gram evaluation: polar error within 1e-4 (relative) of the standard steps",
                  f"max relative change {change:.1e}", change <= 1e-4])
    return (f"### Accuracy at fixed cost, {m}x{n} float32, vs float64 SVD\n\n"
            "Fixed-cost defaults: 5 quintic-type steps (3 products each), 4 after AOL, 7 cubic "
            "Newton–Schulz steps (2 products each). torch's Muon Newton–Schulz runs in bfloat16 "
            "(hard-coded). AOL converges to polar(DA), not polar(A): see its plateau in the plot. "
            "The last two columns run the same steps on the Gram matrix (`orthogonalize(gram=True)`).\n\n"
            + markdown_table(["family", "method", "steps", "matmuls", "orthogonality err", "polar err",
                              "orthogonality err (Gram)", "polar err (Gram)"], rows))


def _speed(ctx: BenchContext, figures: dict, goals: list) -> str:
    shapes: list[tuple[int, ...]] = [(256, 256), (48, 64, 64), (1024, 4096)]
    if not ctx.quick:
        shapes = [(256, 256), (512, 512), (1024, 1024), (512, 2048), (48, 64, 64), (16, 128, 128),
                  (1024, 4096), (2048, 4096)]
    generator = torch.Generator().manual_seed(ctx.seed + 1)
    rows, results = [], {}
    for shape in ctx.track(shapes, desc="linalg speed"):
        G = torch.randn(*shape, generator=generator)
        # quick mode runs only the Polar Express and AOL rows of the large case (its SVD alone
        # takes seconds here), still with a warm-up and the median of 3
        big = ctx.quick and G.numel() >= 1024 * 4096
        label = "x".join(map(str, shape))
        svd_time, reference = median_time(lambda: _svd_polar(G), repeats=3, warmup=1)
        entry: dict[str, Any] = {"svd_seconds": svd_time}
        rows.append([label, "SVD (torch.linalg.svd)", "-", svd_time, 1.0, 0.0, 0.0])
        auto = use_gram(flatten_batch(G if G.shape[-2] <= G.shape[-1] else G.mT), DEFAULT_STEPS["polar-express"])
        # the default (automatic gram) for every method, and the standard steps where it differs
        variants = [(None, "")] + ([(False, " gram=False")] if auto else [])
        for method in ("polar-express", "aol") if big else METHODS:
            for gram, suffix in variants:
                fn = lambda: linalg.orthogonalize(G, method=method, check_finite=False, gram=gram)
                seconds, X = median_time(fn, repeats=3, warmup=1)
                orth, pol = _errors(X, reference)
                name = method + suffix
                entry[name] = {"seconds": seconds, "speedup_vs_svd": svd_time / seconds,
                               "orthogonality": orth, "polar_error": pol, "gram": auto and gram is None}
                rows.append([label, f"orthogonalize {name}", _products(method, auto and gram is None),
                             seconds, svd_time / seconds, orth, pol])
        results[label] = entry
    figures["speed"] = results
    big_case = results["1024x4096"]
    default, standard = big_case["polar-express"], big_case["polar-express gram=False"]
    goals.append(["orthogonalize >= 3x faster than SVD at 1024x4096 float32 (default: Gram evaluation)",
                  f"{default['speedup_vs_svd']:.1f}x ({big_case['svd_seconds']:.2f} s vs "
                  f"{default['seconds']:.2f} s; standard steps {standard['speedup_vs_svd']:.1f}x, "
                  f"{standard['seconds']:.2f} s)", default["speedup_vs_svd"] >= 3.0])
    return (f"### Speed vs the SVD polar factor (float32, CPU, {torch.get_num_threads()} threads)\n\n"
            "Median of 3 seconds after a warm-up; speedup = SVD time / method time; errors vs the "
            "float32 SVD polar factor. Batched shapes (b, m, n) are attention-head-sized matrices. "
            "`orthogonalize` defaults to the Gram evaluation when max(m, n) >= 2 min(m, n) "
            "(matmuls \"2 + k small\": two products of the full size, k of min(m, n)-sized ones); "
            "the gram=False rows are the standard steps on the same input. Quick mode runs only "
            "Polar Express and AOL at 1024x4096.\n\n"
            + markdown_table(["shape", "method", "matmuls", "median s", "speedup vs SVD",
                              "orthogonality err", "polar err"], rows))


def _products(method: str, gram: bool) -> str:
    """Matrix products of the default step count: per step, or "2 + k small" in Gram space."""
    steps, per_step = DEFAULT_STEPS[method], MATMULS_PER_STEP[method]
    if not gram:
        return str(per_step * steps)
    # per Gram step: per_step - 2 Horner products, P Q, and P A P (2); the first step has no
    # P Q, the last no P A P (``linalg.gram``)
    return f"2 + {(per_step + 1) * steps - 3} small"


def _muon(ctx: BenchContext, figures: dict) -> str:
    muon_ns = _muon_newton_schulz()
    if muon_ns is None:
        figures["muon"] = "torch.optim._muon._zeropower_via_newtonschulz not found"
        return "### torch.optim.Muon Newton–Schulz\n\nNot available in this torch build."
    shapes = [(256, 256), (256, 1024)] if ctx.quick else [(256, 256), (256, 1024), (512, 512), (512, 2048)]
    generator = torch.Generator().manual_seed(ctx.seed + 2)
    rows, results = [], {}
    for shape in ctx.track(shapes, desc="linalg muon"):
        G = torch.randn(*shape, generator=generator)
        reference = _svd_polar(G.double())
        # bfloat16 on CPU is slow: one timed run in quick mode
        muon_time, X = median_time(lambda: muon_ns(G), repeats=1 if ctx.quick else 3, warmup=0)
        entry = {"torch_muon_bf16": {"seconds": muon_time, "errors": _errors(X, reference)}}
        rows.append(["x".join(map(str, shape)), "torch Muon NS (bf16)", muon_time, 1.0, *_errors(X, reference)])
        candidates = [("quintic", torch.float32), ("polar-express", torch.float32)]
        if shape == (256, 256) and not ctx.quick:
            candidates.append(("quintic", torch.bfloat16))
        for method, dtype in candidates:
            fn = lambda: linalg.orthogonalize(G, method=method, dtype=dtype, check_finite=False)
            seconds, X = median_time(fn, repeats=3, warmup=1)
            errors = _errors(X, reference)
            name = f"orthogonalize {method} ({str(dtype).removeprefix('torch.')})"
            entry[name] = {"seconds": seconds, "speedup_vs_muon": muon_time / seconds, "errors": errors}
            rows.append(["x".join(map(str, shape)), name, seconds, muon_time / seconds, *errors])
        results["x".join(map(str, shape))] = entry
    figures["muon"] = results
    return ("### vs the Newton–Schulz inside torch.optim.Muon (5 quintic steps)\n\n"
            "torch's `_zeropower_via_newtonschulz` always casts to bfloat16, and bfloat16 matmuls are "
            "slow on this CPU (the 1024x4096 case is left out for that reason; it took over 200 s). "
            "Speedup = Muon time / method time; errors vs float64 SVD. Quick mode times the Muon "
            "function once per shape.\n\n"
            + markdown_table(["shape", "method", "median s", "speedup vs Muon", "orthogonality err",
                              "polar err"], rows))


def _roots(ctx: BenchContext, figures: dict, goals: list) -> str:
    n = 64 if ctx.quick else 512
    repeats = 1 if ctx.quick else 3
    generator = torch.Generator().manual_seed(ctx.seed + 3)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=generator))
    rows, results, worst = [], {}, 0.0
    cases: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = [
        ("sqrtm", linalg.sqrtm, torch.sqrt),
        ("sqrtm denman-beavers", lambda A: linalg.sqrtm(A, method="denman-beavers"), torch.sqrt),
        ("inv_sqrtm", linalg.inv_sqrtm, torch.rsqrt),
        ("inv_root p=2", lambda A: linalg.inv_root(A, 2), lambda w: w**-0.5),
        ("inv_root p=4", lambda A: linalg.inv_root(A, 4), lambda w: w**-0.25),
    ]
    for kappa in ctx.track([1e1, 1e2, 1e3, 1e4], desc="linalg roots"):
        w = torch.logspace(0, -math.log10(kappa), n, dtype=F64)
        A = (Q * w) @ Q.mT
        A = 0.5 * (A + A.mT)
        eigh_time, (w_ref, V) = median_time(lambda: torch.linalg.eigh(A), repeats=repeats, warmup=1)
        for name, fn, f in cases:
            seconds, X = median_time(lambda: fn(A), repeats=repeats, warmup=1)
            R = (V * f(w_ref)) @ V.mT
            error = float(torch.linalg.matrix_norm(X - R) / torch.linalg.matrix_norm(R))
            worst = max(worst, error)
            results[f"{name} kappa={kappa:g}"] = {"relative_error": error, "seconds": seconds,
                                                  "eigh_seconds": eigh_time}
            rows.append([name, f"{kappa:g}", error, seconds, eigh_time])
    # pinv: full rank and rank deficient, vs torch.linalg.pinv
    for label, A in [("pinv full rank 2n x n", torch.randn(2 * n, n, dtype=F64, generator=generator)),
                     ("pinv rank n/8", torch.randn(2 * n, n // 8, dtype=F64, generator=generator)
                      @ torch.randn(n // 8, n, dtype=F64, generator=generator))]:
        peer_time, R = median_time(lambda: torch.linalg.pinv(A), repeats=repeats, warmup=1)
        seconds, X = median_time(lambda: linalg.pinv(A), repeats=repeats, warmup=1)
        error = float(torch.linalg.matrix_norm(X - R) / torch.linalg.matrix_norm(R))
        results[label] = {"relative_error": error, "seconds": seconds, "torch_pinv_seconds": peer_time}
        rows.append([label, "-", error, seconds, peer_time])
    figures["roots"] = results
    goals.append(["sqrtm/inv_sqrtm/inv_root: 1e-6 rel. error in float64 vs eigh, kappa <= 1e4",
                  f"worst {worst:.1e} (n={n})", worst < 1e-6])
    return (f"### Square roots, inverse roots, pseudo-inverse (float64, n = {n})\n\n"
            "Relative Frobenius error vs eigh (pinv: vs torch.linalg.pinv); peer time is eigh "
            "(or torch.linalg.pinv).\n\n"
            + markdown_table(["function", "kappa", "rel. error", "median s", "peer median s"], rows))


def _gradients(figures: dict) -> str:
    generator = torch.Generator().manual_seed(7)
    rows, results = [], {}
    A = torch.randn(48, 80, dtype=F64, generator=generator)
    W = torch.randn(48, 80, dtype=F64, generator=generator)
    B = torch.randn(48, 48, dtype=F64, generator=generator)
    V = torch.randn(48, 48, dtype=F64, generator=generator)

    def grad(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad((f(x) * w).sum(), x)[0]

    def eigh_sqrt(M: torch.Tensor) -> torch.Tensor:
        w, U = torch.linalg.eigh(M)
        return (U * w.sqrt()) @ U.mT

    spd = lambda X: X @ X.mT / 48 + 1e-2 * torch.eye(48, dtype=F64)
    for name, ours, ref, x, w in [("polar 48x80", linalg.polar, _svd_polar, A, W),
                                  ("sqrtm 48x48", lambda X: linalg.sqrtm(spd(X)), lambda X: eigh_sqrt(spd(X)), B, V)]:
        g1, g2 = grad(ours, x, w), grad(ref, x, w)
        error = float((g1 - g2).norm() / g2.norm())
        results[name] = error
        rows.append([name, error])
    figures["gradients"] = results
    return ("### Gradients (float64) vs autograd through torch.linalg.svd / eigh\n\n"
            "Backward passes solve a Lyapunov equation by the matrix sign iteration.\n\n"
            + markdown_table(["function", "relative gradient error"], rows))


def _plot_error_vs_matmuls(ctx: BenchContext, figures: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = figures["error_vs_matmuls"]
    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(4.2 * len(FAMILIES), 3.6), sharey=True)
    for ax, family in zip(axes, FAMILIES):
        for method, points in curves[family].items():
            ax.semilogy([p[0] for p in points], [p[2] for p in points], marker="o", ms=3, label=method)
        ax.set_title(family)
        ax.set_xlabel("matrix multiplications")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("polar error ||X - UV^T||_F / ||UV^T||_F")
    axes[0].legend(fontsize=8)
    shape = figures["accuracy"]["shape"]
    fig.suptitle(f"Polar error vs matrix multiplications ({shape[0]}x{shape[1]} float32)")
    fig.tight_layout()
    path = ctx.out_dir / "linalg_error_vs_matmuls.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _muon_newton_schulz() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torch.optim.Muon's internal Newton–Schulz with its default coefficients and 5 steps."""
    try:
        from torch.optim import _muon
    except ImportError:
        return None
    ns = getattr(_muon, "_zeropower_via_newtonschulz", None)
    if ns is None:
        return None
    coefficients = (_muon.DEFAULT_A, _muon.DEFAULT_B, _muon.DEFAULT_C)
    return lambda G: ns(G, coefficients, _muon.DEFAULT_NS_STEPS, _muon.EPS)
