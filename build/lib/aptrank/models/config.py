"""ModelConfig: the sizes of a multi-task ranker, read from the job config's ``model`` section.

One typed object for every architecture; each architecture reads the fields it needs and ignores the
rest. Unknown keys are rejected so that a typo in a YAML config fails loudly instead of silently
training the default model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


class ModelConfigError(ValueError):
    """A model config value breaks a rule (the message names the key and the rule)."""


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and switches of a model.

    * ``embedding_dim``: width of every embedding table.
    * ``sparse_embeddings``: set ``.sparse = True`` on the TorchRec EmbeddingBag modules, so table
      gradients are sparse (row-wise) tensors (use a sparse-aware optimizer, e.g. ``torch.optim.SparseAdam``
      or a row-wise update).
    * ``bottom_hidden``: the shared bottom MLP (``shared_bottom``, ``single_task``).
    * ``expert_hidden``: each expert MLP (``mmoe``, ``ple``); the last size is the expert output H.
    * ``tower_hidden``: each task tower's MLP before its final ``Linear(., 1)``.
    * ``num_experts``: MMoE experts E.
    * ``ple_levels`` / ``ple_shared_experts`` / ``ple_task_experts``: PLE extraction levels and the
      number of shared and per-task experts in each level.
    * ``dropout``: dropout after every hidden ReLU (0 disables it).
    * ``task``: the task a ``single_task`` model predicts (default: the spec's first task).
    * ``seed``: when set, parameters are initialised from this seed without touching the global RNG;
      otherwise from the global ``torch.manual_seed`` state.
    """

    embedding_dim: int = 16
    sparse_embeddings: bool = True
    bottom_hidden: tuple[int, ...] = (128, 64)
    expert_hidden: tuple[int, ...] = (128, 64)
    tower_hidden: tuple[int, ...] = (32,)
    num_experts: int = 4
    ple_levels: int = 2
    ple_shared_experts: int = 2
    ple_task_experts: int = 1
    dropout: float = 0.0
    task: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "num_experts", "ple_levels", "ple_shared_experts", "ple_task_experts"):
            _positive_int(name, getattr(self, name))
        for name in ("bottom_hidden", "expert_hidden"):
            sizes = getattr(self, name)
            if not sizes:
                raise ModelConfigError(f"model config '{name}': needs at least one hidden size")
        for name in ("bottom_hidden", "expert_hidden", "tower_hidden"):
            for size in getattr(self, name):
                _positive_int(name, size)
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"model config 'dropout': must be in [0, 1), got {self.dropout}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ModelConfigError(f"model config 'seed': must be an int or null, got {self.seed!r}")

    @classmethod
    def from_dict(cls, config: dict[str, Any] | ModelConfig | None) -> ModelConfig:
        """Build from a plain mapping (YAML section); lists become tuples, unknown keys are an error."""
        if isinstance(config, ModelConfig):
            return config
        config = dict(config or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ModelConfigError(f"model config: unknown key(s) {unknown}; known keys: {sorted(known)}")
        for name in ("bottom_hidden", "expert_hidden", "tower_hidden"):
            if name in config:
                value = config[name]
                if not isinstance(value, list | tuple):
                    raise ModelConfigError(f"model config '{name}': must be a list of ints, got {value!r}")
                config[name] = tuple(value)
        if "sparse_embeddings" in config and not isinstance(config["sparse_embeddings"], bool):
            raise ModelConfigError(
                f"model config 'sparse_embeddings': must be true/false, got {config['sparse_embeddings']!r}"
            )
        return cls(**config)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(f"model config '{name}': must be a positive int, got {value!r}")
