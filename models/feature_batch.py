"""FeatureBatch: one batch of model inputs in the FeatureSpec's plain-tensor layout.

The four input tensors are exactly ``data.spec.INPUT_NAMES`` (DESIGN.md contract 5), so the same
batch feeds the training path (KeyedJaggedTensor + TorchRec lookup) and the export path (plain
tensors, ONNX). Labels are optional (scoring has none).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from aptrank.data.spec import FeatureSpec, SpecError


@dataclass(frozen=True)
class FeatureBatch:
    """``categorical`` int64 [B, C]; ``sequence`` int64 [B, S, L] (left-aligned, 0-padded);
    ``sequence_lengths`` int64 [B, S]; ``dense`` float32 [B, D]; ``labels`` float32 [B, K] or None."""

    categorical: torch.Tensor
    sequence: torch.Tensor
    sequence_lengths: torch.Tensor
    dense: torch.Tensor
    labels: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.categorical.shape[0])

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The input tensors in ``INPUT_NAMES`` order (what the exported model takes)."""
        return self.categorical, self.sequence, self.sequence_lengths, self.dense

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FeatureBatch:
        moved = [t.to(device, non_blocking=non_blocking) for t in self.inputs()]
        labels = None if self.labels is None else self.labels.to(device, non_blocking=non_blocking)
        return FeatureBatch(*moved, labels=labels)

    def with_labels(self, labels: torch.Tensor | None) -> FeatureBatch:
        return replace(self, labels=labels)

    def check_shapes(self, spec: FeatureSpec) -> None:
        """Shapes and dtypes against the spec (cheap: no look at the values)."""
        b = self.batch_size
        expected = {
            "categorical": ((b, len(spec.categorical)), torch.int64),
            "sequence": ((b, len(spec.sequence), spec.max_sequence_len), torch.int64),
            "sequence_lengths": ((b, len(spec.sequence)), torch.int64),
            "dense": ((b, len(spec.dense)), torch.float32),
        }
        if self.labels is not None:
            expected["labels"] = ((b, spec.num_tasks), torch.float32)
        for name, (shape, dtype) in expected.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise SpecError(
                    f"FeatureBatch '{name}': expected {dtype} {list(shape)} from the FeatureSpec, "
                    f"got {t.dtype} {list(t.shape)}"
                )

    def validate(self, spec: FeatureSpec) -> None:
        """Shapes, dtypes and value ranges: ids in [0, num_embeddings), lengths in [0, max_len]."""
        self.check_shapes(spec)
        for i, f in enumerate(spec.categorical):
            _check_range(f"categorical feature '{f.name}'", self.categorical[:, i], f.num_embeddings - 1)
        for j, s in enumerate(spec.sequence):
            _check_range(f"sequence feature '{s.name}' ids", self.sequence[:, j], s.num_embeddings - 1)
            _check_range(f"sequence feature '{s.name}' lengths", self.sequence_lengths[:, j], s.max_len)

    @classmethod
    def random(
        cls, spec: FeatureSpec, batch_size: int, generator: torch.Generator, with_labels: bool = True
    ) -> FeatureBatch:
        """A valid random batch (tests and benchmarks): uniform ids, uniform lengths in [0, max_len],
        ids past each length set to 0, standard-normal dense values, Bernoulli(0.5) labels."""
        if batch_size < 1:
            raise ValueError(f"FeatureBatch.random: batch_size must be >= 1, got {batch_size}")
        g = generator
        categorical = torch.zeros(batch_size, len(spec.categorical), dtype=torch.int64)
        for i, f in enumerate(spec.categorical):
            categorical[:, i] = torch.randint(0, f.num_embeddings, (batch_size,), generator=g)
        length = spec.max_sequence_len
        sequence = torch.zeros(batch_size, len(spec.sequence), length, dtype=torch.int64)
        lengths = torch.zeros(batch_size, len(spec.sequence), dtype=torch.int64)
        positions = torch.arange(length)
        for j, s in enumerate(spec.sequence):
            lengths[:, j] = torch.randint(0, s.max_len + 1, (batch_size,), generator=g)
            ids = torch.randint(1, s.num_embeddings, (batch_size, length), generator=g)
            sequence[:, j] = torch.where(positions < lengths[:, j : j + 1], ids, 0)
        dense = torch.randn(batch_size, len(spec.dense), generator=g)
        labels = torch.bernoulli(torch.full((batch_size, spec.num_tasks), 0.5), generator=g) if with_labels else None
        return cls(categorical, sequence, lengths, dense, labels)


def _check_range(what: str, values: torch.Tensor, high: int) -> None:
    if values.numel() == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi > high:
        raise SpecError(f"FeatureBatch {what}: values must be in [0, {high}], got min {lo} max {hi}")
