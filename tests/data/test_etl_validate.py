"""Reject rules: every rule with exact counts, the rule order, duplicates, the reject file and gates."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from etl_helpers import config, events_frame, handmade_items, handmade_users, write_canonical

from aptrank.data.etl.config import EtlConfigError
from aptrank.data.etl.run import run_etl
from aptrank.data.etl.validate import REASONS, check_events

BAD_ROWS = [
    # user, item, hour, click, like, watch, tab          reason
    (1, 10, 0, 1, 0, 100, 0),  # 0  ok
    (None, 10, 1, 1, 0, 100, 0),  # 1  null_key
    (1, None, 1, 1, 0, 100, 0),  # 2  null_key
    (-5, 10, 1, 1, 0, 100, 0),  # 3  malformed_key
    (1, -1, 1, 1, 0, 100, 0),  # 4  malformed_key (also an unknown item: first rule wins)
    (1, 10, None, 1, 0, 100, 0),  # 5  null_ts
    (1, 10, -800, 1, 0, 100, 0),  # 6  ts_out_of_range (before 2023-12-01)
    (1, 10, 1000, 1, 0, 100, 0),  # 7  ts_out_of_range (after 2024-02-01)
    (1, 10, 2, 2, 0, 100, 0),  # 8  label_not_binary
    (1, 10, 2, 1, None, 100, 0),  # 9  label_not_binary (null like)
    (1, 10, 2, -1, 0, 100, 0),  # 10 label_not_binary
    (1, 10, 3, 1, 0, -5, 0),  # 11 negative_watch
    (1, 99, 3, 1, 0, 100, 0),  # 12 unknown_item
    (1, 10, 0, 1, 0, 100, 0),  # 13 duplicate_impression (byte-identical copy of row 0)
    (1, 10, 0, 0, 1, 7, 2),  # 14 duplicate_impression (same user, item, ts; other values)
    (None, None, None, 5, 0, -1, 0),  # 15 null_key (breaks four rules)
    (1, 10, 4, 0, 0, None, 0),  # 16 ok (null watch time is allowed)
    (3, 11, 5, 2, 0, 100, 0),  # 17 label_not_binary
    (3, 11, 5, 1, 0, 100, 0),  # 18 ok: its only earlier twin (17) is invalid, so it is no duplicate
    (3, 11, 6, 1, 0, 100, 0),  # 19 ok
    (3, 11, 6, 1, 0, 100, 0),  # 20 duplicate_impression
    (3, 11, 6, 1, 0, 100, 0),  # 21 duplicate_impression (third copy)
    (3, 11, 7, 2, 0, -1, 0),  # 22 label_not_binary (before negative_watch in the order)
    (-1, 99, 8, 1, 0, 100, 0),  # 23 malformed_key (before unknown_item)
]
EXPECTED = {
    "null_key": [1, 2, 15],
    "malformed_key": [3, 4, 23],
    "null_ts": [5],
    "ts_out_of_range": [6, 7],
    "implausible_ts": [],  # the time range rejects first; the plausible-time rule: test_trusted_inputs.py
    "label_not_binary": [8, 9, 10, 17, 22],
    "negative_watch": [11],
    "unknown_item": [12],
    "duplicate_impression": [13, 14, 20, 21],
}
RANGE = {"start": "2023-12-01", "end": "2024-02-01"}


def _reasons(rows: list[tuple], items: pl.DataFrame | None = None, **cfg_overrides: object) -> list[str | None]:
    cfg = config(time_range=RANGE, **cfg_overrides)
    frame = check_events(events_frame(rows).lazy(), (items if items is not None else handmade_items()).lazy(), cfg)
    return frame.select("reason").collect()["reason"].cast(pl.String).to_list()


def test_every_rule_exact_rows() -> None:
    reasons = _reasons(BAD_ROWS)
    for reason, rows in EXPECTED.items():
        assert [i for i, r in enumerate(reasons) if r == reason] == rows, reason
    assert [i for i, r in enumerate(reasons) if r is None] == [0, 16, 18, 19]
    assert set(EXPECTED) == set(REASONS)


def test_string_ids_blank_is_malformed() -> None:
    rows = [
        ("u1", "i1", 0, 1, 0, 1, 0),
        ("", "i1", 1, 1, 0, 1, 0),
        ("u2", "  ", 2, 1, 0, 1, 0),
        ("u2", "i1", 3, 1, 0, 1, 0),
    ]
    items = handmade_items().with_columns(pl.Series("item_id", ["i1", "i2", "i3", "i4"]))
    cfg = config(time_range=RANGE)
    frame = check_events(events_frame(rows, pl.String).lazy(), items.lazy(), cfg)
    assert frame.collect()["reason"].cast(pl.String).to_list() == [None, "malformed_key", "malformed_key", None]


def test_id_dtype_mismatch_names_both_tables() -> None:
    items = handmade_items().with_columns(pl.col("item_id").cast(pl.String))
    with pytest.raises(EtlConfigError, match=r"events: item_id is Int64 in the events but String in the items table"):
        check_events(events_frame(BAD_ROWS).lazy(), items.lazy(), config(time_range=RANGE), "events")


def test_unknown_items_accepted_when_metadata_not_required() -> None:
    reasons = _reasons(BAD_ROWS, validation={"require_item_metadata": False})
    assert reasons[12] is None and reasons[23] == "malformed_key"


def test_binary_task_columns_are_validated() -> None:
    rows = [(1, 10, 0, 1, 0, 100, 0), (1, 10, 1, 1, 0, 100, 3)]
    tasks = [
        {"name": "click", "kind": "binary_column", "column": "click"},
        {"name": "tabbed", "kind": "binary_column", "column": "tab"},
    ]
    assert _reasons(rows, tasks=tasks, features={"history": []}) == [None, "label_not_binary"]


def test_reject_file_and_accounting(tmp_path: Path) -> None:
    src = write_canonical(tmp_path / "src", events_frame(BAD_ROWS), handmade_items(), handmade_users())
    res = run_etl("canonical", src, tmp_path / "out", config(time_range=RANGE, features={"history": []}))
    s = res.summary
    assert s["input_rows"] == 24 and s["accepted_rows"] == 4 and s["rejected_rows"] == 20
    assert s["rejects_by_reason"] == {r: len(EXPECTED[r]) for r in REASONS}
    assert s["validity_rejected_rows"] == 16 and s["duplicate_rows"] == 4
    assert s["validity_reject_rate"] == pytest.approx(16 / 24) and s["duplicate_rate"] == pytest.approx(4 / 24)
    assert not res.passed
    failures = s["gates"]["failures"]
    assert len(failures) == 2
    assert "validity reject rate 66.6667%" in failures[0] and "label_not_binary 5" in failures[0]
    assert "duplicate impression rate 16.6667%" in failures[1]
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert rejects.columns == ["input_row", "user_id", "item_id", "ts", "click", "like", "watch_ms", "tab", "reason"]
    expected = sorted((row, reason) for reason, rows in EXPECTED.items() for row in rows)
    assert sorted(zip(rejects["input_row"].to_list(), rejects["reason"].to_list(), strict=True)) == expected
    # rows are kept as they came in
    original = events_frame(BAD_ROWS).with_row_index("input_row")
    joined = rejects.drop("reason").join(original, on="input_row", how="left", suffix="_in")
    for col in ("user_id", "item_id", "ts", "click", "like", "watch_ms", "tab"):
        assert joined[col].equals(joined[f"{col}_in"], check_names=False), col


def test_gates_pass_within_limits_and_duplicates_have_their_own(tmp_path: Path) -> None:
    rows = [(1, 10, h, 1, 0, 100, 0) for h in range(20)] + [(1, 10, 0, 1, 0, 100, 0)]  # 1 duplicate in 21
    src = write_canonical(tmp_path / "src", events_frame(rows), handmade_items(), handmade_users())
    cfg = config(time_range=RANGE, features={"history": []}, splits={"valid_start": None, "test_start": None})
    ok = run_etl("canonical", src, tmp_path / "a", cfg)
    assert ok.passed and ok.summary["duplicate_rows"] == 1 and ok.summary["validity_rejected_rows"] == 0
    strict = run_etl("canonical", src, tmp_path / "b", cfg, max_duplicate_rate=0.04)
    assert not strict.passed and strict.summary["gates"]["failures"][0].startswith("duplicate impression rate 4.7619%")
    assert (tmp_path / "b" / "train" / "part-00000.parquet").is_file(), "outputs are written when a gate fails"
    lenient = run_etl("canonical", src, tmp_path / "c", cfg, max_reject_rate=0.0)
    assert lenient.passed, "duplicates are not validity rejects"
