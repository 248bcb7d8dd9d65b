"""End to end on the hand-made log: every encoded example value, the FeatureSpec and the splits.

Train = r0-r5 (hours < 40), valid = r6 (48 h), test = r7 (200 h); see test_etl_pit.py for the rows.
Vocabularies (train only, most frequent first): user 1->1, 2->2; item 10->1 (3x), 12->2 (2x),
11->3; author 100->1, 101->2; tab 0->1, 1->2, 2->3 (3 unseen -> 0); category a->1, b->2; seg x->1, y->2.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from etl_helpers import config, handmade_source
from test_etl_pit import EXPECTED

from aptrank.data.etl.feature_encoder import index_dtype
from aptrank.data.etl.run import EtlResult, example_files, run_etl
from aptrank.data.spec import FeatureSpec

PRIOR = {"click": 4 / 6, "like": 2 / 6, "finish": 4 / 6}
A = 2.0
TRAIN = 6


@pytest.fixture(scope="module")
def etl(tmp_path_factory: pytest.TempPathFactory) -> EtlResult:
    root = tmp_path_factory.mktemp("handmade")
    return run_etl("canonical", handmade_source(root / "src"), root / "out", config())


@pytest.fixture(scope="module")
def examples(etl: EtlResult) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(f) for s in ("train", "valid", "test") for f in example_files(etl.out_dir, s)])


def test_outputs_layout(etl: EtlResult) -> None:
    out = etl.out_dir
    for name in (
        "summary.json",
        "rejects.parquet",
        "feature_spec.json",
        "snapshot/users.parquet",
        "snapshot/items.parquet",
        "snapshot/authors.parquet",
        "vocab/item.parquet",
        "vocab/tab.parquet",
    ):
        assert (out / name).is_file(), name
    assert not (out / "_work").exists()
    # chunks of 2 rows, a new part file after 4 rows: train = part-00000 (2 row groups) + part-00001
    train = example_files(out, "train")
    assert [f.name for f in train] == ["part-00000.parquet", "part-00001.parquet"]
    assert [pq.ParquetFile(f).metadata.num_row_groups for f in train] == [2, 1]
    assert [pl.read_parquet(f).height for f in train] == [4, 2]
    assert [sum(pl.read_parquet(f).height for f in example_files(out, s)) for s in ("valid", "test")] == [1, 1]
    assert etl.summary["split_rows"] == {"train": 6, "valid": 1, "test": 1, "all": 8}


def test_categorical_values(examples: pl.DataFrame) -> None:
    expected = {
        "user_id": [1, 1, 2, 1, 1, 2, 2, 1],
        "item_id": [10, 11, 10, 12, 10, 12, 11, 11],
        "user": [1, 1, 2, 1, 1, 2, 2, 1],
        "item": [1, 3, 1, 2, 1, 2, 3, 3],
        "author": [1, 1, 1, 2, 1, 2, 1, 1],
        "tab": [1, 2, 1, 3, 1, 2, 0, 1],
        "category": [1, 2, 1, 1, 1, 1, 2, 2],
        "seg": [1, 1, 2, 1, 1, 2, 2, 1],
        # Asia/Shanghai = UTC+8: T0 is Monday 08:00; hour index = hour + 1
        "hour": [9, 10, 10, 15, 15, 15, 9, 17],
        "weekday": [1, 1, 1, 2, 2, 2, 3, 2],
        # boundaries 15 s, 25 s: item 10 (10 s) -> 1, 11 (20 s) -> 2, 12 (30 s) -> 3
        "duration_bucket": [1, 2, 1, 3, 1, 3, 2, 2],
    }
    for col, values in expected.items():
        assert examples[col].to_list() == values, col
        # raw keys stay Int64; indices are Int32 (data.etl.feature_encoder.index_dtype: tables < 2**31 rows)
        assert examples[col].dtype == (pl.Int64 if col.endswith("_id") else pl.Int32), col


def test_sequences_and_labels(examples: pl.DataFrame) -> None:
    assert examples["clicked"].to_list() == [[], [1], [], [1], [1], [1], [1], [1, 2]]
    assert examples["liked"].to_list() == [[], [], [], [], [], [1], [1], [2]]
    assert examples["clicked"].dtype == pl.List(pl.Int32)
    assert examples["label_click"].to_list() == [1, 0, 1, 1, 1, 0, 1, 0]
    assert examples["label_like"].to_list() == [0, 0, 1, 1, 0, 0, 0, 1]
    assert examples["label_finish"].to_list() == [1, 0, 1, 0, 1, 1, 0, 1]
    assert examples["label_finish"].dtype == pl.Int8


def test_index_dtype_widens_only_for_tables_past_int32() -> None:
    assert index_dtype(2**31) == pl.Int32 and index_dtype(2**31 + 1) == pl.Int64


def _standardise(values: list[float | None]) -> list[float]:
    """(x - mean) / std with mean and population std over train rows (non-null), null -> 0."""
    train = np.array([v for v in values[:TRAIN] if v is not None], dtype=np.float64)
    mean, std = float(train.mean()), float(train.std())
    std = std if std > 1e-12 else 1.0
    return [0.0 if v is None else (v - mean) / std for v in values]


@pytest.mark.parametrize("entity", ["user", "item", "author"])
def test_dense_point_in_time_features(examples: pl.DataFrame, entity: str) -> None:
    for window, rows in EXPECTED[entity].items():
        counts = [math.log1p(r[0]) for r in rows]
        np.testing.assert_allclose(examples[f"{entity}_{window}_count"].to_numpy(), _standardise(counts), atol=1e-5)
        for k, task in enumerate(("click", "like", "finish"), start=1):
            rates = [(r[k] + A * PRIOR[task]) / (r[0] + A) for r in rows]
            got = examples[f"{entity}_{window}_{task}_rate"].to_numpy()
            np.testing.assert_allclose(got, _standardise(rates), atol=1e-5, err_msg=f"{entity} {window} {task}")


def test_dense_item_age_and_attributes(examples: pl.DataFrame) -> None:
    # item 10 uploaded 48 h before T0, item 11 240 h before, item 12 unknown (null -> fill 0)
    ages = [2.0, 10 + 1 / 24, 2 + 1 / 24, None, 2 + 30 / 24, None, 12.0, 10 + 200 / 24]
    expected = _standardise([None if a is None else math.log1p(a) for a in ages])
    np.testing.assert_allclose(examples["item_age_days"].to_numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(examples["age"].to_numpy(), _standardise([10, 10, 30, 10, 10, 30, 30, 10]), atol=1e-5)
    assert all(examples[d].dtype == pl.Float32 for d in ("age", "item_age_days", "user_1d_count"))


def test_feature_spec_matches_columns(etl: EtlResult, examples: pl.DataFrame) -> None:
    spec = FeatureSpec.read(etl.out_dir)
    assert spec.hash == etl.summary["feature_spec_hash"] == etl.spec.hash
    assert examples.columns == [
        "user_id",
        "item_id",
        "ts",
        *spec.feature_names(),
        "label_click",
        "label_like",
        "label_finish",
    ]
    assert spec.task_names == ["click", "like", "finish"]
    tables = spec.tables()
    assert tables["item"] == 4 and tables["user"] == 3 and tables["tab"] == 4 and tables["hour"] == 25
    assert [s.table for s in spec.sequence] == ["item", "item"] and [s.max_len for s in spec.sequence] == [2, 3]
    enc = {f.name: f.encoding for f in spec.categorical}
    assert enc["user"].values == (1, 2) and enc["category"].values == ("a", "b")
    assert enc["item"].file == "vocab/item.parquet"
    vocab = pl.read_parquet(etl.out_dir / "vocab/item.parquet")
    assert vocab.rows() == [(10, 1, 3), (12, 2, 2), (11, 3, 1)]
    assert spec.extras["task_priors"] == pytest.approx(PRIOR)
    d = {f.name: f for f in spec.dense}["age"]
    assert d.mean == pytest.approx(50 / 3) and d.std == pytest.approx(np.std([10, 10, 30, 10, 10, 30]))


def test_summary_label_rates(etl: EtlResult) -> None:
    s = etl.summary
    assert s["label_rates"]["train"] == pytest.approx(PRIOR)
    assert s["label_rates"]["valid"] == {"click": 1.0, "like": 0.0, "finish": 0.0}
    assert s["label_rates"]["test"] == {"click": 0.0, "like": 1.0, "finish": 1.0}
    assert s["time_range"] == {"min": "2024-01-01T00:00:00.000Z", "max": "2024-01-09T08:00:00.000Z"}
    assert s["snapshot_cutoff"] == "2024-01-09T08:00:00.001Z"
    assert s["accepted_rows"] == 8 and s["rejected_rows"] == 0 and s["gates"]["passed"]


def test_idempotent_byte_identical(etl: EtlResult, tmp_path: Path) -> None:
    src = etl.out_dir.parent / "src"
    again = run_etl("canonical", src, tmp_path / "again", config())
    assert again.summary["content_hash"] == etl.summary["content_hash"]
    files = sorted(p.relative_to(etl.out_dir) for p in etl.out_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.out_dir) for p in again.out_dir.rglob("*") if p.is_file())
    for rel in files:
        if rel.name != "summary.json":
            assert (etl.out_dir / rel).read_bytes() == (again.out_dir / rel).read_bytes(), rel
    other = run_etl("canonical", src, tmp_path / "other", config(features={"smoothing": 3.0}))
    assert other.summary["content_hash"] != etl.summary["content_hash"]
