"""Fit a model's dense-feature encoding to the training split before training (``model.dense_encoding``).

The piecewise-linear encoding (:mod:`aptrank.models.dense_encoding`, Gorishniy et al., NeurIPS 2022)
cuts each dense feature at its training-split quantiles. They are computed here from the dense
inputs exactly as the model receives them (the ETL's standardized values, read by the trainer's own
:class:`~aptrank.pipeline.loader.ExampleLoader`) and stored in the model's buffers, so checkpoints,
the ONNX export and every scorer carry them; nothing else in the pipeline reads them.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from aptrank.pipeline.loader import ExampleLoader


def fit_dense_encoding(model: nn.Module, loader: ExampleLoader) -> int:
    """Set ``model``'s dense-encoding edges from every row of ``loader`` (the training split, in file
    order: the result does not depend on the seed). Returns the rows read (0 when the model has no
    dense encoding: nothing is read)."""
    encoder = model.embedding.dense_encoder
    if encoder is None:
        return 0
    dense = np.concatenate([batch.dense.numpy() for batch, _, _ in loader.ordered_batches()])
    encoder.fit(dense)
    return int(dense.shape[0])
