"""train.meda: fresh embedding tables at each epoch start after the first, the dense part kept."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from aptrank.pipeline.config import ConfigError, load_config
from aptrank.pipeline.meda import reinitialise_tables
from aptrank.pipeline.trainer import TrainCallbacks, Trainer
from tests.pipeline.test_dense_fit import TINY

MEDA = [*TINY[:-2], "train.epochs=2", "train.patience=5"]


class Crash(RuntimeError):
    pass


def test_tables_are_redrawn_and_their_optimizer_state_dropped(etl_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(load_config(None, MEDA), etl_dir, tmp_path / "r", progress=False)
    trainer.train_epoch(0)
    model, optimizer = trainer.model, trainer.optimizer
    tables = model.embedding.table_weights()
    dense = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("embedding.ebc")}
    assert all(w in optimizer.optimizer.state for w in tables.values()), "the tables were trained"
    before = {n: w.detach().clone() for n, w in tables.items()}
    rows = reinitialise_tables(model, optimizer, seed=7, epoch=1)
    assert rows == sum(w.shape[0] for w in tables.values())
    for name, w in tables.items():
        assert not torch.equal(w, before[name])
        assert w.abs().max() <= math.sqrt(1.0 / w.shape[0]), "TorchRec's initial range"
        assert w not in optimizer.optimizer.state
    assert all(torch.equal(p, dense[n]) for n, p in model.named_parameters() if n in dense), "dense part kept"
    drawn = {n: w.detach().clone() for n, w in tables.items()}
    reinitialise_tables(model, optimizer, seed=7, epoch=1)
    assert all(torch.equal(w, drawn[n]) for n, w in tables.items()), "the same (seed, epoch), the same tables"


def test_meda_run_resumes_exactly_and_differs_from_plain_training(etl_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(None, [*MEDA, "train.meda=true"])
    full = Trainer(cfg, etl_dir, tmp_path / "full", progress=False).fit()
    plain = Trainer(load_config(None, MEDA), etl_dir, tmp_path / "plain", progress=False).fit()
    assert full.history[0]["valid"] == plain.history[0]["valid"], "epoch 0 is the same training"
    assert full.history[1]["valid"] != plain.history[1]["valid"]

    def crash_after_first(epoch: int, record: dict) -> None:
        if epoch == 0:
            raise Crash("killed after epoch 0")

    with pytest.raises(Crash):
        Trainer(cfg, etl_dir, tmp_path / "cut", TrainCallbacks(on_epoch_end=crash_after_first), progress=False).fit()
    resumed = Trainer(cfg, etl_dir, tmp_path / "cut", progress=False)
    resumed.resume()
    assert [h["valid"] for h in resumed.fit().history] == [h["valid"] for h in full.history]


def test_meda_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"train\.meda: expected true or false"):
        load_config(None, [*MEDA, "train.meda=often"])
