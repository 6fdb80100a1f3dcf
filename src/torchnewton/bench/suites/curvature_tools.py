"""Part (c) of the curvature suite: the curvature tools on an MLP trained on scikit-learn's digits.

The MLP (64-32-10 quick, 64-64-10 full, tanh, float32) is first trained with Adam on the digits
training split (standardized pixels) so that its Hessian is that of a trained network, then:

- time per product: Hessian-vector products (the default operator, whose route — double
  backward for one vector, vmapped reverse-over-reverse in chunks for a block — the row names,
  and the explicit double-backward and forward-over-reverse modes), exact Gauss–Newton,
  empirical and Monte-Carlo Fisher products of ``torchnewton.curvature`` against curvlinops'
  ``HessianLinearOperator`` (which is forward-over-reverse, vmapped over the block, in every
  Hessian row), ``GGNLinearOperator``, ``EFLinearOperator`` and ``FisherMCLinearOperator`` on the
  same model and data — one vector and a block of 16, repeats
  interleaved, min and median wall time, the ratios of minima and medians (and of median thread
  CPU times, which waiting for a shared CPU does not inflate) and the relative difference of the
  products;
- the Hessian's top-5 eigenvalues by thick-restart Lanczos against scipy's ``eigsh`` (ARPACK) on
  curvlinops' operator and against ``eigvalsh`` of the dense Hessian (built from n products);
- its trace by Hutchinson and Hutch++ (torchnewton and curvlinops, equal numbers of products, over
  seeds) against the exact trace;
- its spectral density by stochastic Lanczos quadrature, plotted over the histogram of the exact
  eigenvalues.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from torchnewton.bench.suite import BenchContext, markdown_table, torch_threads
from torchnewton.curvature import (CurvatureOperator, EmpiricalFisherOperator, GaussNewtonOperator, HessianOperator,
                                   MonteCarloFisherOperator, eigenvalues, spectral_density, trace)


@dataclass(frozen=True)
class Config:
    hidden: int
    train_steps: int
    repeats: int
    trace_products: int
    trace_seeds: int
    probes: int
    lanczos_steps: int


QUICK = Config(hidden=32, train_steps=200, repeats=20, trace_products=60, trace_seeds=2, probes=3, lanczos_steps=50)
FULL = Config(hidden=64, train_steps=500, repeats=30, trace_products=300, trace_seeds=10, probes=16, lanczos_steps=100)
BLOCK = 16


def run_tools(ctx: BenchContext) -> tuple[str, dict[str, Any], list[Path]]:
    config = QUICK if ctx.quick else FULL
    with torch_threads(1):
        model, loss, batch, setup = _trained_mlp(config, ctx.seed)
        peers = _peers(model, loss, batch, ctx.seed)
        hessian = HessianOperator(model, loss, batch)
        figures: dict[str, Any] = {"setup": setup}
        products_md, figures["products"] = _products(config, model, loss, batch, peers)
        start = time.perf_counter()
        dense = hessian.to_dense()[0].double()
        dense = (dense + dense.T) / 2
        exact = torch.linalg.eigvalsh(dense)
        dense_seconds = time.perf_counter() - start
        eigen_md, figures["eigenvalues"] = _eigenvalues(hessian, peers["hessian"], exact, dense_seconds, ctx.seed)
        pyhessian_md, figures["pyhessian"] = _pyhessian(model, loss, batch, exact, ctx.seed)
        trace_md, figures["trace"] = _traces(config, hessian, peers["hessian"], exact, ctx.seed, ctx.quick)
        density_md, figures["density"], density = _density(config, hessian, exact, ctx.seed)
    plots = [_plot_density(ctx, density, exact, setup)]
    goals = _goals(figures)
    intro = (f"MLP {setup['architecture']} (n = {setup['parameters']} parameters, float32) trained with Adam "
             f"for {setup['train_steps']} full-batch steps on {setup['samples']} digits (final loss "
             f"{setup['final_loss']:.3g}); curvature of the mean cross-entropy on the same data, one thread.")
    markdown = "\n\n".join([intro, "#### Goals\n\n" + goals, products_md, eigen_md, pyhessian_md, trace_md,
                             density_md])
    return markdown, figures, plots


# ----------------------------------------------------------------------------- model and data

def _trained_mlp(config: Config, seed: int):
    from torchnewton.bench.problems.digits_cnn import digits_split

    images, labels, _, _ = digits_split()
    inputs = images.reshape(len(labels), -1)
    inputs = (inputs - inputs.mean(0)) / inputs.std(0).clamp(min=1e-6)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, config.hidden), torch.nn.Tanh(), torch.nn.Linear(config.hidden, 10))
    loss = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(config.train_steps):
        optimizer.zero_grad()
        value = loss(model(inputs), labels)
        value.backward()
        optimizer.step()
    with torch.no_grad():
        final = float(loss(model(inputs), labels))
    setup = {"architecture": f"64-{config.hidden}-10 tanh", "parameters": sum(p.numel() for p in model.parameters()),
             "samples": len(labels), "train_steps": config.train_steps, "final_loss": final}
    return model, loss, (inputs, labels), setup


# ----------------------------------------------------------------------------- products

def _peers(model, loss, batch, seed: int) -> dict[str, Any]:
    """curvlinops' operators on the same model and data."""
    import curvlinops

    params, data = list(model.parameters()), [batch]
    return {"hessian": curvlinops.HessianLinearOperator(model, loss, params, data, check_deterministic=False),
            "ggn": curvlinops.GGNLinearOperator(model, loss, params, data, check_deterministic=False),
            "ef": curvlinops.EFLinearOperator(model, loss, params, data, check_deterministic=False),
            "mc": curvlinops.FisherMCLinearOperator(model, loss, params, data, check_deterministic=False,
                                                    mc_samples=1, seed=seed)}


def _interleaved(candidates: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and thread CPU times of each candidate, one call of each per round, after a warm-up round;
    the order alternates between rounds, so that neither always runs on the other's leftover caches."""
    for fn in candidates.values():
        fn()
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in candidates}
    order = list(candidates.items())
    for round_ in range(repeats):
        for name, fn in order if round_ % 2 == 0 else order[::-1]:
            cpu, start = time.thread_time(), time.perf_counter()
            fn()
            times[name]["wall"].append(time.perf_counter() - start)
            times[name]["cpu"].append(time.thread_time() - cpu)
    return times


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _products(config: Config, model, loss, batch, peers) -> tuple[str, dict[str, Any]]:
    default = HessianOperator(model, loss, batch)
    ours = {"Hessian (default)": (default, "hessian"),
            "Hessian (mode double-backward)": (HessianOperator(model, loss, batch, mode="double-backward"), "hessian"),
            "Hessian (mode forward-over-reverse)": (HessianOperator(model, loss, batch, mode="forward-over-reverse"),
                                                    "hessian"),
            "Gauss-Newton": (GaussNewtonOperator(model, loss, batch), "ggn"),
            "empirical Fisher": (EmpiricalFisherOperator(model, loss, batch), "ef"),
            "Monte-Carlo Fisher (1 sample)": (MonteCarloFisherOperator(model, loss, batch,
                                                                       generator=torch.Generator().manual_seed(0)),
                                              "mc")}
    n = next(iter(ours.values()))[0].num_parameters
    generator = torch.Generator().manual_seed(0)
    rows, figures = [], {}
    for columns in (1, BLOCK):
        V = torch.randn(n, columns, generator=generator)
        arg = V[:, 0] if columns == 1 else V
        for label, (operator, peer_key) in ours.items():
            peer = peers[peer_key]
            if operator is default:  # the route the default operator takes for this many vectors
                route, chunk = default.route(columns, batch[0])
                label = f"Hessian (default: {route}" + (f", {chunk} vectors per vmap)" if chunk > 1 else ")")
            times = _interleaved({"torchnewton": lambda: operator @ arg, "curvlinops": lambda: peer @ arg},
                                 config.repeats)
            # Monte-Carlo Fisher: each library draws its own targets, so the values differ by sampling
            difference = None if peer_key == "mc" else _relative_difference(operator @ arg, peer @ arg)
            tn, cl = times["torchnewton"]["wall"], times["curvlinops"]["wall"]
            ratio, min_ratio = statistics.median(tn) / statistics.median(cl), min(tn) / min(cl)
            cpu_ratio = statistics.median(times["torchnewton"]["cpu"]) / statistics.median(times["curvlinops"]["cpu"])
            key = f"{label}, {columns} vector{'s' if columns > 1 else ''}"
            figures[key] = {"torchnewton_s": tn, "curvlinops_s": cl, "median_ratio": ratio,
                            "min_ratio": min_ratio, "cpu_median_ratio": cpu_ratio,
                            "torchnewton_cpu_s": times["torchnewton"]["cpu"],
                            "curvlinops_cpu_s": times["curvlinops"]["cpu"], "relative_difference": difference}
            rows.append([label, columns, 1e3 * min(tn), 1e3 * statistics.median(tn), 1e3 * min(cl),
                         1e3 * statistics.median(cl), min_ratio, ratio, cpu_ratio,
                         "random draws differ" if difference is None else f"{difference:.1e}"])
    table = markdown_table(["product", "vectors", "torchnewton min (ms)", "median (ms)", "curvlinops min (ms)",
                            "median (ms)", "ratio of minima", "ratio of medians", "ratio of median CPU times",
                            "relative difference"], rows)
    return (f"#### Time per product ({config.repeats} interleaved repeats; ratio < 1: torchnewton faster)\n\n"
            + table), figures


# ----------------------------------------------------------------------------- spectral tools

class _Counted:
    """A scipy operator that counts its products, to report ARPACK's work."""

    def __init__(self, operator: Any):
        self.operator, self.count = operator, 0

    def scipy(self):
        from scipy.sparse.linalg import LinearOperator

        def matvec(x: np.ndarray) -> np.ndarray:
            self.count += 1
            return self.operator @ x

        return LinearOperator(self.operator.shape, matvec=matvec, rmatvec=matvec, dtype=self.operator.dtype)


def _eigenvalues(hessian: CurvatureOperator, peer, exact: torch.Tensor, dense_seconds: float,
                 seed: int) -> tuple[str, dict[str, Any]]:
    from scipy.sparse.linalg import eigsh

    top = exact.flip(0)[:5]
    scale = float(exact.abs().max())
    start = time.perf_counter()
    result = eigenvalues(hessian, k=5, generator=torch.Generator().manual_seed(seed))
    ours_seconds = time.perf_counter() - start
    counted = _Counted(peer.to_scipy())
    start = time.perf_counter()
    arpack = np.sort(eigsh(counted.scipy(), k=5, which="LA", v0=np.ones(hessian.num_parameters),
                           return_eigenvectors=False))[::-1].copy()
    arpack_seconds = time.perf_counter() - start
    arpack_values = torch.tensor(arpack, dtype=torch.float64)
    ours_error = float((result.eigenvalues.double() - top).abs().max()) / scale
    arpack_error = float((arpack_values - top).abs().max()) / scale
    n = hessian.num_parameters
    rows = [["torchnewton eigenvalues (thick-restart Lanczos)", result.num_products, ours_seconds,
             _values(result.eigenvalues), f"{ours_error:.1e}"],
            ["scipy eigsh (ARPACK) on curvlinops' operator", counted.count, arpack_seconds, _values(arpack_values),
             f"{arpack_error:.1e}"],
            ["dense Hessian (n products) + eigvalsh", n, dense_seconds, _values(top), "reference"]]
    figures = {"exact_top5": top.tolist(), "exact_bottom": exact[:3].tolist(),
               "torchnewton": {"values": result.eigenvalues.tolist(), "products": result.num_products,
                               "seconds": ours_seconds, "max_error_relative_to_lambda_max": ours_error,
                               "converged": bool(result.converged.all())},
               "arpack_curvlinops": {"values": arpack_values.tolist(), "products": counted.count,
                                     "seconds": arpack_seconds, "max_error_relative_to_lambda_max": arpack_error},
               "dense_seconds": dense_seconds}
    table = markdown_table(["method", "products", "time (s)", "top-5 eigenvalues", "max error / λ_max"], rows)
    return (f"#### Hessian top-5 eigenvalues (smallest eigenvalue {float(exact[0]):.3g})\n\n" + table), figures


def _pyhessian(model, loss, batch, exact: torch.Tensor, seed: int) -> tuple[str, dict[str, Any]]:
    """PyHessian (Yao et al. 2020) on the same model: power iteration with deflation for the top
    eigenvalues and Hutchinson for the trace, each to its default relative tolerance 1e-3."""
    try:
        from pyhessian import hessian as PyHessian
    except ImportError:
        return "PyHessian: not installed (`pip install pyhessian`), not compared.", {"installed": False}
    top, scale = exact.flip(0)[:5], float(exact.abs().max())
    torch.manual_seed(seed)  # PyHessian draws its vectors from the global generator
    start = time.perf_counter()
    peer = PyHessian(model, loss, data=batch, cuda=False)
    values, _ = peer.eigenvalues(top_n=5)
    eigen_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trace_samples = peer.trace()
    trace_seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)  # PyHessian leaves gradients with graphs on the parameters
    values = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
    error = float((values - top).abs().max()) / scale
    trace_estimate = float(np.mean(trace_samples))
    trace_error = abs(trace_estimate - float(exact.sum())) / abs(float(exact.sum()))
    rows = [["PyHessian eigenvalues (power iteration + deflation, tol 1e-3)", eigen_seconds, _values(values),
             f"{error:.1e}"],
            [f"PyHessian trace (Hutchinson, {len(trace_samples)} products, tol 1e-3)", trace_seconds,
             f"{trace_estimate:.4g}", f"{trace_error:.1e} (relative to the exact trace)"]]
    figures = {"installed": True, "values": values.tolist(), "eigen_seconds": eigen_seconds,
               "max_error_relative_to_lambda_max": error, "trace": trace_estimate,
               "trace_products": len(trace_samples), "trace_seconds": trace_seconds,
               "trace_relative_error": trace_error}
    table = markdown_table(["PyHessian (same model and data)", "time (s)", "values", "error"], rows)
    return "#### PyHessian, side by side\n\n" + table, figures


def _values(values: torch.Tensor) -> str:
    return ", ".join(f"{float(v):.5g}" for v in values)


def _traces(config: Config, hessian: CurvatureOperator, peer, spectrum: torch.Tensor, seed: int,
            quick: bool) -> tuple[str, dict[str, Any]]:
    from curvlinops import hutchinson_trace, hutchpp_trace

    m = config.trace_products
    exact = float(spectrum.sum())

    def ours(method: str) -> Callable[[int], float]:
        return lambda s: float(trace(hessian, method, num_samples=m, generator=torch.Generator().manual_seed(s)))

    def theirs(estimator: Callable[..., torch.Tensor]) -> Callable[[int], float]:
        def run(s: int) -> float:
            torch.manual_seed(s)
            return float(estimator(peer, m))
        return run

    estimators = {"torchnewton Hutchinson": ours("hutchinson"), "torchnewton Hutch++": ours("hutch++"),
                  "curvlinops hutchinson_trace": theirs(hutchinson_trace),
                  "curvlinops hutchpp_trace": theirs(hutchpp_trace)}
    rows, figures = [], {"exact": exact, "products": m}
    for s in range(config.trace_seeds):  # interleaved over seeds
        for name, estimate in estimators.items():
            start = time.perf_counter()
            value = estimate(seed + s)
            figures.setdefault(name, {"estimates": [], "seconds": []})
            figures[name]["estimates"].append(value)
            figures[name]["seconds"].append(time.perf_counter() - start)
    for name in estimators:
        errors = [abs(v - exact) / abs(exact) for v in figures[name]["estimates"]]
        figures[name]["mean_relative_error"] = statistics.fmean(errors)
        rows.append([name, m, statistics.median(figures[name]["seconds"]),
                     statistics.fmean(figures[name]["estimates"]), f"{statistics.fmean(errors):.1e}"])
    if not quick:  # the same n products the dense Hessian took, summed on the fly
        start = time.perf_counter()
        exact_by_products = float(trace(hessian, "exact"))
        figures["exact_by_products"] = {"value": exact_by_products, "seconds": time.perf_counter() - start}
        rows.append(["torchnewton exact (n unit vectors)", hessian.num_parameters,
                     figures["exact_by_products"]["seconds"], exact_by_products,
                     f"{abs(exact_by_products - exact) / abs(exact):.1e}"])
    table = markdown_table(["method", "products", "median time (s)", f"mean estimate ({config.trace_seeds} seeds)",
                            "mean relative error"], rows)
    # Hutch++ removes the top m/3 eigenvalues from Hutchinson's variance, ∝ ‖H‖_F² → ‖H − H_k‖_F²
    magnitudes = spectrum.abs().sort(descending=True).values
    tail = float(magnitudes[m // 3:].square().sum().sqrt() / magnitudes.square().sum().sqrt())
    top_share = float(spectrum.sort(descending=True).values[: m // 3].sum()) / exact
    figures["frobenius_tail_ratio"], figures["top_share_of_trace"] = tail, top_share
    measured = (figures["torchnewton Hutch++"]["mean_relative_error"]
                / figures["torchnewton Hutchinson"]["mean_relative_error"])
    figures["predicted_std_ratio"], figures["measured_error_ratio"] = tail * 3**0.5, measured
    note = (f"The top {m // 3} eigenvalues (Hutch++'s sketch) hold {100 * top_share:.0f}% of the trace and leave "
            f"{100 * tail:.0f}% of ‖H‖_F; with a third of the products left for the remainder, Hutch++'s error "
            f"is predicted at about {tail:.2f}·√3 = {tail * 3**0.5:.2f} of Hutchinson's on this spectrum, "
            f"measured {measured:.2f} over {config.trace_seeds} seeds (on a matrix whose trace sits in a few "
            "eigenvalues the tests measure a > 20x smaller error).")
    return f"#### Hessian trace (exact: {exact:.5g} from the dense Hessian)\n\n" + table + "\n\n" + note, figures


def _density(config: Config, hessian: CurvatureOperator, exact: torch.Tensor, seed: int):
    start = time.perf_counter()
    density = spectral_density(hessian, num_probes=config.probes, lanczos_steps=config.lanczos_steps, grid=2000,
                               generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    grid, values = density.grid.double(), density.density.double()
    integral = float(torch.trapezoid(values, grid))
    mean = float(torch.trapezoid(grid * values, grid))
    exact_mean = float(exact.mean())
    figures = {"probes": config.probes, "lanczos_steps": config.lanczos_steps, "seconds": seconds,
               "integral": integral, "mean": mean, "exact_mean": exact_mean, "sigma": density.sigma,
               "products": config.probes * min(config.lanczos_steps, hessian.num_parameters)}
    rows = [[config.probes, config.lanczos_steps, figures["products"], seconds, f"{integral:.6f}", mean, exact_mean]]
    table = markdown_table(["probes", "Lanczos steps", "products", "time (s)", "∫ density", "mean of density",
                            "tr(H)/n exact"], rows)
    return "#### Hessian spectral density (stochastic Lanczos quadrature)\n\n" + table, figures, density


def _plot_density(ctx: BenchContext, density, exact: torch.Tensor, setup: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    grid = density.grid.double().numpy()
    ax.hist(exact.numpy(), bins=200, density=True, alpha=0.4, color="gray", label="exact eigenvalues (histogram)")
    ax.plot(grid, density.density.double().numpy(), color="C0", label="SLQ density (torchnewton)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-4 * float(density.density.max()))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"Hessian spectral density, digits MLP {setup['architecture']}, n = {setup['parameters']}")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = ctx.out_dir / "curvature_hessian_density.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _goals(figures: dict[str, Any]) -> str:
    rows = []
    for key, entry in figures["products"].items():
        rows.append([f"{key}: torchnewton no slower than curvlinops (median ratio ≤ 1)",
                     f"{entry['median_ratio']:.2f}", "yes" if entry["median_ratio"] <= 1 else "no"])
    eig = figures["eigenvalues"]["torchnewton"]
    rows.append(["top-5 eigenvalues match eigvalsh (max error / λ_max ≤ 1e-4, float32)",
                 f"{eig['max_error_relative_to_lambda_max']:.1e}",
                 "yes" if eig["max_error_relative_to_lambda_max"] <= 1e-4 and eig["converged"] else "no"])
    density = figures["density"]
    rows.append(["SLQ density integrates to 1", f"{density['integral']:.6f}",
                 "yes" if abs(density["integral"] - 1) < 1e-3 else "no"])
    return markdown_table(["goal", "measured", "met"], rows)
