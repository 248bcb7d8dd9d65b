"""ETL config: the shipped YAML files load, and every broken rule names the file and the key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from aptrank.data.etl.config import EtlConfig, EtlConfigError, config_from_dict, load_config, window_ms
from aptrank.data.spec import TaskLabel

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "etl"


def test_shipped_configs_load() -> None:
    kr = load_config(CONFIGS / "kuairand.yaml")
    assert kr.time_zone == "Asia/Shanghai"
    assert kr.tasks[2] == TaskLabel("finish", "watch_ratio", min_ratio=0.95)
    assert kr.features.context == ("tab",) and kr.features.windows == ("1d", "7d", "all")
    # valid starts at midnight Shanghai time = 16:00 UTC the day before
    assert kr.local_time(kr.splits.valid_start or "") == dt.datetime(2022, 4, 28, 16, tzinfo=dt.UTC)
    syn = load_config(CONFIGS / "synthetic.yaml")
    assert syn.splits.valid_start is None and syn.splits.test_fraction == 0.1
    assert syn.output.compression == "lz4"


def test_defaults_are_a_valid_config() -> None:
    cfg = config_from_dict({})
    assert cfg == EtlConfig()
    assert cfg.task_names == ["click", "like", "finish"]


def test_unquoted_yaml_dates(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("splits:\n  valid_start: 2024-01-02\n  test_start: 2024-01-03\n")
    assert load_config(p).splits.valid_start == "2024-01-02"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"windowz": 1}, r"windowz: unknown key"),
        ({"features": {"windowz": ["1d"]}}, r"features.windowz: unknown key"),
        (
            {"features": {"history": [{"name": "h", "task": "click", "maxlen": 3}]}},
            r"features.history\[0\].maxlen: unknown key",
        ),
        ({"tasks": [{"name": "c", "kind": "binary_column", "colum": "click"}]}, r"tasks\[0\].colum: unknown key"),
        ({"features": {"windows": ["1d", "3x"]}}, r"features.windows\[1\]: '3x' is not a window"),
        ({"features": {"smoothing": "a lot"}}, r"features.smoothing: expected a number, got 'a lot'"),
        ({"features": {"smoothing": 0}}, r"features.smoothing: must be > 0"),
        (
            {"features": {"history": [{"name": "h", "task": "share"}]}},
            r"features.history\[0\].task: 'share' is not a configured task",
        ),
        ({"tasks": [{"name": "f", "kind": "watch_ratio"}]}, r"tasks\[0\].min_ratio: task 'f' is watch_ratio"),
        (
            {"tasks": [{"name": "f", "kind": "ratio"}]},
            r"tasks\[0\].kind: must be one of 'binary_column' or 'watch_ratio', got 'ratio'",
        ),
        ({"splits": {"valid_start": "2024-01-02"}}, r"splits: give both valid_start and test_start"),
        ({"splits": {"valid_start": "2024-01-03", "test_start": "2024-01-02"}}, r"valid_start must be before"),
        ({"time_zone": "Mars/Olympus"}, r"time_zone: 'Mars/Olympus' is not an IANA time zone"),
        ({"time_range": {"start": "yesterday"}}, r"time_range.start: 'yesterday' is not a date"),
        ({"validation": {"max_reject_rate": 2}}, r"validation.max_reject_rate: must be in \[0, 1\]"),
        ({"features": {"encodings": {"user": {"kind": "hash"}}}}, r"features.encodings.user.buckets: hash encoding"),
        ({"features": {"context": ["tab"], "item_attributes": {"categorical": ["tab"]}}}, r"listed twice.*\['tab'\]"),
        ({"features": {"user_attributes": {"log1p": ["age"]}}}, r"user_attributes.log1p: \['age'\] are not listed"),
    ],
)
def test_errors_name_file_and_key(data: dict, message: str) -> None:
    with pytest.raises(EtlConfigError, match=r"^my.yaml: .*" + message):
        config_from_dict(data, "my.yaml")


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(EtlConfigError, match=r"nope.yaml: ETL config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(EtlConfigError, match=r"list.yaml: ETL config must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_window_lengths() -> None:
    assert window_ms("1d") == 86_400_000 and window_ms("12h") == 43_200_000 and window_ms("2w") == 14 * 86_400_000
    assert window_ms("500ms") == 500 and window_ms("all") is None
    for bad in ("0d", "d", "1.5h", "1y"):
        with pytest.raises(ValueError, match="is not a window"):
            window_ms(bad)
