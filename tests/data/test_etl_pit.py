"""Point-in-time counts and history lists on the hand-made log, every value worked out by hand.

Rows in time order (hours after T0; c/l/f = click/like/finish):
r0 u1 i10 a100 t0 (1,0,1) | r1 u1 i11 a100 t1 (0,0,0) | r2 u2 i10 a100 t1 (1,1,1)
r3 u1 i12 a101 t30 (1,1,0) | r4 u1 i10 a100 t30 (1,0,1) | r5 u2 i12 a101 t30 (0,0,1)
r6 u2 i11 a100 t48 (1,0,0) | r7 u1 i11 a100 t200 (0,1,1)
Windows: 1d = [t-24h, t), 7d = [t-168h, t), all = [-inf, t); events at exactly t never count.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from etl_helpers import HANDMADE_ROWS, at, events_frame

from aptrank.data.etl.config import HistoryConfig
from aptrank.data.etl.history import ITEM_INDEX, gather_lists, history_pointers, lists_for
from aptrank.data.etl.pit import KeyTimeIndex, pit_counts, with_queries
from aptrank.data.etl.prior import StatePrior

FINISH = [1, 0, 1, 0, 1, 1, 0, 1]
AUTHORS = {10: 100, 11: 100, 12: 101}
Z = (0, 0, 0, 0)
# (n, click, like, finish) per row r0..r7 and window
EXPECTED = {
    "user": {
        "1d": [Z, (1, 1, 0, 1), Z, Z, Z, Z, (1, 0, 0, 1), Z],
        "7d": [Z, (1, 1, 0, 1), Z, (2, 1, 0, 1), (2, 1, 0, 1), (1, 1, 1, 1), (2, 1, 1, 2), Z],
        "all": [Z, (1, 1, 0, 1), Z, (2, 1, 0, 1), (2, 1, 0, 1), (1, 1, 1, 1), (2, 1, 1, 2), (4, 3, 1, 2)],
    },
    "item": {
        "1d": [Z, Z, (1, 1, 0, 1), Z, Z, Z, Z, Z],
        "7d": [Z, Z, (1, 1, 0, 1), Z, (2, 2, 1, 2), Z, (1, 0, 0, 0), (1, 1, 0, 0)],
        "all": [Z, Z, (1, 1, 0, 1), Z, (2, 2, 1, 2), Z, (1, 0, 0, 0), (2, 1, 0, 0)],
    },
    "author": {
        "1d": [Z, (1, 1, 0, 1), (1, 1, 0, 1), Z, Z, Z, (1, 1, 0, 1), Z],
        "7d": [Z, (1, 1, 0, 1), (1, 1, 0, 1), (0, 0, 0, 0), (3, 2, 1, 2), Z, (4, 3, 1, 3), (1, 1, 0, 0)],
        "all": [Z, (1, 1, 0, 1), (1, 1, 0, 1), Z, (3, 2, 1, 2), Z, (4, 3, 1, 3), (5, 4, 1, 3)],
    },
}
KEYS = {"user": "user_id", "item": "item_id", "author": "author_id"}
TASKS = ["click", "like", "finish"]


def labelled() -> pl.DataFrame:
    """The hand-made events with labels and authors, sorted like the ETL sorts (ts, input row)."""
    ev = events_frame(HANDMADE_ROWS).with_row_index("_row")
    return ev.with_columns(
        pl.col("click").alias("label_click"),
        pl.col("like").alias("label_like"),
        pl.Series("label_finish", FINISH, dtype=pl.Int8),
        pl.col("item_id").replace_strict(AUTHORS).alias("author_id"),
        pl.col("item_id").alias(ITEM_INDEX),
    ).sort(["ts", "_row"])


@pytest.mark.parametrize("entity", ["user", "item", "author"])
def test_counts_match_hand_computation(entity: str) -> None:
    key = KEYS[entity]
    ev = labelled()
    frame = ev.select(key, "ts", pl.lit(1, dtype=pl.UInt8).alias("_n"), *[f"label_{t}" for t in TASKS])
    got = pit_counts(frame, key, entity, ["1d", "7d", "all"], TASKS)
    for window, rows in EXPECTED[entity].items():
        cols = [f"{entity}_{window}_n", *[f"{entity}_{window}_{t}_pos" for t in TASKS]]
        assert list(got.select(cols).iter_rows()) == rows, f"{entity} {window}"
    assert all(got[c].dtype == pl.UInt32 for c in got.columns)


def test_query_rows_see_everything_before_and_count_nothing() -> None:
    """Snapshot queries at cutoff = 200 h + 1 ms (users 1, 2 and 3, who has no events)."""
    ev = labelled().lazy()
    keys = pl.DataFrame({"user_id": [1, 2, 3]}).lazy()
    labels = [f"label_{t}" for t in TASKS]
    frame = with_queries(ev.select("user_id", "ts", *labels), keys, "user_id", at(200) + dt.timedelta(milliseconds=1))
    frame = frame.collect()
    got = pl.concat(
        [frame.select("user_id"), pit_counts(frame, "user_id", "user", ["1d", "7d", "all"], TASKS)],
        how="horizontal",
        strict=True,
    )
    assert got.height == 8 + 3
    snap = got.slice(8)
    assert snap["user_id"].to_list() == [1, 2, 3]
    # u1: 1d and 7d hold only r7 (0,1,1); all holds r0, r1, r3, r4, r7
    assert snap.row(0)[1:] == (1, 0, 1, 1, 1, 0, 1, 1, 5, 3, 2, 3)
    # u2: 1d empty (last event 48 h); 7d holds r6 (1,0,0); all r2, r5, r6
    assert snap.row(1)[1:] == (0, 0, 0, 0, 1, 1, 0, 0, 3, 2, 1, 2)
    assert snap.row(2)[1:] == (0,) * 12
    # the query rows do not change the events' own counts
    alone = ev.select("user_id", pl.lit(1, dtype=pl.UInt8).alias("_n"), "ts", *labels).collect()
    assert got.slice(0, 8).drop("user_id").equals(pit_counts(alone, "user_id", "user", ["1d", "7d", "all"], TASKS))


def test_counts_match_brute_force_on_random_log() -> None:
    """Random log with many ts ties and null keys against an O(n^2) reference."""
    rng = np.random.default_rng(7)
    n = 300
    keys = rng.integers(0, 8, n).astype(object)
    keys[rng.random(n) < 0.05] = None
    hours = np.sort(rng.integers(0, 60, n)) * 0.5  # many ties
    click = rng.integers(0, 2, n)
    frame = pl.DataFrame(
        {
            "k": pl.Series(list(keys), dtype=pl.Int64),
            "ts": [at(h) for h in hours],
            "_n": np.ones(n, dtype=np.uint8),
            "label_click": click.astype(np.int8),
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("ms"))
    got = pit_counts(frame, "k", "e", ["1h", "1d", "all"], ["click"])
    for i in range(n):
        for w, span in (("1h", 1.0), ("1d", 24.0), ("all", float("inf"))):
            before = [
                j
                for j in range(n)
                if keys[i] is not None and keys[j] == keys[i] and hours[i] - span <= hours[j] < hours[i]
            ]
            assert got[f"e_{w}_n"][i] == len(before), (i, w)
            assert got[f"e_{w}_click_pos"][i] == int(click[before].sum()), (i, w)


def test_string_keys_give_the_same_counts() -> None:
    ev = labelled()
    labels = [f"label_{t}" for t in TASKS]
    ints = ev.select("user_id", "ts", pl.lit(1, dtype=pl.UInt8).alias("_n"), *labels)
    strings = ints.with_columns(pl.format("u{}", "user_id").alias("user_id"))
    windows = ["1d", "7d", "all"]
    assert pit_counts(strings, "user_id", "user", windows, TASKS).equals(
        pit_counts(ints, "user_id", "user", windows, TASKS)
    )


def test_null_keys_count_nothing() -> None:
    frame = pl.DataFrame(
        {"author_id": [None, None, 7], "ts": [at(0), at(1), at(2)], "_n": [1, 1, 1], "label_click": [1, 1, 1]}
    ).with_columns(pl.col("ts").dt.cast_time_unit("ms"))
    got = pit_counts(frame, "author_id", "author", ["all"], ["click"])
    assert got.rows() == [(0, 0), (0, 0), (0, 0)]


def _lists(h: HistoryConfig, frame: pl.DataFrame) -> list[list[int]]:
    index = KeyTimeIndex(frame, "user_id", ["all"])
    flat, ptr = history_pointers(index, h)
    return lists_for(ptr, flat, h).to_list()


def test_history_lists_most_recent_first_strictly_before() -> None:
    frame = labelled()
    # u1 clicks: r0 i10 @0, r3 i12 @30, r4 i10 @30 (tie: later input row first); u2 clicks: r2 i10 @1, r6 i11 @48
    assert _lists(HistoryConfig(name="clicked", task="click", max_len=2), frame) == [
        [],
        [10],
        [],
        [10],
        [10],
        [10],
        [10],
        [10, 12],
    ]
    # u1 likes: r3 i12 @30, r7 i11 @200; u2 likes: r2 i10 @1
    assert _lists(HistoryConfig(name="liked", task="like", max_len=3), frame) == [[], [], [], [], [], [10], [10], [12]]


def test_history_at_cutoff_and_for_unknown_users() -> None:
    """Snapshot query rows (weight 0, labels 0) for users 1, 2 and 3 at 200 h + 1 ms."""
    events = labelled().lazy().select("user_id", "ts", "label_click", "label_like", ITEM_INDEX)
    keys = pl.DataFrame({"user_id": [1, 2, 3]}).lazy()
    frame = with_queries(events, keys, "user_id", at(200) + dt.timedelta(milliseconds=1), [ITEM_INDEX]).collect()
    assert _lists(HistoryConfig(name="clicked", task="click", max_len=20), frame)[8:] == [[10, 12, 10], [11, 10], []]
    assert _lists(HistoryConfig(name="liked", task="like", max_len=1), frame)[8:] == [[11], [10], []]


def test_history_flat_items_are_one_block_per_user() -> None:
    frame = labelled()
    index = KeyTimeIndex(frame, "user_id", ["all"])
    flat, ptr = history_pointers(index, HistoryConfig(name="clicked", task="click", max_len=2))
    assert flat.tolist() == [10, 12, 10, 10, 11]  # u1 @0, @30, @30 then u2 @1, @48
    assert ptr.rows() == [(-1, 0), (0, 1), (2, 0), (0, 1), (0, 1), (3, 1), (3, 1), (2, 2)]


def test_gather_lists_reads_backwards_from_end() -> None:
    items = np.array([5, 6, 7, 8])
    got = gather_lists(items, np.array([2, -1, 3, 0]), np.array([3, 0, 2, 1]), "x")
    assert got.to_list() == [[7, 6, 5], [], [8, 7], [5]]
    assert got.dtype == pl.List(pl.Int64)


@pytest.mark.parametrize("first_query", [1, 3, 7])
def test_rows_before_first_query_only_count(first_query: int) -> None:
    """With ``first_query`` the earlier rows count but get no answer: the answers are the hand-worked
    values of the later rows (counts and history lists)."""
    frame = labelled().with_columns(pl.lit(1, dtype=pl.UInt8).alias("_n"))
    for entity, key in KEYS.items():
        index = KeyTimeIndex(frame, key, ["1d", "7d", "all"], first_query=first_query)
        got = pit_counts(frame, key, entity, ["1d", "7d", "all"], TASKS, index)
        assert got.height == 8 - first_query
        for w in ("1d", "7d", "all"):
            cols = [f"{entity}_{w}_n", *(f"{entity}_{w}_{t}_pos" for t in TASKS)]
            assert got.select(cols).rows() == EXPECTED[entity][w][first_query:], (entity, w)
    h = HistoryConfig(name="clicked", task="click", max_len=2)
    flat, ptr = history_pointers(KeyTimeIndex(frame, "user_id", ["all"], first_query=first_query), h)
    assert lists_for(ptr, flat, h).to_list() == [[], [10], [], [10], [10], [10], [10], [10, 12]][first_query:]


@pytest.mark.parametrize("split", [1, 3, 7])
def test_state_by_search_equals_state_rows_in_front(split: int) -> None:
    """An incremental day's index (:mod:`data.etl.prior`): the rows before ``split`` as a key-sorted
    state (plus a carry row for user 1: 5 older events, 2 clicks, 1 finish) and only the later rows
    in the frame give the hand-worked answers of the later rows, the carry added to the ``all``
    window of user 1, and the same history lists."""
    frame = labelled().with_columns(pl.lit(1, dtype=pl.UInt8).alias("_n"))
    carry_user = {"_n": 5, "label_click": 2, "label_like": 0, "label_finish": 1}
    day = frame.slice(split)
    for entity, key in KEYS.items():
        state = frame.slice(0, split).sort(key, maintain_order=True)
        carry = carry_user if entity == "user" else dict.fromkeys(carry_user, 0)
        clicks = state.filter(pl.col("label_click") == 1)
        prior = StatePrior(
            state[key],
            state["ts"].dt.epoch("ms").to_numpy(),
            {f"label_{t}": state[f"label_{t}"].to_numpy() for t in TASKS},
            pl.Series(key, [1 if entity == "user" else 999]),
            {c: np.array([v], dtype=np.uint32) for c, v in carry.items()},
            {"label_click": (clicks["user_id"], clicks[ITEM_INDEX].to_numpy())},
        )
        index = KeyTimeIndex(day, key, ["1d", "7d", "all"], prior=prior)
        got = pit_counts(day, key, entity, ["1d", "7d", "all"], TASKS, index)
        for w in ("1d", "7d", "all"):
            cols = [f"{entity}_{w}_n", *(f"{entity}_{w}_{t}_pos" for t in TASKS)]
            extra = [tuple(carry.values()) if w == "all" and u == 1 else Z for u in day["user_id"]]
            want = [
                tuple(map(sum, zip(a, b, strict=True))) for a, b in zip(EXPECTED[entity][w][split:], extra, strict=True)
            ]
            assert got.select(cols).rows() == want, (entity, w)
        if entity == "user":
            h = HistoryConfig(name="clicked", task="click", max_len=2)
            flat, ptr = history_pointers(index, h)
            assert lists_for(ptr, flat, h).to_list() == [[], [10], [], [10], [10], [10], [10], [10, 12]][split:]
