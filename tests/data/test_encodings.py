"""Each encoding kind's numpy function equals its Polars expression, value for value, on crafted
inputs (edges, nulls, NaN, infinities, unseen values, boundaries, int64 limits) and seeded random
ones; and the typed FeatureSpec writes the JSON and hash the dict-based one wrote."""

from __future__ import annotations

import json
import zoneinfo
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aptrank.data.encodings import (
    CATEGORICAL,
    HOUR,
    ITEM_UPLOAD,
    RECIPES,
    WEEKDAY,
    Buckets,
    Column,
    Encoding,
    Hashed,
    Log1pCount,
    NotVectorised,
    Range,
    Recipe,
    SmoothedRate,
    SpecError,
    Value,
    Vocab,
    derived_columns,
)
from aptrank.data.encodings.dense import POLARS_LOG1P_MIN_ROWS, log1p_like_polars, normalised_expr, normalised_numpy
from aptrank.data.encodings.derived import local_time
from aptrank.data.etl.feature_encoder import FeatureEncoder
from aptrank.data.spec import FeatureSpec

I64 = np.iinfo(np.int64)
INTS = [0, 1, 2, 3, 5, 7, 23, 24, -1, -7, 999, 1000, 1001, 4999, 5000, 10**9, 2**31, -(2**31) - 1, I64.max, I64.min]
FLOATS = [0.0, -0.0, 0.5, 2.9, -0.5, -2.9, 3.0, 23.99, 1000.0, 4999.5, 1e18, 9.3e18, -9.3e18, 2.0**63, -(2.0**63)]
FLOATS += [np.nan, np.inf, -np.inf, 1e-300, -1.0, -1.5]
ZONES = ("Asia/Shanghai", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu")

CASES: dict[str, Encoding] = {
    "vocab dense table": Vocab("x", "Int64", 4, values=(7, 3, 0, 1000)),
    "vocab sparse ids": Vocab("x", "Int64", 4, values=(2**40, -5, 3, I64.max)),
    "vocab Int32": Vocab("x", "Int32", 3, values=(-(2**31), 5, 2**31 - 1)),
    "hash Int64": Hashed("x", "Int64", buckets=101),
    "hash Int32": Hashed("x", "Int32", buckets=7),
    "hash UInt32": Hashed("x", "UInt32", buckets=2),
    "range hour": Range("x", low=0, high=23),
    "range weekday": Range("x", low=1, high=7),
    "buckets": Buckets("x", boundaries=(1000, 5000)),
    "buckets fractional": Buckets("x", boundaries=(0.5, 2.9, 1e18)),
}


def _series(kind: str, rng: np.random.Generator) -> pl.Series:
    """Crafted values (every edge, each also as null) followed by seeded random ones."""
    if kind == "int":
        random = rng.integers(-(2**40), 2**40, 500).tolist() + rng.integers(-3, 1100, 500).tolist()
        return pl.Series("x", [*INTS, None, *random], dtype=pl.Int64)
    random = (rng.standard_normal(500) * 10 ** rng.integers(0, 19, 500)).tolist() + rng.uniform(-2, 30, 500).tolist()
    return pl.Series("x", [*FLOATS, None, *random], dtype=pl.Float64)


def _polars(expr: pl.Expr, series: pl.Series) -> pl.Series:
    return pl.DataFrame([series]).select(expr.alias("out"))["out"]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", ["int", "float"])
def test_categorical_numpy_equals_polars(case: str, kind: str) -> None:
    enc = CASES[case]
    series = _series(kind, np.random.default_rng(len(case)))
    expected = _polars(enc.polars_expr(pl.col("x")), series).to_numpy()
    column = Column.from_series(series)
    assert column is not None
    got = enc.numpy(column)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    assert got.min() >= 0 and got.max() < enc.num_embeddings()
    assert got[len(INTS if kind == "int" else FLOATS)] == 0, "null -> OOV row"


def test_categorical_edges_by_hand() -> None:
    """The rules themselves, not only agreement: boundaries, truncation towards zero, NaN, OOV."""
    floats = Column(np.array([0.0, 23.9, -0.9, 24.0, np.nan, 1e30, -1.0]))
    assert Range("h", low=0, high=23).numpy(floats).tolist() == [1, 24, 1, 0, 0, 0, 0]
    ints = Column(np.array([0, 999, 1000, 4999, 5000, -1, 7]), np.array([True] * 6 + [False]))
    assert Buckets("d", (1000, 5000)).numpy(ints).tolist() == [1, 1, 2, 2, 3, 0, 0]
    assert Buckets("d", (1000, 5000)).numpy(Column(np.array([np.nan, -np.inf]))).tolist() == [3, 0]
    vocab = Vocab("t", "Int64", 3, values=(4, 2, 9))
    assert vocab.numpy(Column(np.array([2, 9, 4, 3, -4]))).tolist() == [2, 3, 1, 0, 0]


def test_string_encodings_have_no_numpy_path() -> None:
    for enc in (Vocab("s", "String", 2, values=("a", "b")), Hashed("s", "String", buckets=5)):
        assert not enc.vectorised
        with pytest.raises(NotVectorised, match="has no numpy path"):
            enc.numpy(Column(np.zeros(2, np.int64)))


RECIPE_CASES: dict[str, Recipe] = {
    "log1p_count": Log1pCount("a"),
    "smoothed_rate": SmoothedRate("a", "b", prior=0.037, smoothing=20, task="click"),
    "smoothed_rate zero smoothing": SmoothedRate("a", "b", prior=0.5, smoothing=0.0),
    "value": Value("a"),
    "value log1p": Value("a", log1p=True),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
@pytest.mark.parametrize("kind", ["int", "float"])
def test_dense_numpy_equals_polars_bit_for_bit(case: str, kind: str) -> None:
    recipe = RECIPE_CASES[case]
    rng = np.random.default_rng(len(case))
    a = _series(kind, rng)
    b = _series(kind, rng).sample(len(a), seed=1).alias("b")
    frame = pl.DataFrame([a.alias("a"), b])
    columns = {n: Column.from_series(frame[n]) for n in frame.columns}
    raw = frame.select(recipe.polars_expr().alias("out"))["out"]
    got = recipe.numpy(columns)  # type: ignore[arg-type]
    valid = got.valid if got.valid is not None else np.ones(len(got), bool)
    np.testing.assert_array_equal(valid, raw.is_not_null().to_numpy())
    np.testing.assert_array_equal(got.values[valid], raw.drop_nulls().to_numpy())  # NaN == NaN here
    for mean, std, fill in ((0.0, 1.0, 0.0), (3.25, 0.7, -1.5), (-1e6, 1e-3, 0.0)):
        expected = frame.select(normalised_expr(recipe.polars_expr(), mean, std, fill).alias("x"))["x"].to_numpy()
        normalised = normalised_numpy(got, mean, std, fill)
        assert normalised.dtype == np.float32
        np.testing.assert_array_equal(normalised.view(np.uint32), expected.view(np.uint32))


def test_smoothed_rate_gives_the_prior_without_history() -> None:
    rate = SmoothedRate("p", "n", prior=0.25, smoothing=4.0)
    got = rate.numpy({"p": Column(np.array([0, 1])), "n": Column(np.array([0, 3]))})
    assert got.values.tolist() == [0.25, 2.0 / 7] and got.valid is None


@pytest.mark.parametrize("zone", ZONES)
def test_hour_and_weekday_numpy_equals_polars_across_clock_changes(zone: str) -> None:
    """Every 7 minutes over two years (both clock changes of each year, half-hour DST in Lord Howe,
    a +5:45 offset in Kathmandu), plus single timestamps far apart (the sorted-hours path)."""
    grid = np.arange(1_640_995_200_000, 1_704_067_200_000, 7 * 60_000 + 13, dtype=np.int64)
    far = np.array([0, 86_399_999, 1_000_000_000_000, 1_900_000_000_000], dtype=np.int64)
    for ts in (grid, far, grid[:1]):
        frame = pl.DataFrame({"ts": pl.Series(ts).cast(pl.Datetime("ms", "UTC"))})
        columns = {"ts": Column(ts)}
        for derived in derived_columns([HOUR, WEEKDAY], zone):
            expected = frame.select(derived.polars_expr())[derived.name].to_numpy()
            np.testing.assert_array_equal(derived.numpy(columns).values, expected)


@pytest.mark.parametrize("zone", ZONES)
def test_local_time_of_single_hours_including_mid_hour_clock_changes(zone: str) -> None:
    """An online request's timestamps fall in one hour (the memoised path); Lord Howe changes its
    clock at half past a UTC hour, so that hour needs the per-minute offsets."""
    grid = np.arange(1_640_995_200_000, 1_704_067_200_000, 60_000 * 3 + 7, dtype=np.int64)
    utc = pl.Series(grid).cast(pl.Datetime("ms", "UTC"))
    local = utc.dt.convert_time_zone(zone).dt.replace_time_zone(None).dt.epoch("ms").to_numpy()
    hours = grid // 3_600_000
    offset = local - grid
    changing = np.unique(hours[1:][(offset[1:] != offset[:-1]) & (hours[1:] == hours[:-1])])
    sample = np.random.default_rng(0).choice(np.unique(hours), 20, replace=False)
    assert zone != "Australia/Lord_Howe" or len(changing) == 2, "the October change falls at 15:30 UTC"
    for hour in (*changing.tolist(), *sample.tolist()):
        rows = hours == hour
        np.testing.assert_array_equal(local_time(grid[rows], zoneinfo.ZoneInfo(zone)), local[rows])


def test_item_age_numpy_equals_polars() -> None:
    ts = np.array([0, 86_400_000, 5, 10**12, 10**12 + 1, 3 * 86_400_000 + 7], dtype=np.int64)
    upload = pl.Series(ITEM_UPLOAD, [0, 0, 10, None, 10**12, 12_345], dtype=pl.Int64).cast(pl.Datetime("ms"))
    frame = pl.DataFrame({"ts": pl.Series(ts).cast(pl.Datetime("ms")), ITEM_UPLOAD: upload})
    (age,) = derived_columns(["item_age_days"], "UTC")
    expected = frame.select(age.polars_expr())["item_age_days"]
    upload_column = Column.from_series(upload)
    assert upload_column is not None
    got = age.numpy({"ts": Column(ts), ITEM_UPLOAD: upload_column})
    assert got.valid is not None and got.valid.tolist() == expected.is_not_null().to_list()
    assert got.values[got.valid].tolist() == expected.drop_nulls().to_list()
    assert expected.to_list()[:3] == [0.0, 1.0, 0.0], "clipped at 0 before the upload"


def test_unknown_kinds_and_keys_are_refused_naming_the_entry() -> None:
    with pytest.raises(SpecError, match=r"categorical\[2\].encoding.kind: unknown categorical encoding kind 'hashed'"):
        CATEGORICAL.from_dict({"kind": "hashed", "source": "u"}, "spec.json: categorical[2].encoding")
    with pytest.raises(SpecError, match=r"dense_recipes.x.colum: not a key of a value dense recipe"):
        RECIPES.from_dict({"kind": "value", "colum": "x"}, "spec.json: extras.dense_recipes.x")
    with pytest.raises(SpecError, match="unknown derived column 'minute'"):
        derived_columns(["hour", "minute"], "UTC")
    with pytest.raises(SpecError, match="exactly one of 'values' and 'file'"):
        Vocab("u", "Int64", 2)


REFERENCE_SPEC_HASH = "5022d9c25ee54bbcb31065aa890dfa1b9e6f78f0465d52af0726c521a9168942"
"""FeatureSpec hash of the shipped KuaiRand sample's ETL (configs/etl/kuairand.yaml) as the code
before typed encodings wrote it (commit ce77652): the hash is an idempotency key and sits in the
ONNX metadata of existing models, so the typed spec must reproduce it exactly."""


def test_spec_round_trips_to_the_same_json_and_hash(etl_dir: Path) -> None:
    text = (etl_dir / "feature_spec.json").read_text()
    spec = FeatureSpec.read(etl_dir)
    assert spec.hash == json.loads(text)["hash"] == REFERENCE_SPEC_HASH
    assert spec.to_json() + "\n" == text
    assert FeatureSpec.from_json(spec.to_json()) == spec
    kinds = {type(f.encoding).__name__ for f in spec.categorical} | {type(d.recipe).__name__ for d in spec.dense}
    assert kinds == {"Vocab", "Range", "Buckets", "Log1pCount", "SmoothedRate", "Value"}
    assert "dense_recipes" not in spec.extras, "recipes live on the dense features in memory"


def test_a_spec_with_an_unknown_encoding_is_refused_naming_file_and_entry(etl_dir: Path, tmp_path: Path) -> None:
    d = json.loads((etl_dir / "feature_spec.json").read_text())
    d["categorical"][3]["encoding"]["kind"] = "hashed"
    (tmp_path / "feature_spec.json").write_text(json.dumps(d))
    with pytest.raises(SpecError, match=r"feature_spec.json: categorical\[3\].encoding.kind: unknown categorical"):
        FeatureSpec.read(tmp_path)
    d = json.loads((etl_dir / "feature_spec.json").read_text())
    d["extras"]["dense_recipes"]["user_1d_count"]["kind"] = "log2_count"
    with pytest.raises(SpecError, match=r"extras.dense_recipes.user_1d_count.kind: unknown dense recipe kind"):
        FeatureSpec.from_dict(d, "x.json")


def test_feature_encoder_numpy_path_equals_its_polars_path(etl_dir: Path) -> None:
    """The whole request sub-spec (context, hour, weekday, item age) and the user/item ones with
    their numeric inputs, on raw rows built from the snapshot with edge values injected."""
    spec = FeatureSpec.read(etl_dir)
    numeric = [f for f in spec.categorical if f.encoding is not None and f.encoding.vectorised]
    part = FeatureSpec(spec.tasks, tuple(numeric), (), spec.dense, spec.extras)
    encoder = FeatureEncoder(part, etl_dir)
    rng = np.random.default_rng(5)
    n = 600
    raw: dict[str, pl.Series] = {
        "user_id": pl.Series(rng.integers(0, 30_000, n)),
        "item_id": pl.Series(rng.integers(0, 30_000, n)),
        "ts": pl.Series(rng.integers(1_650_000_000_000, 1_652_000_000_000, n)).cast(pl.Datetime("ms", "UTC")),
    }
    for name in encoder.required_columns():
        if name not in raw:
            values = rng.integers(-2, 5000, n).astype(np.float64)
            values[rng.random(n) < 0.1] = np.nan
            raw[name] = pl.Series(name, values).fill_nan(None) if rng.random() < 0.5 else pl.Series(name, values)
    raw[ITEM_UPLOAD] = (raw["ts"].dt.epoch("ms") - rng.integers(-(10**9), 10**10, n)).cast(pl.Datetime("ms", "UTC"))
    frame = pl.DataFrame(raw)
    polars_out = encoder.encode(frame.lazy(), with_labels=False).collect()
    columns = {k: Column.from_series(s) for k, s in raw.items()}
    got = encoder.encode_numpy(columns, n)  # type: ignore[arg-type]
    expected_cat = polars_out.select(f.name for f in numeric).to_numpy().astype(np.int64)
    np.testing.assert_array_equal(got["categorical"], expected_cat)
    expected_dense = polars_out.select(d.name for d in spec.dense).to_numpy()
    np.testing.assert_array_equal(got["dense"].view(np.uint32), expected_dense.view(np.uint32))
    with pytest.raises(NotVectorised):
        FeatureEncoder(spec, etl_dir).encode_numpy(columns, n)  # type: ignore[arg-type]


@pytest.mark.parametrize("rows", [7, POLARS_LOG1P_MIN_ROWS - 1, POLARS_LOG1P_MIN_ROWS, 3000])
def test_log1p_has_polars_bits_on_both_sides_of_the_size_switch(rows: int) -> None:
    """Small arrays (an online request) take the C library's log1p per element, large ones Polars'
    vectorised one: the same bits as the Polars expression either way, edges included (-1 -> -inf,
    below -1 and NaN -> NaN, inf -> inf; the normalisation maps every NaN to the fill)."""
    edges = [-1.0, -1.5, -np.inf, np.nan, np.inf, 0.0, -0.0, 1e-300, 1e308, -0.999999]
    values = np.resize(np.array(edges + np.random.default_rng(rows).uniform(-1, 1e6, rows).tolist()), rows)
    expected = pl.Series(values, dtype=pl.Float64).log1p().to_numpy()
    got = log1p_like_polars(values)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))  # a NaN's sign bit may differ
    number = ~np.isnan(expected)
    np.testing.assert_array_equal(got[number].view(np.uint64), expected[number].view(np.uint64))
