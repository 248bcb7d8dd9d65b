"""The ETL's feature set written in idiomatic pandas: the baseline of ``bench/etl.py``.

Same input (a canonical folder), same config (``data.etl.config.EtlConfig``) and the same example
columns as ``aptrank etl`` (validation with the same rule order, click/like/finish labels, time
split, train-split vocabularies, point-in-time counts and smoothed rates per user/item/author and
window, last-N history lists, hour/weekday/duration bucket/item age, side attributes, train-split
normalisation), written independently of ``data.etl``'s code with vectorised pandas: ``groupby``
+ time-based ``rolling(closed="left")`` for the windows, ``groupby().shift`` + ``merge_asof`` for the
histories, ``map`` for vocabularies; no Python loop over rows. It writes no snapshot and no reject
file (less work than the Polars ETL does, so the comparison favours pandas). ``bench/etl.py``
checks that its examples equal the Polars ETL's on the same input.

Only vocabulary encodings are implemented (the synthetic config uses no hashing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aptrank.data.etl.config import EtlConfig, window_ms

DAY = pd.Timedelta(days=1)
ALL_PRIOR = pd.Timedelta(days=100 * 365)
ENTITIES = {"user": "user_id", "item": "item_id", "author": "author_id"}


def _read(src: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    files = sorted((src / "events").rglob("*.parquet")) or [src / "events.parquet"]
    events = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return events, pd.read_parquet(src / "items.parquet"), pd.read_parquet(src / "users.parquet")


def _accepted(ev: pd.DataFrame, items: pd.DataFrame, cfg: EtlConfig) -> pd.DataFrame:
    """Rows that pass every rule (same order as data.etl.validate; only counts matter here)."""
    start = pd.Timestamp(cfg.local_time(cfg.time_range.start)) if cfg.time_range.start else None
    end = pd.Timestamp(cfg.local_time(cfg.time_range.end)) if cfg.time_range.end else None
    bad = ev["user_id"].isna() | ev["item_id"].isna() | (ev["user_id"] < 0) | (ev["item_id"] < 0) | ev["ts"].isna()
    if start is not None:
        bad |= ev["ts"] < start
    if end is not None:
        bad |= ev["ts"] >= end
    for col in ["click", "like", *[t.column for t in cfg.tasks if t.kind == "binary_column"]]:
        bad |= ~ev[col].isin([0, 1])
    bad |= ev["watch_ms"] < 0
    if cfg.validation.require_item_metadata:
        bad |= ~ev["item_id"].isin(items["item_id"])
    valid = ev[~bad]
    return valid[~valid.duplicated(["user_id", "item_id", "ts"], keep="first")]


def _vocab(train: pd.Series) -> pd.Series:
    counts = train.value_counts().rename("count").rename_axis("value").reset_index()
    counts = counts.sort_values(["count", "value"], ascending=[False, True], kind="stable")
    return pd.Series(np.arange(1, len(counts) + 1), index=counts["value"].to_numpy())


def _encode(values: pd.Series, vocab: pd.Series) -> np.ndarray:
    return values.map(vocab).fillna(0).to_numpy(dtype=np.int64)


def _rolling_counts(df: pd.DataFrame, key: str, cols: list[str], window: str) -> pd.DataFrame:
    ms = window_ms(window)
    period = ALL_PRIOR if ms is None else pd.Timedelta(milliseconds=ms)
    keyed = df[df[key].notna()].sort_values(key, kind="stable")  # (key, ts) order: rows are in ts order
    rolled = keyed.groupby(key).rolling(period, on="ts", closed="left", min_periods=0)[cols].sum()
    return pd.DataFrame(rolled.to_numpy(), index=keyed.index, columns=cols).reindex(df.index).fillna(0.0)


def _history(acc: pd.DataFrame, item_idx: np.ndarray, task: str, max_len: int) -> pa.Array:
    pos = acc.loc[acc[f"label_{task}"] == 1, ["user_id", "ts"]].assign(item=item_idx[acc[f"label_{task}"] == 1])
    pos = pos.sort_values("user_id", kind="stable")
    recent = np.column_stack([pos.groupby("user_id", sort=False)["item"].shift(i).to_numpy() for i in range(max_len)])
    kept = pos.assign(row=np.arange(len(pos)))[~pos.duplicated(["user_id", "ts"], keep="last")]
    queries = acc[["ts", "user_id"]].assign(order=np.arange(len(acc)))
    hit = pd.merge_asof(
        queries,
        kept[["ts", "user_id", "row"]].sort_values("ts", kind="stable"),
        on="ts",
        by="user_id",
        direction="backward",
        allow_exact_matches=False,
    ).sort_values("order")
    rows = hit["row"].to_numpy()
    has = ~np.isnan(rows)
    matrix = np.full((len(acc), max_len), np.nan)
    matrix[has] = recent[rows[has].astype(np.int64)]
    valid = ~np.isnan(matrix)
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))])
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(matrix[valid].astype(np.int64)))


def _standardise(values: pd.Series, train_rows: int) -> np.ndarray:
    x = values.to_numpy(dtype=np.float64)
    train = x[:train_rows][~np.isnan(x[:train_rows])]
    mean = float(f"{train.mean():.10g}") if len(train) else 0.0
    std = float(f"{train.std():.10g}") if len(train) and train.std() > 1e-12 else 1.0
    return np.nan_to_num((x - mean) / std, nan=0.0).astype(np.float32)


def run_pandas_etl(src: Path, out: Path, cfg: EtlConfig) -> dict[str, Any]:
    """Build and write train/valid/test examples from the canonical folder ``src``."""
    ev, items, users = _read(src)
    items = items.rename(columns={"duration_ms": "item_duration_ms", "upload_ts": "item_upload_ts"})
    f = cfg.features
    user_cols = [*f.user_attributes.categorical, *f.user_attributes.dense]
    acc = (
        _accepted(ev, items, cfg)
        .merge(items, on="item_id", how="left")
        .merge(users[["user_id", *user_cols]], on="user_id", how="left")
    )
    acc = acc.sort_values("ts", kind="stable").reset_index(drop=True)
    duration = "duration_ms" if "duration_ms" in ev.columns else "item_duration_ms"
    for t in cfg.tasks:
        if t.kind == "binary_column":
            acc[f"label_{t.name}"] = acc[str(t.column)].astype(np.int8)
        else:
            d = acc[duration]
            acc[f"label_{t.name}"] = ((acc["watch_ms"] >= float(t.min_ratio or 0) * d) & (d > 0)).astype(np.int8)
    n = len(acc)
    s = cfg.splits
    if s.valid_start and s.test_start:
        cuts = [int(acc["ts"].searchsorted(pd.Timestamp(cfg.local_time(v)))) for v in (s.valid_start, s.test_start)]
    else:
        quantiles = (1 - s.valid_fraction - s.test_fraction, 1 - s.test_fraction)
        starts = [acc["ts"].iloc[min(int(n * q), n - 1)] for q in quantiles]
        cuts = [int(acc["ts"].searchsorted(v)) for v in starts]
    train = acc.iloc[: cuts[0]]
    tasks = cfg.task_names
    labels = [f"label_{t}" for t in tasks]
    prior = {t: float(train[f"label_{t}"].mean()) for t in tasks}

    cols: dict[str, Any] = {"user_id": acc["user_id"], "item_id": acc["item_id"], "ts": acc["ts"]}
    categorical = {"user": "user_id", "item": "item_id", "author": "author_id"}
    for c in [*f.context, *f.item_attributes.categorical, *f.user_attributes.categorical]:
        categorical[c] = c
    vocabs = {name: _vocab(train[src_col]) for name, src_col in categorical.items()}
    for name, src_col in categorical.items():
        cols[name] = _encode(acc[src_col], vocabs[name])
    local = acc["ts"].dt.tz_convert(cfg.time_zone)
    cols["hour"] = local.dt.hour.to_numpy(dtype=np.int64) + 1
    cols["weekday"] = local.dt.weekday.to_numpy(dtype=np.int64) + 1
    bounds = np.array([round(b * 1000) for b in f.duration_buckets_s], dtype=np.float64)
    dur = acc["item_duration_ms"].to_numpy(dtype=np.float64)
    cols["duration_bucket"] = np.where(dur >= 0, np.searchsorted(bounds, dur, side="right") + 1, 0)

    item_idx = cols["item"]
    for h in f.history:
        cols[h.name] = _history(acc, item_idx, h.task, h.max_len)

    dense: dict[str, pd.Series] = {}
    base = acc[["ts", *labels]].assign(_n=1.0, **{c: acc[c].astype(np.float64) for c in labels})
    for e in f.entities:
        key = ENTITIES[e]
        frame = base.assign(**{key: acc[key]})
        for w in f.windows:
            sums = _rolling_counts(frame, key, ["_n", *labels], w)
            dense[f"{e}_{w}_count"] = np.log1p(sums["_n"])
            for t in tasks:
                rate = (sums[f"label_{t}"] + f.smoothing * prior[t]) / (sums["_n"] + f.smoothing)
                dense[f"{e}_{w}_{t}_rate"] = rate
    age = (acc["ts"] - acc["item_upload_ts"]) / DAY
    dense["item_age_days"] = np.log1p(age.clip(lower=0.0))
    for attrs in (f.item_attributes, f.user_attributes):
        for c in attrs.dense:
            v = acc[c].astype(np.float64)
            dense[c] = np.log1p(v.clip(lower=0.0)) if c in attrs.log1p else v
    for name, values in dense.items():
        cols[name] = _standardise(pd.Series(values), cuts[0])
    for c in labels:
        cols[c] = acc[c].to_numpy()

    table = pa.table({k: v if isinstance(v, pa.Array | pd.Series) else np.asarray(v) for k, v in cols.items()})
    ranges = {"train": (0, cuts[0]), "valid": (cuts[0], cuts[1] - cuts[0]), "test": (cuts[1], n - cuts[1])}
    for split, (offset, length) in ranges.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(offset, length), out / split / "part-00000.parquet", compression="lz4")
    return {"input_rows": len(ev), "accepted_rows": n, "split_rows": {k: v[1] for k, v in ranges.items()}}
