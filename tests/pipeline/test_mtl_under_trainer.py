"""Every apt method x optimizer x APT on/off trains under the real trainer on a slice of the real
KuaiRand sample and finishes with finite metrics; an invalid combination is refused at config load."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import polars as pl
import pytest

from aptrank.apt import METHODS
from aptrank.pipeline.config import ConfigError, load_config
from aptrank.pipeline.trainer import TrainCallbacks, Trainer
from tests.tiny import TINY_MMOE

ROOT = Path(__file__).resolve().parents[2]
OPTIMIZERS = ("adamw", "adatask", "muon", "adatask_muon")
TINY = [*TINY_MMOE, "train.max_steps_per_epoch=3", "train.eval_batch_size=65536", "mtl.diagnostics_every=1"]


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory: pytest.TempPathFactory, kuairand_dir: Path) -> Path:
    """The real ETL on every 10th user of the shipped KuaiRand sample (all six days kept)."""
    from aptrank.data.etl.config import load_config as load_etl_config
    from aptrank.data.etl.run import run_etl

    raw = tmp_path_factory.mktemp("kuairand-slice")
    for f in kuairand_dir.glob("*.parquet"):
        if f.name.startswith("log_"):
            pl.read_parquet(f).filter(pl.col("user_id") % 10 == 0).write_parquet(raw / f.name)
        else:
            shutil.copyfile(f, raw / f.name)
    out = tmp_path_factory.mktemp("kuairand-slice-etl")
    run_etl("kuairand", raw, out, load_etl_config(ROOT / "configs" / "etl" / "kuairand.yaml"))
    return out


@pytest.mark.parametrize("apt_on", [False, True], ids=["apt-off", "apt-on"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_optimizer_apt_trains_to_finite_metrics(
    slice_dir: Path, tmp_path: Path, method: str, optimizer: str, apt_on: bool
) -> None:
    extra = [f"mtl.method={method}", f"mtl.optimizer={optimizer}", f"mtl.apt.momentum={str(apt_on).lower()}"]
    if apt_on and "muon" in optimizer:
        extra.append("mtl.apt.direction_preservation=true")
    diagnostics: list[dict[str, float]] = []
    callbacks = TrainCallbacks(on_diagnostics=lambda step, stats: diagnostics.append(stats))
    result = Trainer(load_config(None, [*TINY, *extra]), slice_dir, tmp_path / "run", callbacks, progress=False).fit()
    for task, metrics in result.evaluation["test"]["tasks"].items():
        assert math.isfinite(metrics["auc"]) and math.isfinite(metrics["logloss"]), (task, metrics)
    assert diagnostics and all(math.isfinite(v) for d in diagnostics for v in d.values())


def test_invalid_combination_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"direction_preservation.*needs Muon"):
        load_config(None, ["mtl.optimizer=adamw", "mtl.apt.direction_preservation=true"])
    with pytest.raises(ConfigError, match="AdaTask keeps per-task moments"):
        load_config(None, ["mtl.optimizer=adatask", "mtl.grad_mode=rep"])
