"""Feature snapshot and the scorers' lookup: snapshot values by hand, and the lookup reproduces the
ETL's own example features exactly (same code path) for candidates at the snapshot cutoff."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from etl_helpers import (
    HANDMADE_ROWS,
    at,
    config,
    events_frame,
    handmade_items,
    handmade_source,
    handmade_users,
    write_canonical,
)

from aptrank.data.etl.run import EtlResult, example_files, run_etl
from aptrank.data.snapshot import FeatureLookup, lookup_features
from aptrank.data.spec import SpecError

CUTOFF = at(200) + dt.timedelta(milliseconds=1)
PROBES = [  # user, item, tab: known, known, users-table-only user with an item without events, unknown user
    (1, 10, 0),
    (2, 11, 1),
    (3, 13, 2),
    (9, 12, 9),
]


@pytest.fixture(scope="module")
def etl(tmp_path_factory: pytest.TempPathFactory) -> EtlResult:
    root = tmp_path_factory.mktemp("snap")
    return run_etl("canonical", handmade_source(root / "src"), root / "out", config())


def test_snapshot_counts_by_hand(etl: EtlResult) -> None:
    users = pl.read_parquet(etl.out_dir / "snapshot" / "users.parquet")
    cols = [f"user_{w}_{c}" for w in ("1d", "7d", "all") for c in ("n", "click_pos", "like_pos", "finish_pos")]
    # cutoff 200 h + 1 ms. u1: 1d and 7d hold r7 (0,1,1), all holds 5 events; u2: 7d holds r6 (1,0,0)
    assert users.select("user_id", *cols).rows() == [
        (1, 1, 0, 1, 1, 1, 0, 1, 1, 5, 3, 2, 3),
        (2, 0, 0, 0, 0, 1, 1, 0, 0, 3, 2, 1, 2),
        (3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    ]
    # histories hold encoded item ids (10 -> 1, 12 -> 2, 11 -> 3), most recent first
    assert users.select("clicked", "liked").rows() == [([1, 2], [3, 2]), ([3, 1], [1]), ([], [])]
    assert users["seg"].to_list() == ["x", "y", "x"]
    items = pl.read_parquet(etl.out_dir / "snapshot" / "items.parquet")
    assert items.select("item_id", "author_id", "item_all_n", "item_all_click_pos", "item_7d_n").rows() == [
        (10, 100, 3, 3, 0),
        (11, 100, 3, 1, 2),
        (12, 101, 2, 1, 0),
        (13, 102, 0, 0, 0),
    ]
    authors = pl.read_parquet(etl.out_dir / "snapshot" / "authors.parquet")
    cols = ["author_id", "author_1d_n", "author_7d_n", "author_all_n", "author_all_finish_pos"]
    assert authors.select(cols).rows() == [
        (100, 1, 2, 6, 4),
        (101, 0, 0, 2, 1),
        (102, 0, 0, 0, 0),
    ]


def test_lookup_equals_etl_examples_at_the_cutoff(etl: EtlResult, tmp_path: Path) -> None:
    """Run the ETL again on the log plus one probe event per candidate at exactly the first run's
    cutoff: the probes' example rows (point-in-time path) must equal the lookup's rows (snapshot
    path). The train split is unchanged, so vocabularies and statistics are the same."""
    probes = [(u, i, 200 + 1 / 3_600_000, 0, 0, 0, tab) for u, i, tab in PROBES]
    src = write_canonical(tmp_path / "src", events_frame(HANDMADE_ROWS + probes), handmade_items(), handmade_users())
    again = run_etl("canonical", src, tmp_path / "out", config())
    test = pl.concat([pl.read_parquet(f) for f in example_files(again.out_dir, "test")])
    via_etl = test.filter(pl.col("ts") == CUTOFF).drop("label_click", "label_like", "label_finish")
    candidates = via_etl.select("user_id", "item_id", "ts", pl.Series("tab", [t for _, _, t in PROBES]))
    result = lookup_features(candidates, etl.out_dir)
    assert result.frame.columns == via_etl.columns
    assert result.frame.equals(via_etl)
    assert result.rows == 4
    assert result.missing_rows == {"user": 1, "item": 0, "author": 0}
    assert result.oov["user"] == 2 and result.oov["tab"] == 1 and result.oov["item"] == 1  # item 13 unseen in train


def test_lookup_defaults_for_unknown_items_and_epoch_ts(etl: EtlResult) -> None:
    lookup = FeatureLookup(etl.out_dir)
    cut_ms = int(CUTOFF.timestamp() * 1000)
    cands = pl.DataFrame({"user_id": [1, 1], "item_id": [10, 777], "ts": [cut_ms, cut_ms], "tab": [0, 0]})
    res = lookup.build(cands)
    assert res.missing_rows == {"user": 0, "item": 1, "author": 1}
    assert res.oov["item"] == 1 and res.oov["author"] == 1 and res.oov["duration_bucket"] == 1
    row_known, row_unknown = res.frame.row(0, named=True), res.frame.row(1, named=True)
    assert row_known["ts"] == CUTOFF and row_known["item"] == 1
    # an item without history gets what an item with no prior events gets in the examples
    first_event = pl.read_parquet(example_files(etl.out_dir, "train")[0]).row(0, named=True)
    for name in ("item_all_count", "item_all_click_rate", "item_7d_like_rate", "author_1d_finish_rate"):
        assert row_unknown[name] == pytest.approx(first_event[name]), name


def test_lookup_errors_name_the_problem(etl: EtlResult, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"candidates lack required columns \['tab'\]"):
        lookup_features(pl.DataFrame({"user_id": [1], "item_id": [10], "ts": [0]}), etl.out_dir)
    with pytest.raises(SpecError, match="FeatureSpec file not found"):
        FeatureLookup(tmp_path)
