"""What several test modules share: the overrides of a tiny MMoE job on the shipped sample, and the
command line that runs the ``aptrank`` CLI in a child process."""

from __future__ import annotations

import sys

TINY_MMOE = [
    "model.arch=mmoe",
    "model.embedding_dim=4",
    "model.expert_hidden=[8]",
    "model.tower_hidden=[4]",
    "model.num_experts=2",
    "train.epochs=1",
    "train.batch_size=256",
    "train.threads=1",
]
CLI = [sys.executable, "-m", "aptrank.pipeline.cli"]
