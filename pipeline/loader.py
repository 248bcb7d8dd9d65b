"""Examples Parquet -> FeatureBatch, in record batches, with a bounded shuffle buffer.

Rows are read with pyarrow in record batches and turned into the model's input arrays by the ETL's
own converter (:func:`data.tensors.model_inputs`: numpy, no per-row Python), then into tensors
without copies. Shuffling permutes within buffers of ``shuffle_buffer`` rows, so memory is bounded
whatever the split size; the permutation of epoch ``e`` comes from ``(seed, e)`` alone, which makes
an epoch replayable on resume without saving sampler state. A background thread prefetches batches
so that the trainer rarely waits (the wait is measured and reported).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from aptrank.data.spec import FeatureSpec
from aptrank.data.tensors import labels, model_inputs
from aptrank.models.feature_batch import FeatureBatch

_END = object()
T = TypeVar("T")


def split_files(features_dir: str | Path, split: str) -> list[Path]:
    d = Path(features_dir) / split
    files = sorted(d.rglob("*.parquet")) if d.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{d}: no Parquet files for split '{split}' (run `aptrank etl` first)")
    return files


def count_rows(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


class ExampleLoader:
    """Iterates FeatureBatches over one split.

    ``epoch_batches(epoch)`` yields training batches (shuffled within buffers, last partial batch
    kept); ``ordered_batches()`` yields evaluation batches in file order with the raw ``user_id`` and
    ``item_id`` arrays alongside.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        files: list[Path],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle_buffer: int = 262_144,
        prefetch: int = 4,
    ) -> None:
        self.spec = spec
        self.files = files
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.prefetch = prefetch
        self.num_rows = count_rows(files)
        self.wait_seconds = 0.0
        self._cache: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def _record_batches(self, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Tables of about ``rows`` rows, in file order."""
        pending: list[pa.RecordBatch] = []
        held = 0
        for f in self.files:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=min(rows, 65_536), columns=columns):
                pending.append(rb)
                held += rb.num_rows
                if held >= rows:
                    yield pa.Table.from_batches(pending)
                    pending, held = [], 0
        if pending:
            yield pa.Table.from_batches(pending)

    def _convert(self, table: pa.Table) -> dict[str, np.ndarray]:
        arrays = model_inputs(table, self.spec)
        y = labels(table, self.spec)
        if y is not None:
            arrays["labels"] = y
        return arrays

    def _buffers(self) -> Iterator[dict[str, np.ndarray]]:
        """Converted shuffle buffers in file order. A split that fits in one buffer is converted once
        and kept (later epochs only re-permute it); larger splits convert the next buffer in a thread
        while the current one is being consumed."""
        if self._cache is not None:
            yield self._cache
            return
        source = (self._convert(t) for t in self._record_batches(self.shuffle_buffer))
        for arrays in _ahead(source, depth=1):
            if self.num_rows <= self.shuffle_buffer:
                self._cache = arrays
            yield arrays

    def _batches(self, arrays: dict[str, np.ndarray], order: np.ndarray | None) -> Iterator[FeatureBatch]:
        """Batches gathered with numpy in the producer thread (single-threaded, GIL released): torch
        ops here would start a second OpenMP team that fights the training step for the cores."""
        n = int(arrays["categorical"].shape[0])
        for start in range(0, n, self.batch_size):
            if order is None:
                part = {k: v[start : start + self.batch_size] for k, v in arrays.items()}
            else:
                sel = order[start : start + self.batch_size]
                part = {k: np.take(v, sel, axis=0) for k, v in arrays.items()}
            yield FeatureBatch(
                categorical=torch.from_numpy(part["categorical"]),
                sequence=torch.from_numpy(part["sequence"]),
                sequence_lengths=torch.from_numpy(part["sequence_lengths"]),
                dense=torch.from_numpy(part["dense"]),
                labels=torch.from_numpy(part["labels"]) if "labels" in part else None,
            )

    def _generate(self, epoch: int) -> Iterator[FeatureBatch]:
        rng = np.random.default_rng([self.seed, epoch])
        for arrays in self._buffers():
            yield from self._batches(arrays, rng.permutation(int(arrays["categorical"].shape[0])))

    def epoch_batches(self, epoch: int) -> Iterator[FeatureBatch]:
        """Shuffled training batches of ``epoch``, produced by a prefetching thread; the time the
        consumer waits for them is added up in ``wait_seconds``."""
        self.wait_seconds = 0.0
        batches = _ahead(self._generate(epoch), depth=self.prefetch)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            self.wait_seconds += time.perf_counter() - t0
            if batch is None:
                return
            yield batch

    def ordered_batches(self) -> Iterator[tuple[FeatureBatch, np.ndarray, np.ndarray]]:
        """(batch, user_id, item_id) in file order, for evaluation."""
        for table in self._record_batches(self.shuffle_buffer):
            users = table.column("user_id").to_numpy()
            items = table.column("item_id").to_numpy()
            start = 0
            for b in self._batches(self._convert(table), None):
                end = start + b.batch_size
                yield b, users[start:end], items[start:end]
                start = end


def _ahead(source: Iterator[T], depth: int) -> Iterator[T]:
    """Run ``source`` in a daemon thread, ``depth`` items ahead of the consumer; exceptions are
    re-raised in the consumer; closing the consumer stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:  # surfaced in the consumer
            q.put(e)

    worker = threading.Thread(target=produce, name="loader-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
