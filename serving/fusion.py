"""The fused ranking score: a weighted sum of the task probabilities, ``score = Σ_k w_k · p_k``.

Weights come from the job config's ``scoring.weights`` (task -> weight) or the command line. With no
weights every task of the model gets ``1/K`` (the mean probability). Tasks the weights do not name get
0. This linear fusion is the common production form of multi-task ranking scores (e.g. the
"weighted sum of predicted engagement probabilities" of YouTube's MMoE ranker, Zhao et al.,
RecSys 2019, section 4); both scorers use this one function, so batch and online scores agree.

A registered scorer model carries its job's weights as ``fusion.json`` (:data:`FUSION_FILE`,
``{"weights": {task: weight}}``) beside its ONNX graph, so scoring needs no job config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FUSION_FILE = "fusion.json"


@dataclass(frozen=True)
class Fusion:
    """Weights aligned with the model's output columns (``task_names`` order)."""

    task_names: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def build(cls, task_names: Sequence[str], weights: Mapping[str, float] | None = None) -> Fusion:
        """Check ``weights`` against the model's tasks: unknown task, non-finite or negative weight, or
        all-zero weights raise ``ValueError`` naming the task and the rule."""
        tasks = tuple(task_names)
        if not tasks:
            raise ValueError("fusion: the model lists no task")
        if not weights:
            return cls(tasks, tuple(1.0 / len(tasks) for _ in tasks))
        unknown = sorted(set(weights) - set(tasks))
        if unknown:
            raise ValueError(f"scoring.weights: task(s) {unknown} are not outputs of the model (tasks: {list(tasks)})")
        for task, w in weights.items():
            if not (isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0):
                raise ValueError(f"scoring.weights.{task}: must be a finite number >= 0, got {w!r}")
        values = tuple(float(weights.get(t, 0.0)) for t in tasks)
        if not any(values):
            raise ValueError(f"scoring.weights: all weights are 0 ({dict(weights)}); give at least one task a weight")
        return cls(tasks, values)

    def score(self, probabilities: np.ndarray) -> np.ndarray:
        """float64 [B] from probabilities [B, K]; summed task by task in a fixed order, so a row's
        score does not depend on the other rows of its batch."""
        if probabilities.ndim != 2 or probabilities.shape[1] != len(self.task_names):
            raise ValueError(f"fusion: probabilities must be [B, {len(self.task_names)}], got {probabilities.shape}")
        out = np.zeros(probabilities.shape[0], dtype=np.float64)
        for k, w in enumerate(self.weights):
            if w:
                out += w * probabilities[:, k].astype(np.float64)
        return out

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.task_names, self.weights, strict=True))


def parse_weights(items: Sequence[str]) -> dict[str, float]:
    """``["click=1", "like=0.5"]`` (command-line ``--weight``) -> ``{"click": 1.0, "like": 0.5}``."""
    out: dict[str, float] = {}
    for item in items:
        task, sep, text = item.partition("=")
        if not sep or not task.strip():
            raise ValueError(f"--weight '{item}': expected TASK=WEIGHT (e.g. click=1.0)")
        try:
            out[task.strip()] = float(text)
        except ValueError as e:
            raise ValueError(f"--weight '{item}': '{text}' is not a number") from e
    return out


def write_fusion(path: str | Path, weights: Mapping[str, float]) -> Path:
    """Write ``weights`` as a fusion file (:data:`FUSION_FILE` layout)."""
    p = Path(path)
    p.write_text(json.dumps({"weights": {k: float(v) for k, v in weights.items()}}, sort_keys=True) + "\n")
    return p


def read_fusion(path: str | Path) -> dict[str, float]:
    """The weights of a fusion file; a malformed one raises ``ValueError`` naming the file and the rule."""
    try:
        weights = json.loads(Path(path).read_text())["weights"]
        return {str(k): float(v) for k, v in weights.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f'{path}: expected a fusion file {{"weights": {{task: number}}}} ({e})') from e
