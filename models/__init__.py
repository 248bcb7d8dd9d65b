"""Multi-task rankers on TorchRec embeddings, built from a FeatureSpec (DESIGN.md, ``models/``)."""

from aptrank.models.base import MultiTaskModel
from aptrank.models.config import ModelConfig, ModelConfigError
from aptrank.models.export import ExportModule, export_onnx
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.registry import ARCHITECTURES, ModelSection, build_model, model_config

__all__ = [
    "ARCHITECTURES",
    "ExportModule",
    "FeatureBatch",
    "ModelConfig",
    "ModelConfigError",
    "ModelSection",
    "MultiTaskModel",
    "build_model",
    "export_onnx",
    "model_config",
]
