"""model.dense_encoding under the trainer: the bins are the training split's quantiles, they travel in
the checkpoint, and the trained model exports through the parity gate on real test rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aptrank.data.spec import FeatureSpec
from aptrank.models.dense_encoding import quantile_edges
from aptrank.models.export import export_checked, parity_rows
from aptrank.models.registry import build_model
from aptrank.pipeline import checkpoint
from aptrank.pipeline.config import load_config
from aptrank.pipeline.dense_fit import fit_dense_encoding
from aptrank.pipeline.loader import ExampleLoader, split_files
from aptrank.pipeline.trainer import Trainer

TINY = [
    "model.arch=ple",
    "model.embedding_dim=4",
    "model.expert_hidden=[16]",
    "model.tower_hidden=[8]",
    "model.ple_levels=1",
    "train.batch_size=512",
    "train.max_steps_per_epoch=6",
    "train.eval_batch_size=16384",
    "train.threads=1",
    "train.epochs=1",
    "model.dense_encoding={bins: 8, dim: 2}",
]


def test_trainer_fits_the_bins_on_the_training_split_and_exports_them(etl_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(load_config(None, TINY), etl_dir, tmp_path / "run", progress=False)
    loader = ExampleLoader(trainer.spec, split_files(etl_dir, "train"), 4096)
    train_dense = np.concatenate([b.dense.numpy() for b, _, _ in loader.ordered_batches()])
    assert train_dense.shape == (loader.num_rows, len(trainer.spec.dense)) and loader.num_rows > 10_000
    left, inverse = quantile_edges(train_dense, 8)
    encoder = trainer.model.embedding.dense_encoder
    assert torch.equal(encoder.left, torch.from_numpy(left).float())
    assert torch.equal(encoder.inverse_width, torch.from_numpy(inverse).float())
    assert (inverse > 0).sum(axis=1).min() >= 4, "every KuaiRand dense feature keeps several live bins"

    trainer.fit()
    best = checkpoint.load(checkpoint.best_path(tmp_path / "run"))
    assert torch.equal(best["embedding.dense_encoder.left"], encoder.left)
    model = build_model("ple", trainer.spec, trainer.cfg.model_seeded)
    model.load_state_dict(best)
    result = export_checked(model.eval(), trainer.spec, tmp_path / "m.onnx", parity_rows(etl_dir, trainer.spec))
    assert result.parity.max_abs_diff <= 1e-5 and result.parity.rows > 0


def test_a_model_without_the_encoding_reads_nothing(etl_dir: Path) -> None:
    cfg = load_config(None, TINY[:-1])
    model = build_model("ple", FeatureSpec.read(etl_dir), cfg.model_seeded)
    assert model.embedding.dense_encoder is None
    assert fit_dense_encoding(model, ExampleLoader(model.spec, split_files(etl_dir, "train"), 4096)) == 0
