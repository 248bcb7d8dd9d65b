"""Encoded candidates: the model input arrays of a batch of candidates and what had to be defaulted."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aptrank.data.spec import OOV_INDEX


@dataclass
class Encoded:
    """Model input arrays for candidates (candidate order) and what was defaulted: per entity a row
    flag for candidates without a snapshot row; OOV counts are read off the categorical array.
    ``user_rows``: each candidate's row in the snapshot's user table (-1: none), when the lookup
    has one; without the sequence arrays (``encode_blocks(..., sequences=False)``) the scorer
    reads the users' precomputed part by it (:mod:`serving.user_precompute`)."""

    arrays: dict[str, np.ndarray]
    missing: dict[str, np.ndarray]
    categorical_names: tuple[str, ...]
    user_rows: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.arrays["categorical"].shape[0])

    @property
    def missing_rows(self) -> dict[str, int]:
        """Per entity: candidates without a snapshot row (defaults used)."""
        return {e: int(flags.sum()) for e, flags in self.missing.items()}

    @property
    def oov(self) -> dict[str, int]:
        """Per categorical feature: candidates encoded to the OOV row (unseen or null value)."""
        counts = (self.arrays["categorical"] == OOV_INDEX).sum(axis=0).tolist()
        return dict(zip(self.categorical_names, (int(c) for c in counts), strict=True))

    def slice(self, start: int, stop: int) -> Encoded:
        return Encoded(
            {k: v[start:stop] for k, v in self.arrays.items()},
            {k: v[start:stop] for k, v in self.missing.items()},
            self.categorical_names,
            None if self.user_rows is None else self.user_rows[start:stop],
        )

    def counts(self) -> LookupCounts:
        """What a scorer reports of these candidates: rows, missing rows and OOV counts."""
        return LookupCounts(self.rows, self.missing_rows, self.oov)


@dataclass(frozen=True)
class LookupCounts:
    """Per scored batch: candidates, per entity those without a snapshot row, per categorical
    feature those encoded to the OOV row (the sums over the batch's blocks, ``+``)."""

    rows: int = 0
    missing_rows: dict[str, int] = field(default_factory=dict)
    oov: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: LookupCounts) -> LookupCounts:
        def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}

        missing = add(self.missing_rows, other.missing_rows)
        return LookupCounts(self.rows + other.rows, missing, add(self.oov, other.oov))
