"""Multi-task rankers on TorchRec embeddings, built from a FeatureSpec (DESIGN.md, ``models/``)."""

from models.base import MultiTaskModel
from models.batch import FeatureBatch
from models.config import ModelConfig, ModelConfigError
from models.export import ExportModule, export_onnx
from models.registry import ARCHITECTURES, build_model

__all__ = [
    "ARCHITECTURES",
    "ExportModule",
    "FeatureBatch",
    "ModelConfig",
    "ModelConfigError",
    "MultiTaskModel",
    "build_model",
    "export_onnx",
]
