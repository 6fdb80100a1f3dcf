"""The latency suite's goal verdicts (issue 20): by the median of the cases and case by case."""
from torchnewton.bench.suites.latency import goals_table


def _row(family, derivatives, ratio, method="bfgs", scipy="BFGS"):
    return {"family": family, "derivatives": derivatives, "ratio": ratio, "method": method,
            "problem": "rosenbrock", "scipy": scipy}


def test_median_verdict_and_every_case_verdict_differ_when_one_case_is_over():
    rows = [_row("minimize", "autodiff", q) for q in (1.0, 2.0, 2.9, 3.5, 6.0)]
    table, figures = goals_table(rows)
    [line] = [f for f in figures if f["goal"] == "minimize autodiff ≤ 3x scipy"]
    assert line["median_ratio"] == 2.9 and line["met"] == 3 and line["worst_ratio"] == 6.0
    assert line["verdict_median"] == "met" and line["verdict_every_case"] == "not met"


def test_compiled_rows_have_their_own_line_and_root_jac_goal_counts_hybr_only():
    rows = [_row("minimize", "autodiff, compiled", q) for q in (0.8, 0.9)]
    rows += [_row("root", "analytic", 14.0, method="newton", scipy="hybr"),
             _row("root", "analytic", 40.0, method="broyden", scipy="broyden1")]
    _, figures = goals_table(rows)
    names = {f["goal"]: f for f in figures}
    assert names["minimize autodiff, compiled ≤ 3x scipy"]["verdict_every_case"] == "met"
    root = names["root with jac= ≤ 20x hybr"]
    assert root["cases"] == 1 and root["verdict_median"] == "met"
    assert "minimize autodiff ≤ 3x scipy" not in names  # no rows, no line


def test_analytic_compiled_rows_are_judged_by_the_analytic_limit():
    rows = [_row("least_squares", "analytic, compiled", q, method="dogleg", scipy="dogbox") for q in (1.2, 1.4, 1.7)]
    rows.append(_row("minimize", "analytic, compiled", 1.6))
    _, figures = goals_table(rows)
    names = {f["goal"]: f for f in figures}
    ls = names["least_squares analytic, compiled ≤ 1.5x scipy"]
    assert ls["cases"] == 3 and ls["median_ratio"] == 1.4 and ls["met"] == 2
    assert ls["verdict_median"] == "met" and ls["verdict_every_case"] == "not met"
    assert names["minimize analytic, compiled ≤ 1.5x scipy"]["verdict_median"] == "not met"
