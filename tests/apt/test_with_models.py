"""apt on the project's real rankers (models.build_model): every method and optimizer takes a step.

apt itself never imports models/; this test only checks the interfaces meet (param_roles,
forward_with_intermediates, TorchRec's sparse table gradients).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import data.spec as spec_mod
import models
from apt import METHODS, MTLConfig, MultiTaskOptimizer, ParamRoles

SMALL = {
    "embedding_dim": 4,
    "expert_hidden": [8, 6],
    "bottom_hidden": [8, 6],
    "tower_hidden": [5],
    "num_experts": 3,
    "seed": 0,
}


@pytest.fixture(scope="module")
def spec():
    s = spec_mod
    return s.FeatureSpec(
        tasks=s.DEFAULT_TASKS,
        categorical=(s.CategoricalFeature("user_id", "user", 7), s.CategoricalFeature("item_id", "item", 11)),
        sequence=(s.SequenceFeature("recent_items", "item", 11, max_len=4),),
        dense=(s.DenseFeature("duration", 1.0, 2.0),),
    )


def train(arch: str, spec, cfg: dict, steps: int = 3) -> tuple[list[float], dict]:
    model = models.build_model(arch, spec, SMALL)
    k = len(model.task_names)
    opt = MultiTaskOptimizer(MTLConfig.from_dict(cfg), ParamRoles.from_model(model), k)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen_sparse = []
    inner = opt.optimizer.step

    def spy(*a, **kw):
        seen_sparse.extend(p.grad.is_sparse for p in opt.roles.embeddings if p.grad is not None)
        return inner(*a, **kw)

    opt.optimizer.step = spy
    totals, metrics = [], {}
    for t in range(steps):
        batch = models.FeatureBatch.random(spec, 64, torch.Generator().manual_seed(t % 2))
        logits, embedded, rep = model.forward_with_intermediates(batch)
        losses = F.binary_cross_entropy_with_logits(logits, batch.labels[:, model.label_columns], reduction="none")
        losses = losses.mean(0)
        totals.append(float(losses.detach().sum()))
        metrics = opt.step(losses, embedded=embedded, representation=rep)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before), set(before) - set(moved)
    if cfg.get("grad_scope", "dense") == "dense":
        assert seen_sparse and all(seen_sparse)  # tables always get sparse rows
    return totals, metrics


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_steps_mmoe(spec, method: str) -> None:
    train("mmoe", spec, {"method": method})


@pytest.mark.parametrize("optimizer", ["adamw", "adatask", "muon", "adatask_muon"])
@pytest.mark.parametrize("arch", ["shared_bottom", "mmoe", "ple"])
def test_every_optimizer_with_apt_steps_each_architecture(spec, arch: str, optimizer: str) -> None:
    muon = "muon" in optimizer
    cfg = {
        "method": "pcgrad",
        "optimizer": optimizer,
        "diagnostics_every": 1,
        "apt": {"momentum": True, "direction_preservation": muon},
    }
    _, metrics = train(arch, spec, cfg)
    assert "apt/instant_share" in metrics and "grad_cos/task0_task1" in metrics


@pytest.mark.parametrize("cfg", [{"method": "mgda", "grad_mode": "rep"}, {"method": "cagrad", "grad_scope": "all"}])
def test_rep_mode_and_scope_all_on_mmoe(spec, cfg: dict) -> None:
    train("mmoe", spec, cfg)
