"""Task correlation dial: the task directions have exactly the requested Gram matrix, and the click
and finish logits/labels of generated logs move with --task-correlation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aptrank.data.synthetic import GeneratorConfig, generate
from aptrank.data.synthetic.tasks import correlation_matrix, task_directions


@pytest.mark.parametrize(("rho", "alpha"), [(0.9, 0.7), (0.3, 0.7), (-0.9, 0.5), (-1.0, 1.0), (1.0, 0.0)])
def test_directions_have_the_requested_correlation(rho: float, alpha: float) -> None:
    like = alpha * (1 + rho) / 2
    want = np.array([[1, like, rho], [like, 1, like], [rho, like, 1]])
    np.testing.assert_allclose(correlation_matrix(rho, alpha), want, atol=1e-12)
    d = task_directions(np.random.default_rng(0), rho, alpha, factors=16).astype(np.float64)
    np.testing.assert_allclose(d @ d.T, want, atol=1e-6)


def _logit_correlation(out: Path) -> np.ndarray:
    events = pl.read_parquet(sorted((out / "events").rglob("*.parquet")))
    p = events.select("p_click", "p_like", "p_finish").to_numpy().astype(np.float64)
    return np.corrcoef(np.log(p / (1 - p)).T)


def _label_correlation(out: Path) -> float:
    items = pl.read_parquet(out / "items.parquet").select("item_id", "duration_ms")
    events = pl.read_parquet(sorted((out / "events").rglob("*.parquet"))).join(items, on="item_id")
    finish = (events["watch_ms"] >= 0.95 * events["duration_ms"]).cast(pl.Float64)
    return float(np.corrcoef(events["click"].cast(pl.Float64), finish)[0, 1])


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    out = {}
    for rho in (0.9, 0.0, -0.9):
        path = tmp_path_factory.mktemp(f"rho{rho}")
        cfg = GeneratorConfig(users=2_000, items=2_000, events=100_000, seed=5, task_correlation=rho, truth=True)
        generate(path, cfg)
        out[rho] = path
    return out


def test_click_finish_logit_correlation_follows_the_dial(logs: dict[float, Path]) -> None:
    corr = {rho: _logit_correlation(path) for rho, path in logs.items()}
    assert corr[0.9][0, 2] > corr[0.0][0, 2] > corr[-0.9][0, 2]
    for rho, c in corr.items():
        assert abs(c[0, 2] - rho) < 0.1, (rho, c[0, 2])
        assert abs(c[0, 1] - 0.7 * (1 + rho) / 2) < 0.15, (rho, c[0, 1])


def test_observed_labels_conflict_when_tasks_conflict(logs: dict[float, Path]) -> None:
    corr = {rho: _label_correlation(path) for rho, path in logs.items()}
    assert corr[0.9] > 0.1 and corr[-0.9] < -0.1
    assert corr[0.9] > corr[0.0] > corr[-0.9]
