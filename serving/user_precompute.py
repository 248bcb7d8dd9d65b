"""The per-user part of the ranker's graph computed once per snapshot user, the rest per candidate.

Why: the feature snapshot fixes a user's features (``data.feature_sides``: the histories and the
categorical and dense features that read only user-table columns), so scoring many candidates of
one user redid the same work per row: the lookup assembled 336 bytes of history ids and lengths a
row, and the graph gathered 40 embedding rows, summed them, and multiplied the user's ~60 inputs
and folded groups into the first layer. On the demo PLE (``bench/score.py``, one thread) the feature
lookup and graph went from 4.4 to 2.4 CPU us/row.

How: the export records in the ONNX metadata (``aptrank.user_tensors``) the graph's tensors that
depend on the user's features alone, most work first: the first layer's user part
(``models.export.user_side``) and where the pooled histories leave the sequence branch
(``models.export.user_sequence``); the registered graph is otherwise the one the parity gate
checked, with the contract's inputs and output. At load, the graph is split at the first of them
with onnx's own extractor (``onnx.utils.Extractor``, https://onnx.ai/onnx/api/utils.html): the
*user part* (the model inputs) -> that tensor [B, W], and the *rest* (``categorical``, the tensor,
``dense``) -> probabilities, which reads no history. The user part runs once over the snapshot's
users (their user-side columns from the lookup, ``CandidateFeatures.users``; 0 elsewhere) into a
float32 table [users, W]; a block of candidates whose users all have a snapshot row gathers its
users' rows (``Encoded.user_rows``) and runs the rest, and its lookup skips the history arrays.
Both parts are the registered graph's own nodes and weights, and a row's value does not depend on
the batch (the export's sums are products with ones, a row scores the same bits alone as in a
batch file), so the scores are the whole graph's bits: a self-check at load scores probe
candidates both ways and takes the next tensor, or the whole graph, unless they are bit-equal.
A block with candidates whose user has no snapshot row (its chunk goes through the ETL lookup,
which also encodes their histories) still uses the table: the other candidates gather their rows
(an unknown *item* does not matter, the tensor reads only user-side columns), the user part runs
on just the unknown users' candidates' model inputs (``UserPart.user_values``), and the rest runs
on every candidate: the whole graph's bits again, as the same nodes compute each row. Graphs
exported without the metadata run the whole graph.

The table is per (graph, snapshot): every :class:`~aptrank.serving.scorer.Scorer` builds its own
from the snapshot it scores with (``aptrank score``, the pyfunc, each ``aptrank serve`` worker; a
hot swap builds the new version's with its scorer; the served evaluation's scorer model bundles the
snapshot as of the split). Memory: users x W x 4 bytes. The demo PLE's first-layer part is 335
floats (1,340 B a user: 35 MB for the sample's 27k users, 134 GB at 100M users); its pooled
histories 32 floats (128 B a user, 12.8 GB at 100M users; the lookup itself already holds ~620 B
of user-side input arrays a user). A tensor whose table would pass ``max_bytes`` (default
:data:`USER_TABLE_MAX_BYTES`) is skipped for the next, logged; with none left the whole graph runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx.utils import Extractor

from aptrank.data.feature_sides import USER
from aptrank.data.spec import INPUT_NAMES, OUTPUT_NAME, SEQUENCE_INPUTS
from aptrank.errors import ConfigError
from aptrank.serving.features import SELF_CHECK_ROWS, CandidateFeatures
from aptrank.serving.onnx_model import PREDICT_ROWS, PROVIDERS, OnnxModel, run_in_calls, session_options

log = logging.getLogger("aptrank.serve")
USER_TABLE_MAX_BYTES = 16 * 2**30
"""Largest per-user table a scorer builds (16 GiB: the demo PLE's first-layer part, 1,340 B a user, up to 12.8M
users; its pooled histories, 128 B a user, up to 134M)."""
USER_TABLE_MAX_BYTES_ENV = "APTRANK_USER_TABLE_MAX_BYTES"
"""Environment variable that sets the bound for every scorer of the process (bytes; 0 = never build a
per-user table): ``aptrank score``, each ``aptrank serve`` worker, the registered pyfunc under
``mlflow models serve`` and the Spark UDF's executors all read it, where no flag could reach."""
POOL_ROWS = 4096
"""Users per call of the user part when the table is built (the bits do not depend on it)."""
REST_INPUTS = tuple(n for n in INPUT_NAMES if n not in SEQUENCE_INPUTS)


@dataclass(frozen=True)
class UserPart:
    """The graph's per-user tensor ``tensor`` for every snapshot user, [users, W] (rows as
    ``CandidateFeatures.users``), the rest of the graph as a session, and the user part (the model
    inputs -> ``tensor``) as a session for candidates whose user has no snapshot row."""

    table: np.ndarray
    rest: ort.InferenceSession
    tensor: str
    user: ort.InferenceSession

    def user_values(self, arrays: Mapping[str, np.ndarray], user_rows: np.ndarray) -> np.ndarray:
        """``tensor`` [B, W] of candidates with snapshot user rows ``user_rows``: the table's row where
        it is >= 0, else the user part run on just those candidates' model inputs (``arrays`` then
        holds the sequence arrays too: the full lookup encoded them)."""
        unknown = np.flatnonzero(user_rows < 0)
        if not len(unknown):
            return self.table.take(user_rows, axis=0)
        values = self.table.take(np.maximum(user_rows, 0), axis=0)
        inputs = {n: arrays[n].take(unknown, axis=0) for n in INPUT_NAMES}
        values[unknown] = run_in_calls(self.user, self.tensor, inputs, PREDICT_ROWS)
        return values

    def feed(self, arrays: Mapping[str, np.ndarray], user_rows: np.ndarray) -> dict[str, np.ndarray]:
        """The rest's inputs for candidates with snapshot user rows ``user_rows`` (-1: none): their
        ``categorical`` and ``dense`` arrays and their :meth:`user_values`."""
        return {**{n: arrays[n] for n in REST_INPUTS}, self.tensor: self.user_values(arrays, user_rows)}

    def predict(self, arrays: Mapping[str, np.ndarray], user_rows: np.ndarray) -> np.ndarray:
        """Probabilities float32 [B, K] of those candidates (:meth:`feed`), :data:`PREDICT_ROWS` a
        call as ``OnnxModel.predict`` (a call's table rows are gathered for that call only)."""
        parts = []
        for s in range(0, len(user_rows), PREDICT_ROWS):
            block = {n: a[s : s + PREDICT_ROWS] for n, a in arrays.items()}
            parts.append(self.rest.run([OUTPUT_NAME], self.feed(block, user_rows[s : s + PREDICT_ROWS]))[0])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def split_graph(path: str | Path, tensor: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(user part, rest) of the ONNX graph at ``path`` split at ``tensor`` (module docstring): the
    user part reads the model inputs, the rest ``categorical``, ``tensor`` and ``dense``; raises
    ValueError when the rest would read anything else."""
    extractor = Extractor(onnx.load(str(path)))
    rest_inputs = [*REST_INPUTS[:1], tensor, *REST_INPUTS[1:]]
    user, rest = (
        extractor.extract_model(list(INPUT_NAMES), [tensor]),
        extractor.extract_model(rest_inputs, [OUTPUT_NAME]),
    )
    initializers = {i.name for i in rest.graph.initializer}
    produced = {n for node in rest.graph.node for n in node.output}
    extra = sorted(
        {n for node in rest.graph.node for n in node.input if n} - initializers - produced - set(rest_inputs)
    )
    if extra:
        raise ValueError(f"'{tensor}' does not separate the user's inputs: the rest also reads {extra}")
    return user, rest


def _user_inputs(features: CandidateFeatures, start: int, stop: int) -> dict[str, np.ndarray]:
    """The model inputs of snapshot users ``start:stop``: their user-side columns, 0 elsewhere (the
    user part reads only those: the self-check would catch a graph that does not)."""
    assert features.users is not None
    out = {}
    for name in INPUT_NAMES:
        own = features.users.arrays[name][start:stop]
        full = np.zeros((own.shape[0], *features.input_shape(name)), own.dtype)
        full[:, features.pos[USER][name]] = own
        out[name] = full
    return out


def _build(model: OnnxModel, features: CandidateFeatures, tensor: str, max_bytes: int) -> UserPart | None:
    """The table of ``tensor`` and the rest, or None with the reason logged."""
    users = features.users
    assert users is not None
    opts = session_options(model.threads)
    try:
        user, rest = (
            ort.InferenceSession(p.SerializeToString(), opts, providers=PROVIDERS)
            for p in split_graph(model.path, tensor)
        )
    except Exception as e:  # onnx and onnxruntime raise their own types for a marker that does not split the graph
        log.warning("model %s: graph does not split at '%s' (%s)", model.version, tensor, e)
        return None
    width = user.get_outputs()[0].shape[-1]
    size = len(users.keys) * int(width) * 4 if isinstance(width, int) else max_bytes + 1
    if size > max_bytes:
        mib = (size / 2**20, max_bytes / 2**20)
        log.warning(
            "model %s: '%s' of %d users would take %.1f MiB, above %.1f MiB",
            model.version,
            tensor,
            len(users.keys),
            *mib,
        )
        return None
    parts = [
        user.run([tensor], _user_inputs(features, s, s + POOL_ROWS))[0] for s in range(0, len(users.keys), POOL_ROWS)
    ]
    part = UserPart(np.ascontiguousarray(np.concatenate(parts), dtype=np.float32), rest, tensor, user)
    probe = features.encode(features.probe(SELF_CHECK_ROWS))
    if probe.user_rows is None or (probe.user_rows < 0).any():
        return None
    if not np.array_equal(part.predict(probe.arrays, probe.user_rows), model.predict(probe.arrays)):
        log.warning("model %s: '%s' once per user scores probe rows differently", model.version, tensor)
        return None
    log.info(
        "model %s: '%s' computed once for %d users (%.1f MiB)", model.version, tensor, len(users.keys), size / 2**20
    )
    return part


def configured_max_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The per-user table bound: :data:`USER_TABLE_MAX_BYTES_ENV` when set (a whole number of bytes,
    0 = off), else :data:`USER_TABLE_MAX_BYTES`; anything else is refused naming the variable."""
    raw = (os.environ if environ is None else environ).get(USER_TABLE_MAX_BYTES_ENV, "").strip()
    if not raw:
        return USER_TABLE_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            USER_TABLE_MAX_BYTES_ENV,
            f"expected a whole number of bytes (0 = no per-user table; default {USER_TABLE_MAX_BYTES}), got {raw!r}",
            "environment",
        )
    return value


def precompute_users(
    model: OnnxModel, features: CandidateFeatures, max_bytes: int = USER_TABLE_MAX_BYTES
) -> UserPart | None:
    """The first of ``model``'s per-user tensors (``OnnxModel.user_tensors``, most work first) that
    can be computed for every snapshot user of ``features`` within ``max_bytes`` and scores probe
    candidates with the whole graph's bits; None (the scorer runs the whole graph, logged when a
    tensor was tried) when there is none, a sequence feature is not user-side or the snapshot has
    no users."""
    users, spec = features.users, features.spec
    if not model.user_tensors or users is None or not len(users.keys) or max_bytes <= 0:
        return None
    if any(features.sides[f.name] != USER for f in spec.sequence):
        return None
    for tensor in model.user_tensors:
        part = _build(model, features, tensor, max_bytes)
        if part is not None:
            return part
    log.warning("model %s: running the whole graph for every candidate", model.version)
    return None
