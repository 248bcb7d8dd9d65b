"""The scorers' feature lookup: exactly the ETL lookup's output, defaults counted, torch-free."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aptrank.data.spec import INPUT_NAMES
from aptrank.data.tensors import model_inputs
from aptrank.serving.errors import CandidateError, ServingError
from aptrank.serving.features import ITEM, REQUEST, USER, CandidateFeatures


@pytest.fixture(scope="module")
def features(etl_dir: Path) -> CandidateFeatures:
    return CandidateFeatures(etl_dir)


def _with_unknowns(candidates: pl.DataFrame) -> pl.DataFrame:
    """Real rows plus an unseen user, an unseen item, a null user, a string id and an unseen tab."""
    ts = candidates["ts"][0]
    extra = pl.DataFrame(
        {
            "user_id": [10**12, candidates["user_id"][0], None, candidates["user_id"][1]],
            "item_id": [candidates["item_id"][0], 10**12, candidates["item_id"][1], candidates["item_id"][2]],
            "ts": [ts] * 4,
            "tab": [1, 1, 1, 10**6],
        },
        schema=candidates.schema,
    )
    return pl.concat([candidates, extra])


def test_lookup_equals_the_etl_lookup(features: CandidateFeatures, candidates: pl.DataFrame) -> None:
    frame = _with_unknowns(candidates)
    reference = features.lookup.build(frame)  # data.snapshot.FeatureLookup: the ETL's own code
    expected = model_inputs(reference.frame, features.spec)
    got = features.encode(frame)
    for name in INPUT_NAMES:
        assert got.arrays[name].dtype == expected[name].dtype
        assert np.array_equal(got.arrays[name], expected[name]), name
    assert got.missing_rows == reference.missing_rows
    assert got.missing_rows["user"] == 2 and got.missing_rows["item"] == 1  # unseen + null user; unseen item
    assert got.oov == reference.oov
    assert got.oov["tab"] == 1


def test_batch_composition_does_not_change_a_row(features: CandidateFeatures, candidates: pl.DataFrame) -> None:
    frame = _with_unknowns(candidates.head(40))
    whole = features.encode(frame)
    for i in (0, 17, frame.height - 3, frame.height - 1):
        one = features.encode(frame.slice(i, 1))
        for name in INPUT_NAMES:
            assert np.array_equal(one.arrays[name][0], whole.arrays[name][i])


@pytest.mark.parametrize("unknowns", [False, True], ids=["all-known", "with-unknowns"])
def test_blocks_are_the_whole_encoding_sliced(
    features: CandidateFeatures, candidates: pl.DataFrame, unknowns: bool
) -> None:
    frame = _with_unknowns(candidates) if unknowns else candidates
    whole = features.encode(frame)
    blocks = list(features.encode_blocks(frame, 1024))
    assert [b.rows for b in blocks] == [1024, 1024, frame.height - 2048]
    for name in INPUT_NAMES:
        assert np.array_equal(np.concatenate([b.arrays[name] for b in blocks]), whole.arrays[name]), name
    total = blocks[0].counts() + blocks[1].counts() + blocks[2].counts()
    assert total == whole.counts()
    assert total.missing_rows["user"] == (2 if unknowns else 0)
    empty = list(features.encode_blocks(frame.head(0), 1024))
    assert [b.counts() for b in empty] == [features.encode(frame.head(0)).counts()]
    assert empty[0].counts().missing_rows == {"user": 0, "item": 0, "author": 0}
    with pytest.raises(ValueError, match="block_rows must be >= 1"):
        next(features.encode_blocks(frame, 0))


def test_features_are_split_by_what_they_read(features: CandidateFeatures) -> None:
    sides = features.sides
    assert {sides[f] for f in ("user", "user_clicked_items", "user_7d_click_rate", "register_days")} == {USER}
    assert {sides[f] for f in ("item", "author", "category", "duration_bucket", "author_all_count")} == {ITEM}
    assert {sides[f] for f in ("tab", "hour", "weekday", "item_age_days")} == {REQUEST}
    assert set(sides) == set(features.spec.feature_names())


def test_self_check_catches_a_divergent_lookup(features: CandidateFeatures, etl_dir: Path) -> None:
    broken = CandidateFeatures(etl_dir, self_check=False)
    assert broken.users is not None
    broken.users.arrays["dense"] = broken.users.arrays["dense"] + 1.0
    with pytest.raises(ServingError, match="differs from data.snapshot.FeatureLookup on 'dense'"):
        broken.check_against_full_lookup()


def test_missing_candidate_columns_are_named(features: CandidateFeatures, candidates: pl.DataFrame) -> None:
    with pytest.raises(CandidateError, match=r"lack required columns \['tab'\]"):
        features.encode(candidates.drop("tab"))


def test_scoring_path_never_imports_torch(model_path: Path, etl_dir: Path) -> None:
    code = textwrap.dedent(f"""
        import json, sys
        from aptrank.serving.holder import ModelHolder
        from aptrank.serving.model_source import ModelSource
        from aptrank.serving.service import RankService
        holder = ModelHolder(ModelSource({str(model_path)!r}), features_dir={str(etl_dir)!r})
        holder.refresh()
        service = RankService(holder)
        body = json.dumps({{"user_id": 712, "item_ids": [5239, 6831], "ts": 1651300000000, "context": {{"tab": 1}}}})
        reply = service.rank(body.encode())
        service.close()
        holder.close()
        print(reply.status, "torch" in sys.modules, "torchrec" in sys.modules)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    assert out.stdout.split() == ["200", "False", "False"]


def _etl_arrays(features: CandidateFeatures, frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return model_inputs(features.lookup.build(frame).frame, features.spec)


def test_numpy_request_side_equals_the_etl_lookup(features: CandidateFeatures) -> None:
    """The request-side features go through the typed encodings' numpy functions (the demo ETL's
    context, hour, weekday and item age all have one) and equal the ETL lookup on a year of
    timestamps, every tab value, an unseen one and null."""
    assert features.request_numpy
    frame = features.probe(2048)
    assert frame["tab"].null_count() > 0
    got, expected = features.encode(frame), _etl_arrays(features, frame)
    for name in INPUT_NAMES:
        assert np.array_equal(got.arrays[name], expected[name]), name


def test_integer_ts_float_context_and_single_rows(features: CandidateFeatures) -> None:
    frame = features.probe(64).with_columns(pl.col("ts").dt.epoch("ms"))
    expected = _etl_arrays(features, frame)
    for i in (0, 31, 63):
        one = features.encode(frame.slice(i, 1))
        for name in INPUT_NAMES:
            assert np.array_equal(one.arrays[name][0], expected[name][i]), name
    as_float = frame.with_columns(pl.col("tab").cast(pl.Float64) + pl.Series([0.0, 0.5, -0.5, float("nan")] * 16))
    got, expected = features.encode(as_float), _etl_arrays(features, as_float)
    for name in INPUT_NAMES:
        assert np.array_equal(got.arrays[name], expected[name]), name


def test_string_context_goes_through_the_polars_path(features: CandidateFeatures) -> None:
    frame = features.probe(64)
    as_text = frame.with_columns(pl.col("tab").cast(pl.String))  # the ETL's cast reads "3" as 3
    u, i = features._find(as_text)
    assert features._request_numpy(as_text, u, i) is None
    got, expected = features.encode(as_text), _etl_arrays(features, as_text)
    for name in INPUT_NAMES:
        assert np.array_equal(got.arrays[name], expected[name]), name
