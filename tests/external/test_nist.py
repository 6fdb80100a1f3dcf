"""NIST StRD nonlinear regressions (CUTEst via S2MPJ) solved by torchnewton.least_squares.

Each dataset is solved by Levenberg–Marquardt with the problem's own Jacobian from both NIST
starting points and checked against NIST's certified parameters to 6 significant digits, and
against scipy.optimize.least_squares(method="lm") (MINPACK) from the same start. The residuals
come from S2MPJ's equation form (e.g. MISRA1A) or, where S2MPJ only has the least-squares form,
from the groups of "...LS" (e.g. CHWIRUT1LS); see ``bench/problems/s2mpj.py``.

Subset: the datasets whose S2MPJ residual is cheap to evaluate (at most 54 observations) and
that LM solves in few iterations, to keep ``tests/external`` fast. BENNETT5, CHWIRUT1, ENSO,
GAUSS1-3, HAHN1, KIRBY2, LANCZOS1-3 (LM needs about 100 iterations on these near-zero-residual
fits), MGH17, NELSON and ROSZMAN1 run in ``torchnewton bench least_squares``.

Cases that are not solved are listed in EXPECTED_FAILURES with the measured figures; the test
asserts that they still fail the way recorded, and that scipy fails them too or the entry says
that scipy solves it (a documented gap). Tolerances are never loosened for them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest
import scipy.optimize
import torchnewton
from torchnewton.bench.problems import s2mpj

TOLERANCES = {"ftol": 1e-12, "xtol": 1e-12, "gtol": 1e-12}
DIGITS = 6.0

DATASETS = ["BOXBOD", "CHWIRUT2", "DANWOOD", "ECKERLE4", "MGH09", "MGH10", "MISRA1A",
            "MISRA1B", "MISRA1C", "MISRA1D", "RAT42", "RAT43", "THURBER"]


@dataclass(frozen=True)
class ExpectedFailure:
    reason: str
    scipy_solves: bool  # True: scipy lm solves it from this start, the gap is torchnewton's


EXPECTED_FAILURES: dict[tuple[str, int], ExpectedFailure] = {
    ("BOXBOD", 1): ExpectedFailure(
        "LM from Start 1 (1, 1) converges to a different stationary point: -2.3 digits "
        "(relative error ~200), as MINPACK lm (-2.2 digits); scipy trf and torchnewton's dogleg "
        "and gauss-newton reach 7 digits", scipy_solves=False),
    ("MGH10", 1): ExpectedFailure(
        "Start 1 (2, 4e5, 2.5e4): b1 collapses towards 1e-11 while b2 ~ 4.6e5; the column scaling "
        "D grows to 3e15 on b1, the damped steps stall, and after 113 iterations a rejected trial "
        "step of scaled size 1.2e-4 meets the (MINPACK-style, scaled) step test "
        "‖DΔx‖ ≤ xtol(xtol + ‖Dx‖): LM stops with SUCCESS at cost 6.1e8 (certified 44.0), "
        "-1.9 digits. MINPACK lm, a trust-region LM, takes another path and solves it "
        "(9.8 digits, 289 evaluations)", scipy_solves=True),
}


def significant_digits(x: np.ndarray, certified: np.ndarray) -> float:
    """The smallest number of correct significant digits over the parameters (NIST's LRE)."""
    relative = np.abs(x - certified) / np.abs(certified)
    return float(np.min(-np.log10(np.maximum(relative, 1e-16))))


@lru_cache(maxsize=None)
def problem(name: str) -> s2mpj.S2MPJProblem:
    return s2mpj.load_problem(name)


@lru_cache(maxsize=None)
def scipy_lm(name: str, start: int) -> scipy.optimize.OptimizeResult:
    p = problem(name)
    return scipy.optimize.least_squares(p.residual_np, p.starts[start - 1].numpy(), jac=p.residual_jacobian_np,
                                        method="lm", **TOLERANCES)


@pytest.mark.parametrize("start", [1, 2])
@pytest.mark.parametrize("name", DATASETS)
def test_certified_values(name: str, start: int) -> None:
    p = problem(name)
    certified = p.x_star.numpy()
    res = torchnewton.least_squares(p.residual, p.starts[start - 1].clone(), method="levenberg-marquardt",
                                    jac=p.residual_jacobian, **TOLERANCES)
    digits = significant_digits(res.x.numpy(), certified)
    reference = scipy_lm(name, start)
    scipy_digits = significant_digits(reference.x, certified)
    expected = EXPECTED_FAILURES.get((name, start))
    if expected is not None:
        # the failure must still be there (else this entry is stale) and be as documented
        assert digits < DIGITS or not res.success, f"{name} start {start} now passes: remove it from the list"
        assert (scipy_digits >= DIGITS) == expected.scipy_solves
        return
    assert res.success, res.message
    assert digits >= DIGITS, f"{name} start {start}: {digits:.1f} digits"
    # certified to 6 digits and at least as good as MINPACK: where scipy also reaches the certified
    # values the two answers agree to the same precision
    if scipy_digits >= DIGITS:
        np.testing.assert_allclose(res.x.numpy(), reference.x, rtol=1e-6)
    cost = float(res.extras["cost"])
    assert cost == pytest.approx(p.f_star, rel=1e-6)


def test_expected_failures_are_in_the_subset() -> None:
    assert {name for name, _ in EXPECTED_FAILURES} <= set(DATASETS)
    assert all(name in s2mpj.list_problems("nist") for name in DATASETS)

