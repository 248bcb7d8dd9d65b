"""apt on the project's real rankers (models.build_model): every method and optimizer takes a step.

apt itself never imports models/; this test only checks the interfaces meet (param_roles,
forward_with_intermediates, TorchRec's sparse table gradients).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import aptrank.data.spec as spec_mod
from aptrank import models
from aptrank.apt import METHODS, MTLConfig, MultiTaskOptimizer, ParamRoles

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


def _one_step_grads(spec, cfg: dict, roots: bool) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The gradients one step writes (by name) and how often each tower ran a backward."""
    from aptrank.pipeline.trainer import task_losses

    model = models.build_model("mmoe", spec, SMALL)
    opt = MultiTaskOptimizer(MTLConfig.from_dict(cfg), ParamRoles.from_model(model), len(model.task_names))
    calls = [0] * len(model.towers)
    for k, tower in enumerate(model.towers):
        tower.register_full_backward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    seen: dict[str, torch.Tensor] = {}
    inner = opt.optimizer.step

    def spy(*a, **kw):
        seen.update({n: p.grad.to_dense().clone() for n, p in model.named_parameters() if p.grad is not None})
        return inner(*a, **kw)

    opt.optimizer.step = spy
    batch = models.FeatureBatch.random(spec, 64, torch.Generator().manual_seed(3))
    logits, embedded, rep = model.forward_per_task(batch)
    losses = task_losses(logits, batch.labels[:, model.label_columns])
    opt.step(losses if roots else torch.stack(losses), embedded=embedded, representation=rep)
    return seen, calls


@pytest.mark.parametrize("cfg", [{"method": "mgda"}, {"method": "nash_mtl"}, {"method": "pcgrad", "grad_mode": "rep"}])
def test_separate_loss_roots_skip_other_towers_and_write_the_same_gradients(spec, cfg: dict) -> None:
    """K scalar losses (``forward_per_task`` + ``pipeline.trainer.task_losses``): task k's pass runs
    only tower k's backward; a stacked [K] tensor pushes zeros through every tower in every pass."""
    from_roots, calls_roots = _one_step_grads(spec, cfg, roots=True)
    stacked, calls_stacked = _one_step_grads(spec, cfg, roots=False)
    assert from_roots.keys() == stacked.keys()
    for name, g in stacked.items():
        torch.testing.assert_close(from_roots[name], g, rtol=1e-5, atol=1e-7, msg=name)
    k = len(calls_roots)
    # K task passes + 1 (rep mode; Nash-MTL's weighted pass), or K - 1 task passes + the summed pass
    all_tasks = cfg.get("grad_mode") == "rep" or cfg["method"] == "nash_mtl"
    assert calls_stacked == [k + 1 if all_tasks else k] * k
    assert calls_roots == ([2] * k if all_tasks else [2] * (k - 1) + [1])
