"""MEDA: re-initialise the embedding tables at the start of every epoch after the first (``train.meda``).

Liu et al., "Multi-Epoch Learning for Deep Click-Through Rate Prediction Models" (2023, MEDA:
Multi-Epoch learning with Data Augmentation): id-heavy CTR models overfit from the second epoch on
(Zhang et al., CIKM 2022, "one-epoch overfitting"), and the paper traces it to the embeddings
memorising the examples seen; re-initialising the embedding layer at each epoch start while the
dense part (experts, gates, towers) keeps training lets later epochs help. The fresh tables are
drawn as TorchRec draws them at build time (uniform in +-sqrt(1 / rows),
``torchrec.modules.embedding_modules.EmbeddingBagCollection``), from a generator seeded by
``(seed, epoch)`` so a resumed run re-draws the same tables, and the tables' optimizer state (their
Adam moments) is dropped with them, as the paper's fresh embedding layer has none.
"""

from __future__ import annotations

import math

import torch

from aptrank.apt import MultiTaskOptimizer
from aptrank.models.base import MultiTaskModel


def reinitialise_tables(model: MultiTaskModel, optimizer: MultiTaskOptimizer, seed: int, epoch: int) -> int:
    """Draw every embedding table of ``model`` afresh and forget the optimizer state of the tables;
    returns the rows drawn."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    rows = 0
    with torch.no_grad():
        for weight in model.embedding.table_weights().values():
            bound = math.sqrt(1.0 / weight.shape[0])
            fresh = torch.empty(weight.shape, dtype=weight.dtype).uniform_(-bound, bound, generator=generator)
            weight.copy_(fresh.to(weight.device))
            rows += weight.shape[0]
    optimizer.forget(list(model.embedding.table_weights().values()))
    return rows
