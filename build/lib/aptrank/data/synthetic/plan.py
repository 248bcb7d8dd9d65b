"""The chunk plan: how a run's rows are split into days, part files and chunks, and which chunk
carries how many bad rows of each kind, all fixed before any event is drawn.

Rows are planned as *base rows* (the rows drawn from the world); injected duplicates come on top,
right after their originals, so ``events = base rows + duplicates`` exactly. Days get base rows in
proportion to the weekday pattern, a day is cut into parts of at most ``rows_per_part`` base rows
and a part into near-equal chunks of at most ``chunk_size`` base rows. Bad-row quotas are dealt to
chunks by sequential multivariate hypergeometric draws (sampling the run's fixed per-kind totals
without replacement), so the totals are exact and their placement is random.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from aptrank.data.synthetic.bad_rows import BAD_KINDS, BadKind, bad_totals
from aptrank.data.synthetic.clock import day_weights, split_evenly
from aptrank.data.synthetic.config import GeneratorConfig


@dataclass(frozen=True)
class Chunk:
    """One unit of generation and writing (one Parquet row group)."""

    index: int
    day: dt.date
    part: int
    base_rows: int
    stratum: tuple[float, float]  # probability range of the day's time-of-day distribution
    quota: np.ndarray  # bad rows per kind (BAD_KINDS order; duplicate = originals to copy)

    @property
    def rows(self) -> int:
        """Rows written for this chunk (base rows plus duplicate copies)."""
        return self.base_rows + int(self.quota[BAD_KINDS.index(BadKind.DUPLICATE)])


def _pieces(total: int, limit: int) -> np.ndarray:
    n = -(-total // limit)
    return split_evenly(total, np.ones(n)) if n else np.zeros(0, dtype=np.int64)


def make_plan(cfg: GeneratorConfig, rng: np.random.Generator) -> list[Chunk]:
    """The chunks of a run, in writing order; ``rng`` deals the bad-row quotas."""
    totals = bad_totals(cfg.events, cfg.bad_rows)
    base_total = cfg.events - int(totals[BAD_KINDS.index(BadKind.DUPLICATE)])
    pool = np.append(totals, base_total - totals.sum())  # bad kinds ..., clean
    chunks: list[Chunk] = []
    for d, day_rows in enumerate(split_evenly(base_total, day_weights(cfg.start_date, cfg.days))):
        day = cfg.start_date + dt.timedelta(days=d)
        done = 0
        for part, part_rows in enumerate(_pieces(int(day_rows), cfg.rows_per_part)):
            for size in _pieces(int(part_rows), cfg.chunk_size):
                draw = rng.multivariate_hypergeometric(pool, int(size), method="marginals")
                pool = pool - draw
                stratum = (done / day_rows, (done + size) / day_rows)
                chunks.append(Chunk(len(chunks), day, part, int(size), stratum, draw[:-1]))
                done += int(size)
    return chunks
