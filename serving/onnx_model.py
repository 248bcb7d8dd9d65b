"""A loaded ONNX ranker: its onnxruntime session plus the FeatureSpec and task list from its metadata.

The graph is the one ``models.export.export_onnx`` writes (DESIGN.md contract 5): inputs
``data.spec.INPUT_NAMES`` with a dynamic batch axis, output ``OUTPUT_NAME`` = per-task probabilities
[B, K]. The metadata keys are those of ``models.export`` (``feature_spec``, ``feature_spec_hash``,
``task_names``); they are repeated here because ``models.export`` imports torch and this module is on
the torch-free scoring path (a test asserts both lists agree).

Session settings follow the onnxruntime threading guide
(https://onnxruntime.ai/docs/performance/tune-performance/threading.html): sequential execution, a
fixed intra-op pool and no spinning, so that idle pools do not burn the CPU cores they share.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from aptrank.data.digests import file_digest
from aptrank.data.spec import (
    INPUT_NAMES,
    META_FEATURE_SPEC,
    META_FEATURE_SPEC_HASH,
    META_TASK_NAMES,
    META_USER_TENSORS,
    OUTPUT_NAME,
    FeatureSpec,
    SpecError,
)
from aptrank.serving.errors import ModelLoadError
from aptrank.serving.model_integrity import check_finite, verify_digest, verify_sidecar

PROVIDERS = ["CPUExecutionProvider"]
PREDICT_ROWS = 128
"""Rows per onnxruntime call: large batches only grow the arena (hidden activations are rows x
width floats) and fall out of cache, the more so with two scoring threads sharing the caches. On
the demo MMoE's exported graph (folded tables, ``models.export.fold``), batch scoring of 2M
candidates with 2 threads, 4 interleaved runs each: 626-658k rows/s at 128 rows per call, 625k at
64, 538-565k at 256 and 513k at 512; the unfolded graph gave 509-523k at 128, 256 and 512 alike.
The demo PLE graph (43 nodes), one thread, 30 interleaved rounds of 32k real rows, CPU us/row
against 128: 64 rows x1.08, 256 x1.00, 512 x1.05, 1024 x1.20. A call's fixed cost is ~25 us of
graph plus ~6 us of Python binding (31.9 CPU us for one row), 0.25 us/row at 128 rows, but the
per-row cost grows with the call: the folded gather's [groups, rows, width] intermediate is 16 KB
a row (1 MB at 64 rows, the core's L2; 2 MB at 128; 16 MB at 1024, half the shared L3)."""


def session_options(threads: int) -> ort.SessionOptions:
    """Options for one CPU session with ``threads`` intra-op threads and no spin-waiting."""
    if threads < 1:
        raise ValueError(f"onnx session: threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


@dataclass(frozen=True)
class OnnxModel:
    """One loaded model. ``version`` names it in responses and metrics (registry version or digest);
    ``threads``: its sessions' intra-op threads; ``user_tensors``: the graph's tensors that depend on
    the user's snapshot row alone, most work first (metadata ``aptrank.user_tensors``; none for
    graphs exported without it: :mod:`serving.user_precompute`)."""

    path: Path
    spec: FeatureSpec
    task_names: tuple[str, ...]
    version: str
    session: ort.InferenceSession
    threads: int = 1
    user_tensors: tuple[str, ...] = ()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities float32 [B, K] (columns in ``task_names`` order) for the four input arrays,
        run :data:`PREDICT_ROWS` rows at a time (rows are independent, so this changes no value)."""
        missing = [n for n in INPUT_NAMES if n not in inputs]
        if missing:
            raise SpecError(f"model {self.version}: input arrays {missing} are missing (need {list(INPUT_NAMES)})")
        return run_in_calls(self.session, OUTPUT_NAME, {n: inputs[n] for n in INPUT_NAMES}, PREDICT_ROWS)


def run_in_calls(
    session: ort.InferenceSession, output: str, inputs: Mapping[str, np.ndarray], rows_per_call: int
) -> np.ndarray:
    """``session``'s ``output`` for every row of ``inputs`` (same-length arrays), ``rows_per_call``
    rows a call: the exported graphs' rows are independent (their sums are products with ones), so
    the call size changes no bit."""
    rows = int(next(iter(inputs.values())).shape[0])
    parts = [
        session.run([output], {n: a[s : s + rows_per_call] for n, a in inputs.items()})[0]
        for s in range(0, rows, rows_per_call)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def load_onnx(
    path: str | Path,
    *,
    threads: int = 1,
    version: str | None = None,
    expected_sha256: str | None = None,
    allow_non_finite: bool = False,
    allow_unverified: bool = False,
) -> OnnxModel:
    """Open ``path`` and check it is an aptrank ranker: its content digest matches ``expected_sha256``
    (else its ``.sha256`` sidecar; with neither it is refused unless ``allow_unverified``), no weight
    is NaN/Inf (``allow_non_finite``: only the export's parity reload, which reports non-finite
    outputs itself), metadata present, the embedded FeatureSpec matches its hash, the task list is
    the spec's, and the inputs/output have the contract's names
    (:mod:`aptrank.serving.model_integrity`)."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"{p}: ONNX model file not found")
    if expected_sha256 is not None:
        verify_digest(p, expected_sha256, "the model registry")
    else:
        verify_sidecar(p, allow_unverified=allow_unverified)
    if not allow_non_finite:
        check_finite(p)
    try:
        session = ort.InferenceSession(str(p), sess_options=session_options(threads), providers=PROVIDERS)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
        raise ModelLoadError(f"{p}: not a loadable ONNX model ({e})") from e
    meta = session.get_modelmeta().custom_metadata_map
    absent = [k for k in (META_FEATURE_SPEC, META_FEATURE_SPEC_HASH, META_TASK_NAMES) if k not in meta]
    if absent:
        raise ModelLoadError(f"{p}: ONNX metadata lacks {absent} (export it with `aptrank export`)")
    try:
        spec = FeatureSpec.from_json(meta[META_FEATURE_SPEC], f"{p} metadata '{META_FEATURE_SPEC}'")
    except SpecError as e:
        raise ModelLoadError(str(e)) from e
    if spec.hash != meta[META_FEATURE_SPEC_HASH]:
        raise ModelLoadError(
            f"{p}: metadata '{META_FEATURE_SPEC_HASH}' is {meta[META_FEATURE_SPEC_HASH][:12]}, "
            f"the embedded FeatureSpec hashes to {spec.hash[:12]}"
        )
    tasks = tuple(json.loads(meta[META_TASK_NAMES]))
    if not tasks or any(t not in spec.task_names for t in tasks):
        raise ModelLoadError(
            f"{p}: metadata '{META_TASK_NAMES}' {list(tasks)} must be tasks of the FeatureSpec {spec.task_names}"
        )
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != list(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
        raise ModelLoadError(
            f"{p}: graph inputs {inputs} / outputs {outputs}; expected {list(INPUT_NAMES)} / ['{OUTPUT_NAME}']"
        )
    version = version or f"sha256:{file_digest(p)[:12]}"
    user_tensors = tuple(json.loads(meta.get(META_USER_TENSORS, "[]")))
    return OnnxModel(p, spec, tasks, version, session, threads, user_tensors)
