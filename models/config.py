"""ModelConfig: what every architecture's ``model`` section holds; each architecture extends it.

The sizes shared by all rankers live here (embedding width, towers, dropout, seed); each
architecture declares its own section in its own file (``SharedBottomConfig`` and
``SingleTaskConfig`` in ``shared_bottom.py``, ``MMoEConfig`` in ``mmoe.py``, ``PLEConfig`` in
``ple.py``) with an ``arch`` tag, and ``models.registry`` makes the job's ``model`` section a union
discriminated on ``arch``. Unknown keys are refused so that a typo in a YAML config fails loudly
instead of silently training the default model.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from aptrank.config_model import AsTuple, ConfigModel
from aptrank.errors import ConfigError
from aptrank.models.dense_encoding import DenseEncodingConfig

PositiveInt = Annotated[int, Field(ge=1)]
HiddenSizes = Annotated[tuple[PositiveInt, ...], AsTuple, Field(min_length=1)]
"""Widths of an MLP's hidden layers (a YAML list; at least one)."""


class ModelConfigError(ConfigError):
    """A model config value breaks a rule (the key names the value, ``model.num_experts``)."""


class ModelConfig(ConfigModel):
    """What every architecture reads.

    * ``embedding_dim``: width of every embedding table.
    * ``sparse_embeddings``: set ``.sparse = True`` on the TorchRec EmbeddingBag modules, so table
      gradients are sparse (row-wise) tensors (use a sparse-aware optimizer, e.g. ``torch.optim.SparseAdam``
      or a row-wise update).
    * ``tower_hidden``: each task tower's MLP before its final ``Linear(., 1)`` (may be empty).
    * ``dropout``: dropout after every hidden ReLU (0 disables it).
    * ``dense_encoding``: the dense features' piecewise-linear encoding (``models.dense_encoding``);
      absent (the default): each dense feature is one standardized scalar.
    * ``seed``: when set, parameters are initialised from this seed without touching the global RNG;
      otherwise from the global ``torch.manual_seed`` state (the job sets it to the job's seed).
    """

    error_class = ModelConfigError

    embedding_dim: PositiveInt = 16
    sparse_embeddings: bool = True
    tower_hidden: Annotated[tuple[PositiveInt, ...], AsTuple] = (32,)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    dense_encoding: DenseEncodingConfig | None = None
    seed: int | None = None
