"""options={"compile": True} fuses the solvers' own arithmetic too (ip_arithmetic, sqp_arithmetic,
the termination verdict, the KKT assembly): the same iterates as the eager path for the options
that choose other pieces (test_compiled_constrained covers the defaults, batched and unbatched,
and counts the operations saved).

The eager path itself is the code the pieces were taken from: its iterates are unchanged bit for
bit (checked against the previous revision when the pieces were introduced; every other test
of tests/constrained runs it).
"""
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from hock_schittkowski import solve  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="no C++ compiler for Inductor's CPU kernels")


def _same(plain, fast, trials=0):
    """Same iterations, statuses, derivative counts and x; ``trials``: how many more or fewer trial
    points (f and c calls) the compiled run may take."""
    assert fast.compiled is True
    assert torch.equal(torch.as_tensor(plain.nit), torch.as_tensor(fast.nit))
    assert torch.equal(torch.as_tensor(plain.status), torch.as_tensor(fast.status))
    assert (plain.njev, plain.nhev) == (fast.njev, fast.nhev)
    assert abs(plain.nfev - fast.nfev) <= trials and abs(plain.ncev - fast.ncev) <= trials
    torch.testing.assert_close(fast.x, plain.x, rtol=0, atol=1e-10)
    for fused, eager in zip(fast.multipliers["constraints"], plain.multipliers["constraints"]):
        torch.testing.assert_close(fused, eager, rtol=0, atol=1e-8)
    torch.testing.assert_close(fast.multipliers["bounds"], plain.multipliers["bounds"], rtol=0, atol=1e-8)


@pytest.mark.parametrize("name, method, options, trials", [
    # the shapes of test_compiled_constrained's unbatched cases: in one session only the new pieces compile
    ("HS7", "sqp", {"merit": "l1"}, 0),  # the ℓ₁ merit's trial pieces
    # an inequality and bounds, the LOQO barrier rule: its fused σ·mean rounds μ an ulp apart from
    # the eager one at a few iterations, and at iteration 20 a backtracking comparison of merits
    # that agree to ~1e-16 takes one trial fewer (same iterates to the last bit at the end)
    ("HS21", "interior-point", {"barrier": "adaptive"}, 1),
])
def test_compiled_iteration_same_iterates(name, method, options, trials):
    plain, optimum = solve(name, method, options=options)
    fast, _ = solve(name, method, options={**options, "compile": True})
    _same(plain, fast, trials)
    assert bool(torch.as_tensor(fast.success).all())
    assert abs(float(fast.fun) - optimum) < 1e-6 * max(1.0, abs(optimum))
