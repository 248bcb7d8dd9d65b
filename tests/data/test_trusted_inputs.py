"""Issue #20: input files are not trusted blindly. A corrupted Parquet page (with checksums), a
truncated, empty or CSV file named .parquet and mixed schemas are one clear error naming the file
(``aptrank run``: exit 2, one JSON line); events before 2000 or after the run's time are rejected as
``implausible_ts``; the ETL output is swapped in whole, and an output whose gate failed is marked
so that ``train`` refuses it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from etl_helpers import HANDMADE_ROWS, config, events_frame, handmade_items, handmade_users, write_canonical
from typer.testing import CliRunner

from aptrank.data.adapters import SourceError, load_source
from aptrank.data.etl.run import run_etl
from aptrank.data.etl.staged import GATE_FAILED, GateFailedOutputError, require_passed, run_staged
from aptrank.data.etl.validate import check_events
from aptrank.pipeline.cli import app

ROOT = Path(__file__).resolve().parents[2]


def canonical_source(root: Path, events: pl.DataFrame) -> Path:
    return write_canonical(root, events, handmade_items(), handmade_users())


def test_corrupted_page_is_one_error_naming_the_file(tmp_path: Path) -> None:
    src = canonical_source(tmp_path / "src", events_frame(HANDMADE_ROWS * 50))
    table = pq.read_table(src / "events.parquet")
    pq.write_table(table, src / "events.parquet", compression="NONE", write_page_checksum=True)
    blob = bytearray((src / "events.parquet").read_bytes())
    blob[200] ^= 0xFF  # inside the first data page: a silently different value without the checksum
    (src / "events.parquet").write_bytes(bytes(blob))
    with pytest.raises(SourceError, match=r"events\.parquet: unreadable Parquet file \(.*CRC checksum verification"):
        load_source("canonical", src)


@pytest.mark.parametrize("kind", ["truncated", "empty", "csv"])
def test_unreadable_parquet_is_one_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    src = canonical_source(tmp_path / "src", events_frame(HANDMADE_ROWS))
    path = src / "events.parquet"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "csv": b"user_id,item_id\n1,2\n"}[kind])
    with pytest.raises(SourceError, match=rf"{path}: unreadable Parquet file"):
        load_source("canonical", src)


def test_mixed_schemas_name_both_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    canonical_source(src, events_frame(HANDMADE_ROWS))
    (src / "events.parquet").unlink()
    (src / "events").mkdir()
    events_frame(HANDMADE_ROWS).write_parquet(src / "events" / "a.parquet")
    events_frame(HANDMADE_ROWS).with_columns(pl.col("click").cast(pl.Int64)).write_parquet(src / "events" / "b.parquet")
    with pytest.raises(SourceError, match=r"b\.parquet: schema differs from .*a\.parquet"):
        load_source("canonical", src)


def test_of_several_bad_files_the_first_in_path_order_is_named(tmp_path: Path) -> None:
    """The files are verified two at a time; the error is the one a file-by-file read would give."""
    src = canonical_source(tmp_path / "src", events_frame(HANDMADE_ROWS))
    (src / "events.parquet").unlink()
    (src / "events").mkdir()
    for name in ("a", "b", "c", "d"):
        events_frame(HANDMADE_ROWS).write_parquet(src / "events" / f"{name}.parquet")
    for name in ("b", "d"):
        (src / "events" / f"{name}.parquet").write_bytes(b"")
    for _ in range(5):
        with pytest.raises(SourceError, match=r"b\.parquet: unreadable Parquet file"):
            load_source("canonical", src)


def test_run_with_unreadable_parquet_exits_2_with_one_json_line(tmp_path: Path) -> None:
    src = canonical_source(tmp_path / "src", events_frame(HANDMADE_ROWS))
    (src / "events.parquet").write_bytes(b"")
    args = ["run", "--config", str(ROOT / "configs" / "demo.yaml"), "--workdir", str(tmp_path / "work")]
    result = CliRunner().invoke(app, [*args, "--set", "data.source=canonical", "--set", f"data.input={src}"])
    assert result.exit_code == 2, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["exit_code"] == 2 and f"{src / 'events.parquet'}: unreadable Parquet file" in out["error"]
    assert "Traceback" not in result.output


def test_events_before_2000_or_after_the_run_are_implausible() -> None:
    rows = [(1, 10, 0, 1, 0, 100, 0), (1, 11, 1, 0, 0, 100, 0), (2, 10, 2, 1, 0, 100, 0)]
    events = events_frame(rows).with_columns(
        pl.Series(
            "ts",
            [dt.datetime(2024, 1, 1), dt.datetime(1969, 12, 31), dt.datetime(2200, 1, 1)],
            dtype=pl.Datetime("ms", "UTC"),
        )
    )
    now = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    cfg = config()
    reasons = check_events(events.lazy(), handmade_items().lazy(), cfg, now=now).collect()["reason"]
    assert reasons.cast(pl.String).to_list() == [None, "implausible_ts", "implausible_ts"]
    skew = config(validation={"max_future_skew_hours": 0.0})
    soon = events.with_columns(pl.lit(dt.datetime(2024, 1, 2, 1), dtype=pl.Datetime("ms", "UTC")).alias("ts"))
    assert check_events(soon.head(1).lazy(), handmade_items().lazy(), skew, now=now).collect()["reason"].to_list() == [
        "implausible_ts"
    ]


def test_implausible_rows_go_to_rejects_and_leave_the_snapshot_cutoff_alone(tmp_path: Path) -> None:
    events = events_frame(HANDMADE_ROWS)
    future = events.head(1).with_columns(pl.lit(dt.datetime(2200, 1, 1), dtype=pl.Datetime("ms", "UTC")).alias("ts"))
    src = canonical_source(tmp_path / "src", pl.concat([events, future]))
    res = run_etl("canonical", src, tmp_path / "out", config(features={"history": []}))
    assert res.summary["rejects_by_reason"]["implausible_ts"] == 1
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert rejects["reason"].to_list() == ["implausible_ts"] and rejects["input_row"].to_list() == [len(HANDMADE_ROWS)]
    assert not res.summary["snapshot_cutoff"].startswith("2200")


def test_staged_output_is_swapped_in_whole_and_a_failed_gate_is_marked(tmp_path: Path) -> None:
    src = canonical_source(tmp_path / "src", events_frame(HANDMADE_ROWS))
    out = tmp_path / "out"
    cfg = config(features={"history": []})
    first = run_staged(lambda stage: run_etl("canonical", src, stage, cfg), out)
    assert first.passed and (out / "summary.json").is_file() and not (out / GATE_FAILED).exists()
    before = (out / "summary.json").read_bytes()

    def broken(stage: Path) -> None:
        (stage / "train").mkdir(parents=True)
        (stage / "train" / "part-00000.parquet").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        run_staged(broken, out)
    assert (out / "summary.json").read_bytes() == before  # the previous complete output, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no staging folder left

    doubled = canonical_source(tmp_path / "doubled", events_frame([*HANDMADE_ROWS, HANDMADE_ROWS[0]]))
    failed = run_staged(lambda stage: run_etl("canonical", doubled, stage, cfg, max_duplicate_rate=0.0), out)
    assert not failed.passed and (out / GATE_FAILED).is_file()
    with pytest.raises(GateFailedOutputError, match=r"out: its ETL data-quality gate failed \(duplicate"):
        require_passed(out)
    result = CliRunner().invoke(app, ["train", "--features", str(out), "--no-track", "--no-progress"])
    assert result.exit_code == 2 and "refusing to train on it" in result.output
