"""FeatureSpec (DESIGN.md contract 4): the one source of truth for model inputs.

Written by the ETL, read by the model builder, embedded in the ONNX model's metadata and checked by
both scorers. It lists every model input feature with its kind, the task list and the label
definitions; its ``hash`` (sha256 of the canonical JSON without the hash itself) identifies it.

Model input layout (DESIGN.md contract 5) follows the order of the lists here:

* ``categorical``      int64   [B, len(categorical)]   encoded index per feature (0 = OOV)
* ``sequence``         int64   [B, len(sequence), L]   encoded ids, left-aligned, 0-padded; L = max max_len
* ``sequence_lengths`` int64   [B, len(sequence)]      valid prefix length of each sequence
* ``dense``            float32 [B, len(dense)]         normalised values ((x - mean) / std)

Features that name the same ``table`` share one embedding table (e.g. ``item_id`` and the user's
recently clicked items), so ``num_embeddings`` must agree among them.

Each feature holds its typed encoding (:mod:`data.encodings`): a categorical feature its
:class:`~data.encodings.Encoding`, a sequence feature its :class:`~data.encodings.ItemHistory`, a
dense feature its :class:`~data.encodings.Recipe`. The JSON layout is that of version 1 unchanged
(dense recipes under ``extras["dense_recipes"]``), so the hash of a spec does not depend on these
in-memory types.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import ConfigDict, Strict

from aptrank.data.encodings import CATEGORICAL, RECIPES, SEQUENCE, Encoding, ItemHistory, Recipe
from aptrank.data.encodings import OOV_INDEX as OOV_INDEX  # re-exported: consumers import it from here
from aptrank.data.encodings import SpecError as SpecError
from aptrank.data.encodings.base import Registry

SPEC_VERSION = 1
INPUT_NAMES: tuple[str, ...] = ("categorical", "sequence", "sequence_lengths", "dense")
SEQUENCE_INPUTS: tuple[str, ...] = ("sequence", "sequence_lengths")
"""The inputs holding the sequence features (the user's histories)."""
OUTPUT_NAME = "probabilities"
# keys of the exported ONNX model's metadata (written by models.export, read by the scorers)
META_FEATURE_SPEC = "feature_spec"
META_FEATURE_SPEC_HASH = "feature_spec_hash"
META_TASK_NAMES = "task_names"
META_USER_TENSORS = "aptrank.user_tensors"
"""Metadata key: JSON list of the graph's tensors that depend on the user's snapshot row alone, most
work first (written by ``models.export``; ``serving.user_precompute`` splits the graph at the first
whose per-user table fits)."""
USER_FIRST_LAYER_TENSOR = "user_first_layer"
"""The first layer's user part, float32 [B, N] (``models.export.user_side``)."""
USER_SEQUENCE_TENSOR = "user_sequence_pooled"
"""Where the pooled histories leave the sequence branch, float32 [B, sequence features x embedding_dim]."""
DENSE_RECIPES = "dense_recipes"
"""The extras key under which the JSON keeps the dense features' recipes."""


@dataclass(frozen=True)
class CategoricalFeature:
    """One categorical id per example, looked up in embedding table ``table``; ``encoding`` turns
    a raw value into that index (None: the spec was not written by the ETL, e.g. a test model's)."""

    name: str
    table: str
    num_embeddings: int
    encoding: Encoding | None = None

    def to_dict(self) -> dict[str, Any]:
        encoding = self.encoding.to_dict() if self.encoding is not None else {}
        return {"name": self.name, "table": self.table, "num_embeddings": self.num_embeddings, "encoding": encoding}


@dataclass(frozen=True)
class SequenceFeature:
    """A variable-length list of ids (multi-hot), mean-pooled over its valid prefix."""

    name: str
    table: str
    num_embeddings: int
    max_len: int
    encoding: ItemHistory | None = None

    def to_dict(self) -> dict[str, Any]:
        encoding = self.encoding.to_dict() if self.encoding is not None else {}
        return {
            "name": self.name,
            "table": self.table,
            "num_embeddings": self.num_embeddings,
            "max_len": self.max_len,
            "encoding": encoding,
        }


@dataclass(frozen=True)
class DenseFeature:
    """A numeric feature; examples hold ``(x - mean) / std`` of its ``recipe``'s value with null
    filled by ``fill``."""

    name: str
    mean: float
    std: float
    fill: float = 0.0
    recipe: Recipe | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean, "std": self.std, "fill": self.fill}


@pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TaskLabel:
    """How one task's 0/1 label is derived from canonical events (DESIGN.md contract 2).

    ``binary_column``: the canonical event column ``column`` (click, like, ...).
    ``watch_ratio``: 1 when ``watch_ms >= min_ratio * duration_ms``; null or zero duration gives 0.
    A typed (pydantic) dataclass: the ETL config's ``tasks`` entries are checked as such.
    """

    name: Annotated[str, Strict()]
    kind: Literal["binary_column", "watch_ratio"]
    column: Annotated[str, Strict()] | None = None
    min_ratio: Annotated[float, Strict()] | None = None


DEFAULT_TASKS: tuple[TaskLabel, ...] = (
    TaskLabel("click", "binary_column", column="click"),
    TaskLabel("like", "binary_column", column="like"),
    TaskLabel("finish", "watch_ratio", min_ratio=0.95),
)
"""The product's default tasks: click, like, and finish at 95% of the duration (DESIGN.md contract 2)."""


@dataclass(frozen=True)
class FeatureSpec:
    tasks: tuple[TaskLabel, ...]
    categorical: tuple[CategoricalFeature, ...]
    sequence: tuple[SequenceFeature, ...] = ()
    dense: tuple[DenseFeature, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived views -------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def max_sequence_len(self) -> int:
        return max((s.max_len for s in self.sequence), default=0)

    def tables(self) -> dict[str, int]:
        """Embedding table name -> number of rows, in first-use order."""
        out: dict[str, int] = {}
        for f in (*self.categorical, *self.sequence):
            out.setdefault(f.table, f.num_embeddings)
        return out

    def feature_names(self) -> list[str]:
        return [f.name for f in (*self.categorical, *self.sequence, *self.dense)]

    # ---- checks ----------------------------------------------------------------------------
    def validate(self) -> None:
        if self.version != SPEC_VERSION:
            raise SpecError(f"FeatureSpec version {self.version} is not supported (expected {SPEC_VERSION})")
        if not self.tasks:
            raise SpecError("FeatureSpec lists no task")
        names = [t.name for t in self.tasks] + self.feature_names()
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"FeatureSpec names used twice: {dupes}")
        if not self.categorical and not self.sequence and not self.dense:
            raise SpecError("FeatureSpec lists no input feature")
        rows: dict[str, int] = {}
        for f in (*self.categorical, *self.sequence):
            if f.num_embeddings < 2:
                raise SpecError(f"feature '{f.name}': num_embeddings must be >= 2 (OOV row + one id)")
            if rows.setdefault(f.table, f.num_embeddings) != f.num_embeddings:
                raise SpecError(
                    f"feature '{f.name}' shares table '{f.table}' but says {f.num_embeddings} rows, "
                    f"another feature says {rows[f.table]}"
                )
        for s in self.sequence:
            if s.max_len < 1:
                raise SpecError(f"sequence feature '{s.name}': max_len must be >= 1")
        for d in self.dense:
            if not d.std > 0:
                raise SpecError(f"dense feature '{d.name}': std must be > 0, got {d.std}")
        for t in self.tasks:
            if t.kind == "binary_column" and not t.column:
                raise SpecError(f"task '{t.name}': binary_column needs 'column'")
            if t.kind == "watch_ratio" and not (t.min_ratio and 0 < t.min_ratio <= 10):
                raise SpecError(f"task '{t.name}': watch_ratio needs 0 < min_ratio")

    # ---- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        recipes = {d.name: d.recipe.to_dict() for d in self.dense if d.recipe is not None}
        body = {
            "version": self.version,
            "tasks": [asdict(t) for t in self.tasks],
            "categorical": [f.to_dict() for f in self.categorical],
            "sequence": [f.to_dict() for f in self.sequence],
            "dense": [f.to_dict() for f in self.dense],
            "extras": {**self.extras, DENSE_RECIPES: recipes} if recipes else self.extras,
        }
        return {**body, "hash": _hash(body)}

    @property
    def hash(self) -> str:
        return self.to_dict()["hash"]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> FeatureSpec:
        try:
            extras = dict(d.get("extras", {}))
            recipes = extras.get(DENSE_RECIPES) or {}
            if recipes:  # held by the dense features in memory, written back by to_dict
                del extras[DENSE_RECIPES]
            dense = [dict(f) for f in d.get("dense", [])]
            unknown = sorted(set(recipes) - {f["name"] for f in dense})
            if unknown:
                raise SpecError(f"{source}: extras.{DENSE_RECIPES}.{unknown[0]}: names no dense feature")
            spec = cls(
                version=int(d["version"]),
                tasks=tuple(TaskLabel(**t) for t in d["tasks"]),
                categorical=tuple(
                    CategoricalFeature(**_typed(f, CATEGORICAL, f"{source}: categorical[{i}].encoding"))
                    for i, f in enumerate(d["categorical"])
                ),
                sequence=tuple(
                    SequenceFeature(**_typed(f, SEQUENCE, f"{source}: sequence[{i}].encoding"))
                    for i, f in enumerate(d.get("sequence", []))
                ),
                dense=tuple(DenseFeature(**f, recipe=_recipe(recipes, f["name"], source)) for f in dense),
                extras=extras,
            )
        except (KeyError, TypeError) as e:
            raise SpecError(f"{source}: not a FeatureSpec ({e})") from e
        if "hash" in d and d["hash"] != spec.hash:
            raise SpecError(f"{source}: FeatureSpec hash mismatch (file says {d['hash']}, content is {spec.hash})")
        return spec

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> FeatureSpec:
        return cls.from_dict(json.loads(text), source)

    @classmethod
    def read(cls, path: str | Path) -> FeatureSpec:
        p = Path(path)
        if p.is_dir():
            p = p / "feature_spec.json"
        if not p.exists():
            raise SpecError(f"{p}: FeatureSpec file not found")
        return cls.from_json(p.read_text(), str(p))


def _typed(feature: dict[str, Any], registry: Registry[Any], where: str) -> dict[str, Any]:
    """``feature`` with its encoding dict parsed by ``registry`` (an empty dict: no encoding)."""
    encoding = feature.get("encoding") or None
    return {**feature, "encoding": registry.from_dict(encoding, where) if encoding is not None else None}


def _recipe(recipes: dict[str, Any], name: str, source: str) -> Recipe | None:
    """The typed recipe of dense feature ``name`` (None when the JSON has none)."""
    if name not in recipes:
        return None
    return RECIPES.from_dict(recipes[name], f"{source}: extras.{DENSE_RECIPES}.{name}")


def _hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
