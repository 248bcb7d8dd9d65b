"""Dynamic batching: coalesced requests get exactly their unbatched scores; errors reach every waiter."""

from __future__ import annotations

import threading

import numpy as np
import polars as pl
import pytest

from aptrank.serving.batcher import Batcher
from aptrank.serving.scorer import Scored, Scorer


class Gated:
    """A scorer whose first call waits for ``gate`` (so later submissions queue up), recording calls."""

    def __init__(self, inner: Scorer, fail: bool = False) -> None:
        self.inner, self.fail = inner, fail
        self.gate, self.entered = threading.Event(), threading.Event()
        self.sizes: list[int] = []

    def score(self, frame: pl.DataFrame) -> Scored:
        self.entered.set()
        self.gate.wait(timeout=30)
        self.sizes.append(frame.height)
        if self.fail:
            raise RuntimeError("model exploded")
        return self.inner.score(frame)


def _submit(batcher: Batcher, scorer: Gated, frames: list[pl.DataFrame]) -> tuple[list, list[threading.Thread]]:
    out: list = [None] * len(frames)

    def run(i: int) -> None:
        try:
            out[i] = batcher.score(scorer, frames[i])  # type: ignore[arg-type]
        except RuntimeError as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(frames))]
    return out, threads


def test_queued_requests_are_scored_together_with_unbatched_results(scorer: Scorer, candidates: pl.DataFrame) -> None:
    frames = [candidates.slice(40 * i, 5 + 7 * i) for i in range(6)]
    gated, batcher = Gated(scorer), Batcher(max_rows=10_000)
    out, threads = _submit(batcher, gated, frames)
    try:
        threads[0].start()
        assert gated.entered.wait(timeout=30)
        for t in threads[1:]:
            t.start()
        while len(batcher._queue) < 5:  # the other five queue behind the running first batch
            threading.Event().wait(0.01)
        gated.gate.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        batcher.close()
    assert gated.sizes == [5, sum(f.height for f in frames[1:])] and batcher.batches == 2
    for frame, got in zip(frames, out, strict=True):
        alone = scorer.score(frame)
        assert np.array_equal(got.probabilities, alone.probabilities)
        assert np.array_equal(got.score, alone.score)
        assert got.encoded.missing_rows == alone.encoded.missing_rows and got.encoded.oov == alone.encoded.oov


def test_a_failed_batch_releases_every_request_with_the_error(scorer: Scorer, candidates: pl.DataFrame) -> None:
    gated, batcher = Gated(scorer, fail=True), Batcher()
    gated.gate.set()
    out, threads = _submit(batcher, gated, [candidates.head(3), candidates.head(4)])
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    batcher.close()
    assert [str(e) for e in out] == ["model exploded", "model exploded"]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.score(scorer, candidates.head(1))
