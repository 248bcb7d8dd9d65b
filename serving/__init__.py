"""Serving: batch scoring and online HTTP scoring of exported ONNX models (DESIGN.md, ``serving/``).

Scoring path (torch-free): :mod:`serving.onnx_model` (session + metadata), :mod:`serving.features`
(feature lookup through the ETL's own encoder; request-side features by its numpy path),
:mod:`serving.scorer` (features -> probabilities -> fused score), :mod:`serving.batch_scoring` /
:mod:`serving.candidates` (``aptrank score``), :mod:`serving.service` / :mod:`serving.holder` /
:mod:`serving.app` / :mod:`serving.runner` (``aptrank serve``). The package never imports torch;
the export (and its parity gate) is a model capability, :mod:`aptrank.models.export`.
"""
