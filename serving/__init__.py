"""Serving: ONNX export behind a parity gate, batch scoring, online HTTP scoring (DESIGN.md, ``serving/``).

Scoring path (torch-free): :mod:`serving.onnx_model` (session + metadata), :mod:`serving.features`
(feature lookup through the ETL's own encoder; request-side features by its numpy path),
:mod:`serving.scorer` (features -> probabilities -> fused score), :mod:`serving.batch` /
:mod:`serving.candidates` (``aptrank score``), :mod:`serving.service` / :mod:`serving.holder` /
:mod:`serving.batcher` / :mod:`serving.http_stdlib` (``aptrank serve``). Export path (imports torch):
:mod:`serving.export`, :mod:`serving.parity`. Nothing is imported here, so importing a scoring module
never pulls in the export path.
"""
