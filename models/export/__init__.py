"""Export as a model capability: a trained ranker -> one ONNX graph, behind a parity gate.

Every piece of the export lives here; an architecture only provides its export-time head
(``MultiTaskModel.export_head``) in its own module.

* :mod:`~aptrank.models.export.graph`: ``ExportModule`` (plain-tensor forward) and ``export_onnx``.
* :mod:`~aptrank.models.export.fold`: small embedding tables folded into the head's first layer.
* :mod:`~aptrank.models.export.user_side`: that first layer as a user part (the snapshot's user row
  fixes it) plus the rest.
* :mod:`~aptrank.models.export.user_sequence`: the per-user tensors recorded in the metadata.
* :mod:`~aptrank.models.export.parity`: the parity rows and the PyTorch-vs-onnxruntime comparison.
* :mod:`~aptrank.models.export.checked`: ``export_checked``, nothing written unless parity passes.
"""

from aptrank.models.export.checked import ExportResult, export_checked
from aptrank.models.export.fold import FOLD_MAX_ROWS
from aptrank.models.export.graph import EXAMPLE_BATCH_SIZE, ExportModule, export_onnx
from aptrank.models.export.parity import (
    PARITY_ROWS,
    PARITY_TOLERANCE,
    ParityError,
    ParityReport,
    check_parity,
    parity_rows,
)

__all__ = [
    "EXAMPLE_BATCH_SIZE",
    "FOLD_MAX_ROWS",
    "PARITY_ROWS",
    "PARITY_TOLERANCE",
    "ExportModule",
    "ExportResult",
    "ParityError",
    "ParityReport",
    "check_parity",
    "export_checked",
    "export_onnx",
    "parity_rows",
]
