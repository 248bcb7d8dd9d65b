"""What several test modules share: the overrides of a tiny MMoE job and of a tiny job of the demo's
architecture (PLE, ``configs/demo.yaml``) on the shipped sample, and the command line that runs the
``aptrank`` CLI in a child process."""

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
CHEAP_TEACHER = [
    "train.distill.folds=2",
    "train.distill.lightgbm.num_rounds=5",
    "train.distill.lightgbm.early_stopping_rounds=5",
]
"""``train.distill``'s teacher (on in ``configs/demo.yaml``) shrunk to 2 folds of 5 rounds: the path runs,
in seconds (``tests/pipeline/test_distill.py`` tests the teacher itself)."""
TINY_DEMO = [
    *CHEAP_TEACHER,
    "model.embedding_dim=4",
    "model.expert_hidden=[8]",
    "model.tower_hidden=[4]",
    "model.ple_shared_experts=1",
    "train.epochs=1",
    "train.batch_size=256",
    "train.threads=1",
]
"""``configs/demo.yaml`` shrunk: its architecture (PLE, one level) with tiny sizes, one epoch."""
CLI = [sys.executable, "-m", "aptrank.pipeline.cli"]
