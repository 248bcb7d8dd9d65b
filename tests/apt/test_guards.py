"""What a library user driving apt from a plain PyTorch model gets for each mistake: one clear
error naming the parameter or argument, and no parameter change on a NaN/Inf loss or gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aptrank.apt import ConfigError, MTLConfig, MultiTaskOptimizer, NonFiniteError, ParamRoles

K = 3


class PlainMMoE(nn.Module):
    """An MMoE written without apt in mind: no param_roles(), sparse tables, experts, gates, towers."""

    def __init__(self, k: int = K) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.EmbeddingBag(20, 4, mode="mean", sparse=True)
        self.experts = nn.ModuleList(nn.Linear(6, 5) for _ in range(2))
        self.gates = nn.ModuleList(nn.Linear(6, 2) for _ in range(k))
        self.towers = nn.ModuleList(nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 1)) for _ in range(k))

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([self.table(ids), dense], dim=1)
        rep = torch.stack([torch.relu(e(x)) for e in self.experts], dim=1)
        return [
            t(torch.einsum("be,beh->bh", torch.softmax(g(x), -1), rep)).squeeze(1)
            for g, t in zip(self.gates, self.towers, strict=True)
        ]


PREFIXES = {
    "shared": ["experts.", "gates."],
    "embeddings": ["table."],
    "task": [[f"towers.{k}."] for k in range(K)],
    "output": [f"towers.{k}.2." for k in range(K)],
}


def losses_of(model: PlainMMoE, step: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    ids, dense = torch.randint(0, 20, (8, 3), generator=g), torch.randn(8, 2, generator=g)
    y = torch.randint(0, 2, (8, K), generator=g).float()
    return [F.binary_cross_entropy_with_logits(z, y[:, k]) for k, z in enumerate(model(ids, dense))]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, before[n]) for n, p in model.named_parameters())


# ---- ParamRoles.from_model on a plain module ------------------------------------------------------
def test_from_model_with_prefixes_and_with_a_callable_agree_and_train() -> None:
    model = PlainMMoE()

    def assign(name: str, p: nn.Parameter) -> str | int:
        if name.startswith("towers."):
            return int(name.split(".")[1])
        return "embeddings" if name.startswith("table.") else "shared"

    by_prefix, by_callable = ParamRoles.from_model(model, PREFIXES), ParamRoles.from_model(model, assign)
    assert [id(p) for p in by_prefix.shared] == [id(p) for p in by_callable.shared]
    assert [[id(p) for p in t] for t in by_prefix.task] == [[id(p) for p in t] for t in by_callable.task]
    assert by_prefix.name(model.table.weight, "?") == "table.weight"
    before = snapshot(model)
    opt = MultiTaskOptimizer({"method": "mgda"}, by_prefix, K)
    opt.step(losses_of(model))
    assert not unchanged(model, before)


def test_from_model_says_what_it_needs_without_param_roles() -> None:
    with pytest.raises(ValueError, match=r"PlainMMoE has no param_roles\(\) method; pass roles="):
        ParamRoles.from_model(PlainMMoE())


def test_a_parameter_in_no_role_is_named() -> None:
    roles = {**PREFIXES, "shared": ["experts."]}  # the gates forgotten
    with pytest.raises(ValueError, match=r"parameter 'gates.0.weight' is in no role"):
        ParamRoles.from_model(PlainMMoE(), roles)


def test_a_sparse_table_in_shared_is_named() -> None:
    roles = {**PREFIXES, "shared": ["experts.", "gates.", "table."], "embeddings": []}
    with pytest.raises(
        ValueError, match=r"sparse embedding table 'table.weight' is in 'shared'; put it in 'embeddings'"
    ):
        MultiTaskOptimizer({"method": "mgda"}, ParamRoles.from_model(PlainMMoE(), roles), K)


def test_empty_shared_is_refused() -> None:
    model = PlainMMoE()
    with pytest.raises(ValueError, match="argument 'shared' is empty"):
        MultiTaskOptimizer({"method": "ew"}, ParamRoles(shared=[], embeddings=[model.table.weight]), K)


def test_float_losses_are_refused_with_the_index() -> None:
    model = PlainMMoE()
    opt = MultiTaskOptimizer({"method": "mgda"}, ParamRoles.from_model(model, PREFIXES), K)
    losses = losses_of(model)
    with pytest.raises(ValueError, match=r"losses\[1\] is a float, not a tensor"):
        opt.step([losses[0], losses[1].item(), losses[2]])
    with pytest.raises(ValueError, match=r"losses\[0\] does not require grad"):
        opt.step([loss.detach() for loss in losses])


def test_one_task_with_an_aggregator_is_refused() -> None:
    model = PlainMMoE(k=1)
    roles = ParamRoles.from_model(model, {**PREFIXES, "task": [["towers.0."]], "output": []})
    with pytest.raises(ValueError, match="num_tasks=1 with method 'pcgrad'.*use method 'ew'"):
        MultiTaskOptimizer({"method": "pcgrad"}, roles, 1)
    MultiTaskOptimizer({"method": "ew"}, roles, 1)  # EW (and loss weightings) are fine with K = 1


# ---- NaN / Inf -----------------------------------------------------------------------------------
def inf_gradient(model: PlainMMoE, losses: list[torch.Tensor]) -> list[torch.Tensor]:
    """A finite loss whose gradient w.r.t. a shared weight is Inf (d sqrt(x)/dx at 0)."""
    w = model.experts[0].weight
    return [losses[0] + torch.sqrt(w.sum() - w.sum().detach()), *losses[1:]]


@pytest.mark.parametrize("method", ["ew", "mgda", "nash_mtl", "uw", "famo", "pcgrad", "sdmgrad"])
@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_nonfinite_raises_before_any_parameter_changes(method: str, poison: str) -> None:
    model = PlainMMoE()
    opt = MultiTaskOptimizer({"method": method}, ParamRoles.from_model(model, PREFIXES), K)
    opt.step(losses_of(model, 7))  # method state (FAMO's previous losses, SDMGrad's w) exists
    state, rng = opt.method.state_dict(), opt.generator.get_state()
    before = snapshot(model)
    losses = losses_of(model)
    losses = [losses[0] * float("nan"), *losses[1:]] if poison == "loss" else inf_gradient(model, losses)
    match = "non-finite task loss {'task0': nan}" if poison == "loss" else "non-finite .*gradient"
    with pytest.raises(NonFiniteError, match=match):
        opt.step(losses)
    assert unchanged(model, before)
    assert str(opt.method.state_dict()) == str(state) and torch.equal(opt.generator.get_state(), rng)
    assert all(p.grad is None for p in model.parameters())


def test_skip_mode_counts_and_raises_after_n_in_a_row() -> None:
    model = PlainMMoE()
    cfg = {"method": "mgda", "nonfinite": "skip", "max_skipped_in_a_row": 3}
    opt = MultiTaskOptimizer(cfg, ParamRoles.from_model(model, PREFIXES), K)
    before = snapshot(model)
    for step in range(2):
        assert opt.step(inf_gradient(model, losses_of(model, step))) == {"skipped": 1.0}
    assert unchanged(model, before) and opt.skipped_steps == 2
    opt.step(losses_of(model, 5))  # a good step resets the run of skips
    assert opt.skipped_in_a_row == 0 and not unchanged(model, before)
    for step in range(2):
        opt.step([loss * float("inf") for loss in losses_of(model, step)])
    with pytest.raises(NonFiniteError, match=r"3 steps in a row skipped \(mtl.max_skipped_in_a_row\)"):
        opt.step([loss * float("nan") for loss in losses_of(model, 9)])
    assert opt.skipped_steps == 5


def test_nonfinite_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="mtl.nonfinite"):
        MTLConfig.from_dict({"nonfinite": "ignore"})
    with pytest.raises(ConfigError, match="mtl.max_skipped_in_a_row"):
        MTLConfig.from_dict({"max_skipped_in_a_row": 0})
