"""Each snapshot user's history pooled once: the ranker's graph split where its sequence branch ends.

Why: the ``sequence`` / ``sequence_lengths`` inputs are a user's history lists, which the feature
snapshot fixes per user (their encodings read only user-table columns, ``serving.factorize``), so
scoring many candidates of one user redid the same work per row: the lookup assembled 336 bytes of
ids and lengths a row, and the graph gathered 40 embedding rows and summed them. On the demo PLE
graph that is ~0.5 of ~3.2 CPU us/row of onnxruntime (``bench/score.py``).

How: the export names the tensor through which the pooled histories leave the sequence branch and
records it in the ONNX metadata (``models.export.user_sequence``; the registered graph is unchanged
otherwise). At load, the graph is split there with onnx's own extractor (``onnx.utils.Extractor``,
https://onnx.ai/onnx/api/utils.html): the *history* part (``sequence``, ``sequence_lengths``) ->
pooled [B, W] and the *rest* (``categorical``, pooled, ``dense``) -> probabilities. The history
part runs once over the snapshot's users (their encoded histories: the lookup's user-side arrays,
``CandidateFeatures.users``) into a float32 table [users, W]; a block of candidates whose users all
have a snapshot row gathers its users' rows (``Encoded.user_rows``) and runs the rest, and its
lookup skips the sequence arrays. Both parts are the registered graph's own nodes and weights, and
the export's sums are products with ones (the same bits at any batch size), so a pooled row is the
bits the whole graph computes for that user, and so are the scores: a self-check at load scores
probe candidates both ways and keeps the whole graph unless they are bit-equal. Candidates whose
user has no snapshot row (their chunk goes through the ETL lookup) run the whole graph, as do
graphs exported without the marker.

The table is per (graph, snapshot): every :class:`~aptrank.serving.scorer.Scorer` builds its own
from the snapshot it scores with (``aptrank score``, the pyfunc, each ``aptrank serve`` worker; a
hot swap builds the new version's with its scorer; the served evaluation's scorer model bundles the
snapshot as of the split). Memory: users x W x 4 bytes (demo: W = 2 histories x 16 = 32 floats,
128 B a user, 3.5 MB for the sample's 27k users; 12.8 GB at 100M users, less than the 336 B a user
of history ids the lookup already holds). Above ``max_bytes`` (default
:data:`USER_TABLE_MAX_BYTES`) the scorer logs it and runs the whole graph.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx.utils import Extractor

from aptrank.data.spec import INPUT_NAMES, OUTPUT_NAME, SEQUENCE_INPUTS
from aptrank.serving.factorize import USER
from aptrank.serving.features import SELF_CHECK_ROWS, CandidateFeatures
from aptrank.serving.onnx_model import PREDICT_ROWS, PROVIDERS, OnnxModel, session_options

log = logging.getLogger("aptrank.serve")
USER_TABLE_MAX_BYTES = 8 * 2**30
"""Largest pooled-history table a scorer builds (8 GiB: 67M users at the demo's 128 B a user)."""
POOL_ROWS = 4096
"""Users per call of the history part when the table is built (the bits do not depend on it)."""
REST_INPUTS = tuple(n for n in INPUT_NAMES if n not in SEQUENCE_INPUTS)


@dataclass(frozen=True)
class PooledHistories:
    """The users' pooled histories [users, W] (rows as ``CandidateFeatures.users``) and the rest of
    the graph as a session."""

    table: np.ndarray
    rest: ort.InferenceSession
    tensor: str

    def feed(self, arrays: Mapping[str, np.ndarray], user_rows: np.ndarray) -> dict[str, np.ndarray]:
        """The rest's inputs for candidates whose users are snapshot rows ``user_rows`` (all >= 0):
        their ``categorical`` and ``dense`` arrays and their users' pooled histories."""
        return {**{n: arrays[n] for n in REST_INPUTS}, self.tensor: self.table.take(user_rows, axis=0)}

    def predict(self, arrays: Mapping[str, np.ndarray], user_rows: np.ndarray) -> np.ndarray:
        """Probabilities float32 [B, K] of those candidates (:meth:`feed`), :data:`PREDICT_ROWS` a
        call as ``OnnxModel.predict``."""
        parts = []
        for s in range(0, len(user_rows), PREDICT_ROWS):
            block = {n: arrays[n][s : s + PREDICT_ROWS] for n in REST_INPUTS}
            parts.append(self.rest.run([OUTPUT_NAME], self.feed(block, user_rows[s : s + PREDICT_ROWS]))[0])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def split_graph(path: str | Path, tensor: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(history part, rest) of the ONNX graph at ``path`` split at ``tensor`` (module docstring)."""
    extractor = Extractor(onnx.load(str(path)))
    rest_inputs = [*REST_INPUTS[:1], tensor, *REST_INPUTS[1:]]
    history, rest = (
        extractor.extract_model(list(SEQUENCE_INPUTS), [tensor]),
        extractor.extract_model(rest_inputs, [OUTPUT_NAME]),
    )
    for part, inputs in ((history, list(SEQUENCE_INPUTS)), (rest, rest_inputs)):
        initializers = {i.name for i in part.graph.initializer}
        needed = {n for node in part.graph.node for n in node.input if n} - initializers
        produced = {n for node in part.graph.node for n in node.output}
        extra = sorted(needed - produced - set(inputs))
        if extra:
            raise ValueError(f"'{tensor}' does not separate the sequence inputs: that part also reads {extra}")
    return history, rest


def _sessions(model: OnnxModel, tensor: str) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    opts = session_options(model.threads)
    history, rest = (
        ort.InferenceSession(p.SerializeToString(), opts, providers=PROVIDERS) for p in split_graph(model.path, tensor)
    )
    return history, rest


def _table(history: ort.InferenceSession, tensor: str, users: Mapping[str, np.ndarray]) -> np.ndarray:
    rows = len(users[SEQUENCE_INPUTS[0]])
    parts = [
        history.run([tensor], {n: users[n][s : s + POOL_ROWS] for n in SEQUENCE_INPUTS})[0]
        for s in range(0, rows, POOL_ROWS)
    ]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def pool_user_histories(
    model: OnnxModel, features: CandidateFeatures, max_bytes: int = USER_TABLE_MAX_BYTES
) -> PooledHistories | None:
    """The pooled histories of every snapshot user of ``features`` for ``model``, or None (the
    scorer runs the whole graph) when the graph has no marker, a sequence feature is not user-side,
    the snapshot has no users, the table would exceed ``max_bytes`` (logged), the graph does not
    split, or the split scores probe candidates differently (logged)."""
    tensor, spec, users = model.user_sequence, features.spec, features.users
    if tensor is None or users is None or not len(users.keys) or max_bytes <= 0:
        return None
    if not spec.sequence or any(features.sides[f.name] != USER for f in spec.sequence):
        return None
    try:
        history, rest = _sessions(model, tensor)
    except Exception as e:  # onnx raises its own types for a marker that does not split the graph
        log.warning("model %s: graph does not split at '%s' (%s); running it whole", model.version, tensor, e)
        return None
    width = history.get_outputs()[0].shape[1]
    size = len(users.keys) * int(width) * 4 if isinstance(width, int) else max_bytes + 1
    if size > max_bytes:
        log.warning(
            "model %s: pooled histories of %d users would take %.1f MiB, above %.1f MiB; running the whole graph",
            model.version,
            len(users.keys),
            size / 2**20,
            max_bytes / 2**20,
        )
        return None
    pooled = PooledHistories(_table(history, tensor, users.arrays), rest, tensor)
    probe = features.encode(features.probe(SELF_CHECK_ROWS))
    if probe.user_rows is None or (probe.user_rows < 0).any():
        return None
    if not np.array_equal(pooled.predict(probe.arrays, probe.user_rows), model.predict(probe.arrays)):
        log.warning("model %s: pooled histories score probe rows differently; running the whole graph", model.version)
        return None
    log.info("model %s: histories of %d users pooled once (%.1f MiB)", model.version, len(users.keys), size / 2**20)
    return pooled
