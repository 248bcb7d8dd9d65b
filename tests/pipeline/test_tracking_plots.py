"""The arithmetic behind the run plots, against hand-computed values, and the no-data rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from aptrank.pipeline import plots

TASKS = ["click", "like", "long_view"]


def test_cosine_matrix_means_every_step_and_layer_and_maps_task_refs() -> None:
    series = {
        "grad_cos/task0_task1": [(1, 0.2), (2, 0.4)],  # engine style, task<k>
        "cos/bottom.0/0_2": [(1, -0.5)],  # brief style, layer + index
        "cos/bottom.1/0_2": [(1, -0.1), (3, -0.3)],  # same pair, another layer
        "apt/cos_grad_update": [(1, 0.9)],  # not a pair: ignored
        "grad_cos/like_long_view": [(5, 0.7)],  # names, one with an underscore
    }
    labels, m = plots.cosine_matrix_data(series, TASKS)
    assert labels == TASKS
    expected = np.array([[1.0, 0.3, -0.3], [0.3, 1.0, 0.7], [-0.3, 0.7, 1.0]])
    np.testing.assert_allclose(m, expected, rtol=0, atol=1e-12)


def test_cosine_matrix_leaves_unlogged_pairs_nan_and_works_without_names() -> None:
    labels, m = plots.cosine_matrix_data({"cos/0_2": [(1, 0.5)]})
    assert labels == ["0", "2"]
    np.testing.assert_allclose(m, [[1.0, 0.5], [0.5, 1.0]])
    labels, m = plots.cosine_matrix_data({"cos/0_1": [(1, 0.5)]}, TASKS)
    assert labels == ["click", "like"] and m[0, 1] == 0.5
    _, m = plots.cosine_matrix_data({"cos/0_1": [(1, 0.5)], "cos/1_2": [(1, 0.1)]}, TASKS)
    assert math.isnan(m[0, 2]) and math.isnan(m[2, 0])
    assert plots.cosine_matrix_data({"cos/0_7": [(1, 0.5)]}, TASKS) is None  # task 7 does not exist


def test_rau_takes_the_last_step_of_every_parameter() -> None:
    series = {
        "adatask/rau/b.weight/task0": [(10, 0.9), (30, 0.6), (20, 0.1)],
        "adatask/rau/a.weight/task0": [(5, 0.2)],
        "adatask/rau/a.weight/task1": [(5, 0.8)],
        "rau/x": [(1, 0.5)],  # no task segment: ignored
    }
    assert plots.rau_data(series, TASKS) == {"click": [0.2, 0.6], "like": [0.8]}


def test_learning_curve_data_from_history() -> None:
    history = [
        {"epoch": 0, "train_loss": {"click": 0.5, "like": 0.4}, "valid": {"tasks": {"click": {"auc": 0.6}}}},
        {
            "epoch": 1,
            "train_loss": {"click": 0.45, "like": 0.38},
            "valid": {"tasks": {"click": {"auc": 0.65}, "like": {"auc": 0.7}}},
        },
    ]
    data = plots.learning_curve_data(history)
    assert data["click"] == {"epoch": [0.0, 1.0], "train_loss": [0.5, 0.45], "valid_auc": [0.6, 0.65]}
    assert data["like"]["train_loss"] == [0.4, 0.38]
    assert math.isnan(data["like"]["valid_auc"][0]) and data["like"]["valid_auc"][1] == 0.7


def test_segment_data_sorts_by_step() -> None:
    data = plots.segment_data(
        {"apt/instant_share": [(3, 0.1), (1, 0.3)], "apt/beta_mean": [(1, 0.9)]}, plots.SHARE_SEGMENTS
    )
    steps, values = data["apt/instant_share"]
    assert list(data) == ["apt/instant_share"]
    assert steps.tolist() == [1, 3] and values.tolist() == [0.3, 0.1]


def test_no_data_no_plot(tmp_path: Path) -> None:
    assert plots.write_plots(tmp_path, [], {}, TASKS) == []
    assert list(tmp_path.iterdir()) == []
    only_update_cos = {"apt/cos_grad_update": [(1, 0.5)]}
    assert plots.write_plots(tmp_path, [], only_update_cos, TASKS) == []


@pytest.mark.parametrize(
    "series, name",
    [
        ({"grad_cos/task0_task1": [(1, 0.3)]}, plots.GRAD_COSINE),
        ({"adatask/rau/w/task0": [(1, 0.3)]}, plots.RAU_HISTOGRAM),
        ({"apt/instant_share": [(1, 0.3), (2, 0.2)]}, plots.INSTANT_SHARE),
    ],
)
def test_each_plot_written_from_its_own_keys(tmp_path: Path, series: dict, name: str) -> None:
    written = plots.write_plots(tmp_path, [], series, TASKS)
    assert [p.name for p in written] == [name]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
