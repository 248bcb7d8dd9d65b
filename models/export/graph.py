"""Export graph: plain tensors in, per-task probabilities out (DESIGN.md contract 5), and ONNX export.

``ExportModule`` runs a trained model without TorchRec's KeyedJaggedTensor: the embedding pooling is
recomputed with plain ops on the same table weights (``SpecEmbedding.forward_plain`` on
:class:`~aptrank.models.embedding.FusedTables`), then the dense part in the form the architecture
gives for export (``MultiTaskModel.export_head``: MMoE and PLE fused, Shared-Bottom with its
bottom's first layer exposed) and a sigmoid; under task dependencies (``models.task_dag``, ESMM) a
child's output is its sigmoid times its parent's probability, the product inside the graph, so every
scorer reads entire-space ``p_<task>`` without knowing the dependencies. When the head starts with
one Linear layer ``first``, the categorical features with small tables are folded into it
(:mod:`aptrank.models.export.fold`). The fused tables, the fused heads and the folded layer are
copies of the weights made when the module is built: build it after training. ``export_onnx`` writes
it with the dynamo-based ``torch.onnx.export`` (a dynamic batch axis shared by all inputs) and embeds
the FeatureSpec in the ONNX metadata, so scorers can check the features they are sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from aptrank.data.spec import (
    INPUT_NAMES,
    META_FEATURE_SPEC,
    META_FEATURE_SPEC_HASH,
    META_TASK_NAMES,
    OUTPUT_NAME,
    USER_FIRST_LAYER_TENSOR,
    FeatureSpec,
    SpecError,
)
from aptrank.models.base import MultiTaskModel
from aptrank.models.embedding import FusedTables
from aptrank.models.export.fold import FOLD_MAX_ROWS
from aptrank.models.export.user_sequence import mark_user_tensors
from aptrank.models.export.user_side import UserSplitFirstLayer, fold_first_layer
from aptrank.models.feature_batch import FeatureBatch

EXAMPLE_BATCH_SIZE = 5  # not 0 or 1: torch.export would specialise the batch axis on those


class ExportModule(nn.Module):
    """``forward(categorical, sequence, sequence_lengths, dense) -> probabilities [B, K]``.

    ``fold_rows``: when the export head starts with a Linear layer (``first``: the fused MMoE/PLE
    GEMM, Shared-Bottom's bottom) and some categorical features have at most this many rows, their tables are folded
    into that layer (:func:`~aptrank.models.export.fold.fold_first_layer`); 0 turns folding off.
    """

    def __init__(self, model: MultiTaskModel, fold_rows: int = FOLD_MAX_ROWS) -> None:
        super().__init__()
        if fold_rows < 0:
            raise ValueError(f"ExportModule: fold_rows must be >= 0, got {fold_rows}")
        self.model = model
        self.tables = FusedTables(model.embedding) if model.embedding.ebc is not None else None
        self.head = model.export_head()
        first = getattr(self.head, "first", None)
        foldable = self.tables is not None and isinstance(first, nn.Linear)
        self.fold = fold_first_layer(model.embedding, first, fold_rows) if foldable else None  # type: ignore[arg-type]
        self.user_output = False
        """Whether ``forward`` also returns the first layer's user part (``export_onnx`` names it)."""

    def forward(
        self,
        categorical: torch.Tensor,
        sequence: torch.Tensor,
        sequence_lengths: torch.Tensor,
        dense: torch.Tensor,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.user_output and isinstance(self.fold, UserSplitFirstLayer):
            first, user = self.fold.parts(categorical, sequence, sequence_lengths, dense)
            return self.model.task_dag.probabilities(self.head.after_first(first)), user
        if self.fold is not None:
            logits = self.head.after_first(self.fold(categorical, sequence, sequence_lengths, dense))
        else:
            embedded = self.model.embedding.forward_plain(categorical, sequence, sequence_lengths, dense, self.tables)
            logits = self.head(embedded)
        return self.model.task_dag.probabilities(logits)  # sigmoid; times the parent's p under task dependencies


def export_onnx(model: MultiTaskModel, path: str | Path, spec: FeatureSpec, fold_rows: int = FOLD_MAX_ROWS) -> Path:
    """Write ``model`` as an ONNX graph with inputs ``INPUT_NAMES`` (dynamic batch axis) and output
    ``OUTPUT_NAME`` [B, K] (probabilities, columns in ``model.task_names`` order).

    Metadata: ``feature_spec`` (the spec's JSON), ``feature_spec_hash``, ``task_names`` (JSON list),
    and ``aptrank.user_tensors``: the tensors that depend on the user's snapshot row alone (the first
    layer's user part, :mod:`~aptrank.models.export.user_side`; the pooled histories,
    :mod:`~aptrank.models.export.user_sequence`), which scorers compute once per user.
    Weights go to an external data file only when the model exceeds ONNX's 2 GB limit. The model is
    exported in eval mode and its training flag is restored afterwards.
    """
    if spec.hash != model.spec.hash:
        raise SpecError(
            f"export_onnx: FeatureSpec {spec.hash[:12]} is not the one the model was built from "
            f"({model.spec.hash[:12]})"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = FeatureBatch.random(spec, EXAMPLE_BATCH_SIZE, torch.Generator().manual_seed(0), with_labels=False)
    batch = torch.export.Dim("batch")
    was_training = model.training
    try:
        module = ExportModule(model, fold_rows).eval()
        module.user_output = isinstance(module.fold, UserSplitFirstLayer)
        outputs = [OUTPUT_NAME, USER_FIRST_LAYER_TENSOR] if module.user_output else [OUTPUT_NAME]
        program = torch.onnx.export(
            module,
            example.inputs(),
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=outputs,
            dynamic_shapes=tuple({0: batch} for _ in INPUT_NAMES),
            verbose=False,
        )
    finally:
        model.train(was_training)
    if program is None:  # only the legacy (dynamo=False) exporter returns None
        raise RuntimeError("export_onnx: torch.onnx.export returned no program")
    program.model.metadata_props.update(
        {
            META_FEATURE_SPEC: spec.to_json(),
            META_FEATURE_SPEC_HASH: spec.hash,
            META_TASK_NAMES: json.dumps(model.task_names),
        }
    )
    if module.user_output:  # named while it was an output; the contract's graph has one
        program.model.graph.outputs.pop()
    mark_user_tensors(program.model, USER_FIRST_LAYER_TENSOR if module.user_output else None)
    program.save(path)
    return path
