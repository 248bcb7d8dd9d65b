"""Drawing one chunk of impressions from the world: ids, labels, watch time, timestamps, bad rows.

Labels given the true probabilities p = sigmoid(intercept + score) (:mod:`data.synthetic.world`):
click ~ Bernoulli(p_click), like ~ Bernoulli(p_like), finish ~ Bernoulli(p_finish), independent
given p. Watch time realises the finish draw exactly against the rule the ETL applies
(finish = watch_ms >= finish_ratio * duration_ms, DESIGN.md contract 2):

* finished: watch ratio uniform in [finish_ratio, 1) (80%) or a replay in [1, 2) (20%), and
  watch_ms >= ceil(finish_ratio * duration_ms);
* not finished: watch ratio finish_ratio * U^(1/c) with c = 0.15 + 0.8 p_finish (most impressions
  are skipped early, as in KuaiRand where the median watch ratio is ~0.1; higher affinity watches
  longer), and watch_ms <= ceil(finish_ratio * duration_ms) - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from aptrank.data.synthetic.bad_rows import BAD_KINDS, CLEAN, BadKind, Corruptor
from aptrank.data.synthetic.clock import epoch_ms, stratum_timestamps
from aptrank.data.synthetic.plan import Chunk
from aptrank.data.synthetic.world import World
from aptrank.data.synthetic.writer import TRUTH_COLUMNS

REPLAY_SHARE = 0.2


@dataclass(frozen=True)
class ChunkResult:
    table: pa.Table
    last_ts: int  # last clean timestamp drawn (the next chunk of the day starts after it)
    label_sums: np.ndarray  # (click, like, finish) summed over the chunk's clean rows
    clean_rows: int


def finish_threshold(duration_ms: np.ndarray, finish_ratio: float) -> np.ndarray:
    """Smallest integer watch time that counts as finished: ceil(finish_ratio * duration_ms)."""
    return np.ceil(finish_ratio * duration_ms.astype(np.float64)).astype(np.int64)


def watch_times(
    rng: np.random.Generator, duration_ms: np.ndarray, finish: np.ndarray, p_finish: np.ndarray, ratio: float
) -> np.ndarray:
    """Watch time in ms per impression, consistent with ``finish`` under the finish rule."""
    dur = duration_ms.astype(np.float64)
    threshold = finish_threshold(duration_ms, ratio)
    v = rng.random(len(dur))
    done = np.where(
        v < 1.0 - REPLAY_SHARE,
        ratio + (1.0 - ratio) * v / (1.0 - REPLAY_SHARE),
        1.0 + (v - (1.0 - REPLAY_SHARE)) / REPLAY_SHARE,
    )
    partial = ratio * v ** (1.0 / (0.15 + 0.8 * p_finish))
    full_ms = np.maximum(np.ceil(done * dur).astype(np.int64), threshold)
    partial_ms = np.minimum(np.floor(partial * dur).astype(np.int64), threshold - 1)
    return np.where(finish, full_ms, partial_ms)


def draw_chunk(
    world: World,
    chunk: Chunk,
    rng: np.random.Generator,
    corruptor: Corruptor,
    schema: pa.Schema,
    finish_ratio: float,
    after_ms: int,
) -> ChunkResult:
    """Draw ``chunk`` (its base rows, then its bad-row quota) as a table of ``schema``; timestamps
    start after ``after_ms``."""
    n = chunk.base_rows
    users, items, tabs = world.sample(rng, n)
    p = world.probabilities(users, items, tabs)
    labels = rng.random(p.shape) < p
    ts = stratum_timestamps(rng, n, *chunk.stratum, epoch_ms(chunk.day), after_ms)
    cols = {
        "user_id": users.astype(np.int64),
        "item_id": items.astype(np.int64),
        "ts": ts.copy(),
        "click": labels[:, 0].astype(np.int8),
        "like": labels[:, 1].astype(np.int8),
        "watch_ms": watch_times(rng, world.duration_ms[items], labels[:, 2], p[:, 2], finish_ratio),
        "tab": tabs.astype(np.int64),
    }
    if "p_click" in schema.names:
        cols.update({name: p[:, k].astype(np.float32) for k, name in enumerate(TRUTH_COLUMNS)})

    kinds = corruptor.assign(rng, users, items, chunk.quota)
    clean = (kinds == CLEAN) | (kinds == BAD_KINDS.index(BadKind.DUPLICATE))
    sums = labels[clean].sum(axis=0).astype(np.int64)
    cols, masks = corruptor.apply(rng, cols, kinds)

    arrays = [pa.array(cols[f.name], type=f.type, mask=masks.get(f.name)) for f in schema]
    table = pa.Table.from_arrays(arrays, schema=schema)
    return ChunkResult(table, int(ts[-1]) if n else after_ms, sums, int(clean.sum()))
