"""Incremental daily ETL (``aptrank etl --date``, issue #17): a bootstrap plus one run per day gives
the same examples (row and value), FeatureSpec, vocabularies and snapshot as a full recompute over
the whole history, on the shipped KuaiRand sample and on a generated log with bad rows, duplicates,
late-arriving events and a day without events; a gap or a state from another config is refused."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import typer
import yaml
from typer.testing import CliRunner

from aptrank.data.adapters import SAMPLE_DIR
from aptrank.data.etl.config import ENTITY_KEYS, EtlConfig, config_from_dict, load_config
from aptrank.data.etl.daily import STATE_DIR, StateError, day_bounds, examples_digest, run_day, run_days
from aptrank.data.etl.run import example_files, run_etl
from aptrank.data.etl.splits import SPLITS
from aptrank.data.etl.state import DayState
from aptrank.data.etl.summary import content_hash
from aptrank.data.etl.tables import SNAPSHOT_DIR, TABLE_FILES
from aptrank.data.etl.validate import REASONS
from aptrank.data.synthetic import GeneratorConfig, generate

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "etl"
SCORING_PARTS = ("feature_spec.json", "vocab", "snapshot")
FIRST, BOOT, LAST = dt.date(2022, 4, 8), dt.date(2022, 4, 10), dt.date(2022, 4, 16)
EMPTY, LATE_FROM, LATE_TO = dt.date(2022, 4, 13), dt.date(2022, 4, 12), dt.date(2022, 4, 15)


def _quiet(_msg: str) -> None:
    pass


def _rows(root: Path, split: str) -> pl.DataFrame:
    return pl.read_parquet(example_files(root, split))


def _assert_same_outputs(incremental: Path, full: Path) -> None:
    """Same example rows and values, same FeatureSpec, vocabularies and snapshot bytes."""
    for split in SPLITS:
        a, b = _rows(incremental, split), _rows(full, split)
        assert a.schema == b.schema and a.height == b.height, split
        assert a.equals(b), f"{split}: rows differ"
    assert examples_digest(incremental) == examples_digest(full)
    assert content_hash(incremental, SCORING_PARTS) == content_hash(full, SCORING_PARTS)


# ---- the shipped KuaiRand sample: bootstrap Apr 26, then Apr 27..30 one day at a time --------------
@pytest.fixture(scope="module")
def kuairand_cfg() -> EtlConfig:
    cfg = load_config(CONFIGS / "kuairand.yaml")
    return cfg.model_copy(
        update={"splits": cfg.splits.model_copy(update={"valid_start": "2022-04-27", "test_start": "2022-04-29"})}
    )


def test_kuairand_days_equal_full_recompute(kuairand_cfg: EtlConfig, tmp_path: Path) -> None:
    inc, full = tmp_path / "inc", tmp_path / "full"
    days = run_days(
        "kuairand", SAMPLE_DIR, inc, kuairand_cfg, dt.date(2022, 4, 26), dt.date(2022, 4, 30), bootstrap_first=True
    )
    assert len(days) == 5 and all(r.passed for r in days)
    reference = run_etl("kuairand", SAMPLE_DIR, full, kuairand_cfg)
    _assert_same_outputs(inc, full)
    assert days[-1].spec.hash == reference.spec.hash == days[-1].summary["feature_spec_hash"]
    # each day added exactly its own rows: the full run's rows of that (Asia/Shanghai) day
    everything = pl.concat([_rows(full, s) for s in SPLITS])
    for result in days[1:]:
        day = dt.date.fromisoformat(result.summary["day"])
        start, end = day_bounds(kuairand_cfg, day)
        expected = everything.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).height
        assert sum(result.summary["split_rows"].values()) == expected > 10_000
        assert result.summary["accepted_rows"] + result.summary["rejected_rows"] == result.summary["input_rows"]


# ---- a generated log: bad rows, duplicates, late arrivals, an empty day ----------------------------
def _generated_cfg() -> EtlConfig:
    data = yaml.safe_load((CONFIGS / "synthetic.yaml").read_text())
    data["splits"] = {"valid_start": "2022-04-11", "test_start": "2022-04-14"}
    data["validation"].update(max_reject_rate=0.5, max_duplicate_rate=0.5)
    data["features"]["windows"] = ["1d", "2d", "all"]  # short windows: most history lives in the carry
    for h in data["features"]["history"]:
        h["max_len"] = 3
    data["output"].update(chunk_rows=4096, rows_per_file=10_000)
    return config_from_dict(data, "test")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """9 days, 4% bad rows; no events on Apr 13; 300 events of Apr 12 arrive late, out of order, in the
    file of Apr 15."""
    root = tmp_path_factory.mktemp("gen") / "log"
    generate(root, GeneratorConfig(events=30_000, users=300, items=200, bad_rows=0.04, seed=3, days=9), progress=False)
    shutil.rmtree(root / "events" / f"date={EMPTY}")
    source, target = (root / "events" / f"date={d}" / "part-00000.parquet" for d in (LATE_FROM, LATE_TO))
    rows = pl.read_parquet(source)
    late = rows.slice(1000, 300).sample(fraction=1.0, shuffle=True, seed=1)
    pl.concat([rows.slice(0, 1000), rows.slice(1300)]).write_parquet(source)
    pl.concat([pl.read_parquet(target), late]).write_parquet(target)
    return root


def _truncated(log: Path, day: dt.date, cfg: EtlConfig, dest: Path) -> Path:
    """The log as it stands at the end of ``day``: later days' events removed (undated rows kept)."""
    events = pl.read_parquet(sorted((log / "events").rglob("*.parquet")))
    later = (pl.col("ts") >= day_bounds(cfg, day)[1]) & (pl.col("ts").dt.year() < 2099)
    dest.mkdir(parents=True)
    events.filter(~later.fill_null(False)).write_parquet(dest / "events.parquet")
    for table in ("items.parquet", "users.parquet"):
        shutil.copyfile(log / table, dest / table)
    return dest


def test_generated_days_equal_full_recompute_each_day(generated: Path, tmp_path: Path) -> None:
    cfg, inc = _generated_cfg(), tmp_path / "inc"
    boot = run_days("canonical", generated, inc, cfg, BOOT, BOOT, bootstrap_first=True)[0]
    rejects = boot.summary["rejects_by_reason"]
    day = BOOT
    while day < LAST:
        day += dt.timedelta(days=1)
        result = run_day("canonical", generated, inc, cfg, day, _quiet)
        full = run_etl(
            "canonical", _truncated(generated, day, cfg, tmp_path / f"log-{day}"), tmp_path / f"full-{day}", cfg
        )
        _assert_same_outputs(inc, tmp_path / f"full-{day}")
        assert result.spec.hash == full.spec.hash
        rejects = {
            r: rejects.get(r, 0) + result.summary["rejects_by_reason"].get(r, 0)
            for r in full.summary["rejects_by_reason"]
        }
        if day == EMPTY:
            assert result.summary["input_rows"] == 0 and result.summary["split_rows"] == {s: 0 for s in SPLITS}
            assert (
                result.summary["snapshot_cutoff"]
                == json.loads((inc / "days" / str(day - dt.timedelta(days=1)) / "summary.json").read_text())[
                    "snapshot_cutoff"
                ]
            )
    # the bad rows of the whole log were rejected once each, by the bootstrap or by their day
    assert rejects == full.summary["rejects_by_reason"]
    generated = {r: n for r, n in rejects.items() if r != "implausible_ts"}  # the generator makes every other kind
    assert set(generated) == set(REASONS) - {"implausible_ts"} and min(generated.values()) > 100  # ~150 each
    state = json.loads((inc / STATE_DIR / str(LAST) / "state.json").read_text())
    assert state["day"] == str(LAST) and state["feature_spec_hash"] == full.spec.hash
    assert sorted(p.name for p in (inc / STATE_DIR).iterdir()) == [str(LAST - dt.timedelta(days=1)), str(LAST)]


def test_daily_freshness_days_equal_full_recompute(generated: Path, tmp_path: Path) -> None:
    """``freshness: daily`` (data/etl/freshness.py): bootstrap, then one day at a time through the empty
    day and the late arrivals, equals a full recompute; the snapshot's cutoff is the end of the last day."""
    cfg = _generated_cfg().model_copy(update={"freshness": "daily"})
    inc = tmp_path / "inc"
    days = run_days("canonical", generated, inc, cfg, BOOT, LAST, bootstrap_first=True, say=_quiet)
    assert len(days) == (LAST - BOOT).days + 1 and all(r.passed for r in days)
    full = run_etl("canonical", _truncated(generated, LAST, cfg, tmp_path / "log"), tmp_path / "full", cfg)
    _assert_same_outputs(inc, tmp_path / "full")
    assert days[-1].spec.hash == full.spec.hash and full.spec.extras["freshness"] == "daily"
    assert full.summary["snapshot_cutoff"] == days[-1].summary["snapshot_cutoff"]
    assert full.summary["snapshot_cutoff"] == day_bounds(cfg, LAST)[1].isoformat().replace("+00:00", ".000Z")
    empty = next(r for r in days if r.summary.get("day") == str(EMPTY))  # no events: the cutoff stays
    assert empty.summary["snapshot_cutoff"] == day_bounds(cfg, EMPTY)[0].isoformat().replace("+00:00", ".000Z")
    exact = _generated_cfg()
    with pytest.raises(StateError, match="another ETL config"):  # an exact state does not feed a daily run
        run_day("canonical", generated, inc, exact, LAST, _quiet)


# ---- refusals and the CLI ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def booted(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("boot") / "out"
    run_days("canonical", generated, out, _generated_cfg(), BOOT, BOOT + dt.timedelta(days=1), bootstrap_first=True)
    return out


def test_gap_and_other_config_are_refused(generated: Path, booted: Path, tmp_path: Path) -> None:
    cfg = _generated_cfg()
    with pytest.raises(StateError, match=r"no state for 2022-04-12 .*aptrank etl --date 2022-04-12 --until 2022-04-13"):
        run_day("canonical", generated, booted, cfg, dt.date(2022, 4, 13), _quiet)
    other = cfg.model_copy(update={"features": cfg.features.model_copy(update={"smoothing": 5.0})})
    with pytest.raises(StateError, match="another ETL config"):
        run_day("canonical", generated, booted, other, dt.date(2022, 4, 12), _quiet)
    with pytest.raises(StateError, match="no daily state yet"):
        run_day("canonical", generated, tmp_path / "nothing", cfg, dt.date(2022, 4, 12), _quiet)
    with pytest.raises(StateError, match="train split"):
        run_days("canonical", generated, tmp_path / "early", cfg, FIRST, FIRST, bootstrap_first=True)


def test_a_day_that_fails_its_gate_publishes_nothing(generated: Path, booted: Path, tmp_path: Path) -> None:
    shutil.copytree(booted, tmp_path / "out")
    strict = _generated_cfg().model_copy(
        update={"validation": _generated_cfg().validation.model_copy(update={"max_reject_rate": 0.0})}
    )
    before = (examples_digest(tmp_path / "out"), content_hash(tmp_path / "out", (*SCORING_PARTS, STATE_DIR)))
    result = run_day("canonical", generated, tmp_path / "out", strict, BOOT + dt.timedelta(days=2), _quiet)
    assert not result.passed and result.summary["rejects_by_reason"]["null_key"] > 0
    assert (examples_digest(tmp_path / "out"), content_hash(tmp_path / "out", (*SCORING_PARTS, STATE_DIR))) == before
    assert (tmp_path / "out" / "days" / str(BOOT + dt.timedelta(days=2)) / "rejects.parquet").is_file()


def test_rerunning_the_last_day_gives_the_same_outputs(generated: Path, booted: Path) -> None:
    before = (examples_digest(booted), content_hash(booted, SCORING_PARTS))
    run_day("canonical", generated, booted, _generated_cfg(), BOOT + dt.timedelta(days=1), _quiet)
    assert (examples_digest(booted), content_hash(booted, SCORING_PARTS)) == before


def test_cli_date_backfill_and_refusal_exit_codes(app: typer.Typer, generated: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_generated_cfg().model_dump(mode="json")))
    out = tmp_path / "out"
    common = ["etl", "--source", "canonical", "--input", str(generated), "--out", str(out), "--config", str(cfg)]

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, [*common, "--quiet", *args], env={"COLUMNS": "400"})
        return result.exit_code, result.output

    code, output = run("--date", str(BOOT), "--until", "2022-04-12", "--bootstrap")
    assert code == 0, output
    assert json.loads(output.strip().splitlines()[-1])["input_rows"] > 0
    assert [p.name for p in sorted((out / STATE_DIR).iterdir())] == ["2022-04-11", "2022-04-12"]
    code, output = run("--date", "2022-04-14")
    assert code == 2 and "no state for 2022-04-13" in output and "--until 2022-04-14" in output
    assert output.count("\n") == 1 and "Traceback" not in output
    code, output = run("--date", "2022-04-31")
    assert code == 2 and "'2022-04-31' is not a date YYYY-MM-DD" in output
    code, output = run("--until", "2022-04-12")
    assert code == 2 and "needs --date" in output
    help_text = CliRunner().invoke(app, ["etl", "--help"], env={"COLUMNS": "400"}).output
    for option in ("--date", "--until", "--bootstrap", "--engine"):
        assert len(next(x for x in help_text.splitlines() if option in x).split(option, 1)[1].strip()) > 10


def test_state_keeps_the_snapshot_keys_and_refuses_an_older_format(
    generated: Path, booted: Path, tmp_path: Path
) -> None:
    """The state's key lists are the snapshot's keys (the next day adds its own to them), its
    retained rows are per entity in (key, ts) order (what the day's searches need); a state of
    format 2 (one retained file in ts order) is refused with the rebuild command."""
    shutil.copytree(booted, tmp_path / "out")
    folder = tmp_path / "out" / STATE_DIR / str(BOOT + dt.timedelta(days=1))
    state = DayState.read(folder)
    assert set(state.keys) == {"user", "item", "author"}
    for entity, keys in state.keys.items():
        key = ENTITY_KEYS[entity]
        snapshot = pl.read_parquet(tmp_path / "out" / SNAPSHOT_DIR / TABLE_FILES[entity], columns=[key])
        assert keys.equals(snapshot) and keys[key].is_sorted() and keys[key].n_unique() == keys.height > 20
        retained = state.retained[entity]
        assert retained.height > 100 and retained[key].null_count() == 0
        assert retained.equals(retained.sort(key, "ts", maintain_order=True))
    meta = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**meta, "version": 2}))
    with pytest.raises(StateError, match=r"state\.json: state format version 2 is not 4; rebuild .* --bootstrap"):
        run_day("canonical", generated, tmp_path / "out", _generated_cfg(), BOOT + dt.timedelta(days=2), _quiet)
