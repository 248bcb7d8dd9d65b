"""Architectures by name: ``build_model(arch, spec, config)``.

K (the tasks) comes from the FeatureSpec; sizes come from ``ModelConfig``. Parameters are
initialised from the global torch RNG (``torch.manual_seed``) or, when ``config.seed`` is set, from
that seed in a forked RNG, so the same seed always gives the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.config import ModelConfig
from aptrank.models.mmoe import MMoE
from aptrank.models.ple import PLE
from aptrank.models.shared_bottom import SharedBottom, SingleTask

ARCHITECTURES: dict[str, Callable[[FeatureSpec, ModelConfig], MultiTaskModel]] = {
    "single_task": SingleTask,
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
}


def build_model(arch: str, spec: FeatureSpec, config: dict[str, Any] | ModelConfig | None = None) -> MultiTaskModel:
    """A fresh model of architecture ``arch`` for ``spec`` (``config``: a ``ModelConfig`` or its dict)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model architecture '{arch}'; known: {sorted(ARCHITECTURES)}")
    cfg = ModelConfig.from_dict(config)
    if cfg.seed is None:
        return ARCHITECTURES[arch](spec, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return ARCHITECTURES[arch](spec, cfg)
