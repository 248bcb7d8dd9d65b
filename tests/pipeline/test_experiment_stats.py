"""The grid's numbers on crafted cell records, checked against independent computations (the
``statistics`` module, hand-written Δm% and Welch standard errors): mean ± std per column, Δm%
against the single-task baseline means, best-per-column and the two-standard-error marks vs EW,
the Markdown they render to, and the observation arithmetic behind the plots."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from aptrank.pipeline.experiment.cells import Cell, baseline_cell
from aptrank.pipeline.experiment.observations import (
    ADAMW_PROXY,
    ADATASK_RAU,
    apt_effect_data,
    dominance_data,
    instant_share_data,
)
from aptrank.pipeline.experiment.stats import Stat, build_table, differs
from aptrank.pipeline.experiment.store import CellRecord, kept_series
from aptrank.pipeline.experiment.table import render_table

TASKS = ("click", "like")
# (method, apt) -> per seed (click auc, like auc); gauc = auc - 0.1
AUCS = {
    ("ew", False): [(0.70, 0.60), (0.72, 0.62), (0.71, 0.61)],
    ("pcgrad", False): [(0.80, 0.60), (0.81, 0.63), (0.79, 0.61)],  # click far above EW
    ("mgda", False): [(0.69, 0.55), (0.73, 0.68), (0.71, 0.58)],  # noisy: no mark
    ("ew", True): [(0.705, 0.61), (0.725, 0.64), (0.715, 0.60)],  # best like
}
BASE = {"click": [0.70, 0.71, 0.72], "like": [0.58, 0.60, 0.62]}


def rec(cell: Cell, aucs: dict[str, float], series: dict | None = None) -> CellRecord:
    test = {t: {"auc": a, "gauc": a - 0.1, "logloss": 0.5} for t, a in aucs.items()}
    return CellRecord(cell, "k", f"run-{cell.id}", test, 0, 1.0, series or {})


def records() -> list[CellRecord]:
    out = [rec(baseline_cell("d", t, s), {t: v}) for t, vals in BASE.items() for s, v in enumerate(vals)]
    for (method, apt), seeds in AUCS.items():
        out += [
            rec(Cell("d", "mmoe", method, "adamw", apt, s), dict(zip(TASKS, v, strict=True)))
            for s, v in enumerate(seeds)
        ]
    return out


def test_stat_matches_statistics_module() -> None:
    s = Stat.of([0.1, None, 0.4, float("nan"), 0.25])
    assert s.n == 3
    assert s.mean == pytest.approx(statistics.fmean([0.1, 0.4, 0.25]), abs=1e-15)
    assert s.std == pytest.approx(statistics.stdev([0.1, 0.4, 0.25]), abs=1e-15)
    assert s.se == pytest.approx(statistics.stdev([0.1, 0.4, 0.25]) / math.sqrt(3), abs=1e-15)
    assert math.isnan(Stat.of([0.3]).std) and math.isnan(Stat.of([0.3]).se)
    assert differs(Stat.of([0.3]), Stat.of([0.1])) == 0  # one seed: no standard error, no mark


def test_differs_is_welch_two_standard_errors() -> None:
    a, b = Stat.of([1.0, 1.2, 1.1]), Stat.of([0.8, 0.9, 1.0])
    se = math.sqrt(statistics.variance(a.values) / 3 + statistics.variance(b.values) / 3)
    assert (2 * se < 0.2) and differs(a, b) == 1 and differs(b, a) == -1
    c = Stat.of([0.95, 1.25, 1.05])
    se_c = math.sqrt(statistics.variance(c.values) / 3 + statistics.variance(b.values) / 3)
    assert c.mean - b.mean <= 2 * se_c and differs(c, b) == 0


def test_table_numbers_delta_m_best_and_marks() -> None:
    table = build_table("d", TASKS, records(), ("auc",))
    base_mean = {t: statistics.fmean(v) for t, v in BASE.items()}
    assert table.baseline_means["click"]["auc"] == pytest.approx(base_mean["click"])
    assert [(r.method, r.apt) for r in table.rows] == list(AUCS)
    for row, ((_method, _apt), seeds) in zip(table.rows, AUCS.items(), strict=True):
        for k, task in enumerate(TASKS):
            vals = [s[k] for s in seeds]
            assert row.stats[f"{task} AUC"].mean == pytest.approx(statistics.fmean(vals), abs=1e-12)
            assert row.stats[f"{task} AUC"].std == pytest.approx(statistics.stdev(vals), abs=1e-12)
            assert row.stats[f"{task} GAUC"].mean == pytest.approx(statistics.fmean(vals) - 0.1, abs=1e-12)
        dm = [
            statistics.fmean([(s[k] - base_mean[t]) / base_mean[t] * 100 for k, t in enumerate(TASKS)]) for s in seeds
        ]
        assert row.stats["Δm%"].values == pytest.approx(dm, abs=1e-9)
    ew, pcgrad, mgda, ew_apt = table.rows
    assert pcgrad.best == {"click AUC", "click GAUC", "Δm%"}
    assert ew_apt.best == {"like AUC", "like GAUC"} and not ew.best and not mgda.best
    assert pcgrad.marks == {"click AUC": 1, "click GAUC": 1, "Δm%": 1}  # like: equal-ish, no mark
    assert mgda.marks == {} and ew.marks == {} and ew_apt.marks == {}  # EW rows are the references
    assert table.baseline is not None and "Δm%" not in table.baseline.stats


def test_markdown_rows_and_cells() -> None:
    table = build_table("d", TASKS, records(), ("auc",))
    lines = render_table(table).splitlines()
    assert lines[0] == "| arch | method | optimizer | APT | click AUC | like AUC | click GAUC | like GAUC | Δm% |"
    assert len(lines) == 2 + 1 + len(AUCS)
    base = [c.strip() for c in lines[2].strip("|").split("|")]
    assert base[:4] == ["single-task", "–", "AdamW", "off"] and base[-1] == "–"
    assert base[4] == f"{statistics.fmean(BASE['click']):.4f} ± {statistics.stdev(BASE['click']):.4f}"
    pcgrad = [c.strip() for c in lines[4].strip("|").split("|")]
    vals = [s[0] for s in AUCS[("pcgrad", False)]]
    assert pcgrad[:4] == ["MMoE", "PCGrad", "AdamW", "off"]
    assert pcgrad[4] == f"**{statistics.fmean(vals):.4f} ± {statistics.stdev(vals):.4f}** ▲"


def share_series(values: list[float], step_every: int = 5) -> dict:
    return {"apt/instant_share": [(i * step_every, v) for i, v in enumerate(values)]}


def test_instant_share_curves_average_runs_per_step() -> None:
    cells = [Cell("d", "mmoe", "ew", "adamw", False, s) for s in (0, 1)]
    recs = [
        rec(cells[0], {"click": 0.7}, share_series([1.0, 0.2, 0.1])),
        rec(cells[1], {"click": 0.7}, share_series([1.0, 0.4, 0.3])),
        rec(Cell("d", "mmoe", "ew", "muon", True, 0), {"click": 0.7}, share_series([1.0, 0.5])),
    ]
    curves = instant_share_data(recs)
    off = curves[("adamw", False)]
    assert off.steps.tolist() == [0, 5, 10] and off.mean == pytest.approx([1.0, 0.3, 0.2]) and off.runs == 2
    assert off.summary.values == pytest.approx((0.15, 0.35))  # per run: mean after the first step
    assert curves[("muon", True)].summary.values == pytest.approx((0.5,))


def test_task_dominance_measures() -> None:
    norms = {"grad_norm/click": [(0, 3.0), (10, 1.0)], "grad_norm/like": [(0, 4.0), (10, 1.0)]}
    rau = {
        "adatask/rau/w0/task0": [(0, 0.5), (10, 0.6)],
        "adatask/rau/w0/task1": [(0, 0.5), (10, 0.4)],
        "adatask/rau/w1/task0": [(10, 0.2)],
        "adatask/rau/w1/task1": [(10, 0.8)],
    }
    recs = [
        rec(Cell("d", "mmoe", "ew", "adamw", False, 0), {"click": 0.7}, norms),
        rec(Cell("d", "mmoe", "ew", "adamw", True, 0), {"click": 0.7}, {k: [(0, 9.0)] for k in norms}),  # APT on
        rec(Cell("d", "mmoe", "pcgrad", "adamw", False, 0), {"click": 0.7}, {k: [(0, 9.0)] for k in norms}),
        rec(Cell("d", "mmoe", "ew", "adatask", False, 0), {"click": 0.7}, rau),
    ]
    data = dominance_data(recs, TASKS)
    # step 0: 9/25, 16/25; step 10: 1/2, 1/2 -> mean over steps
    assert data[ADAMW_PROXY]["click"].values == pytest.approx(((9 / 25 + 0.5) / 2,))
    assert data[ADAMW_PROXY]["like"].values == pytest.approx(((16 / 25 + 0.5) / 2,))
    assert data[ADATASK_RAU]["click"].values == pytest.approx(((0.6 + 0.2) / 2,))  # last per param, mean
    assert data[ADATASK_RAU]["like"].values == pytest.approx(((0.4 + 0.8) / 2,))


def test_apt_effect_pairs_on_and_off_by_arch_and_seed() -> None:
    recs = [
        rec(Cell("d", arch, "ew", "adamw", apt, s), {"click": a, "like": a + 0.1})
        for arch, apt, s, a in [
            ("mmoe", False, 0, 0.70),
            ("mmoe", True, 0, 0.72),
            ("ple", False, 0, 0.65),
            ("ple", True, 0, 0.64),
            ("mmoe", True, 1, 0.9),
        ]
    ]  # seed 1: no partner
    effect = apt_effect_data(recs)
    assert list(effect) == [("ew", "adamw")]
    assert sorted(effect[("ew", "adamw")].values) == pytest.approx([-0.01, 0.02])


def test_kept_series_keeps_only_plot_keys() -> None:
    diags = [
        (
            0,
            {
                "loss/click": 0.6,
                "apt/instant_share": 1.0,
                "grad_norm/click": 2.0,
                "grad_cos/a_b": 0.1,
                "adatask/rau/w/task0": 0.5,
            },
        ),
        (10, {"apt/instant_share": 0.2}),
    ]
    assert kept_series(diags) == {
        "apt/instant_share": [(0, 1.0), (10, 0.2)],
        "grad_norm/click": [(0, 2.0)],
        "adatask/rau/w/task0": [(0, 0.5)],
    }
    assert np.isclose(sum(v for _, v in kept_series(diags)["apt/instant_share"]), 1.2)


def test_docs_section_is_replaced_in_place_and_other_text_kept() -> None:
    from aptrank.pipeline.experiment.report import merge_section, section_markers

    begin, end = section_markers("g19")
    hand_written = "# Results\n\nThe research grid, edited by hand.\n"
    first = merge_section(hand_written, "g19", "# Research grid `g19`\n\nv1\n")
    assert first == f"{hand_written}\n{begin}\n# Research grid `g19`\n\nv1\n{end}\n"
    after = first + "\n## Notes after the section\n"
    second = merge_section(after, "g19", "# Research grid `g19`\n\nv2\n")
    assert second.count(begin) == 1 and "v1" not in second and "v2" in second
    assert second.startswith(hand_written) and second.endswith("\n## Notes after the section\n")
    other = merge_section(second, "g20", "x\n")
    assert other.startswith(second.rstrip()) and other.count("grid g20: begin") == 1
    assert merge_section("", "g19", "only\n") == f"{begin}\nonly\n{end}\n"
