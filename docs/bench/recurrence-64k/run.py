"""The T = 64k rows of the full recurrence grid (both cells, d in {8, 64, 256}, B in {1, 16}, with
backward), through the suite's own code: `torchnewton bench recurrence --full` minus T = 1k, 16k
and the dense path, which did not fit in the session."""
import sys, json
from pathlib import Path
import torch
from torchnewton.bench.suites import recurrence as R
from torchnewton.bench.suite import BenchContext
cells = sys.argv[2].split(",")
R._grid = lambda quick: ([(c, 64_000, d, B, True) for c in cells for d in (8, 64, 256) for B in (1, 16)
                          ], [])
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
ctx = BenchContext(quick=False, out_dir=out, seed=0)
sec = R.run(ctx)
(out / "report.md").write_text("# recurrence, T = 64k rows of the full grid\n\n" + sec.markdown)
(out / "results.json").write_text(json.dumps(sec.figures, indent=1, default=str))
