"""Row-wise Adagrad for tables against a plain per-row reference, sparse and dense gradients."""

from __future__ import annotations

import torch
from torch import nn

from aptrank.apt import MTLConfig, MultiTaskOptimizer, ParamRoles


def reference(weight: torch.Tensor, grads: list[torch.Tensor], lr: float, eps: float) -> torch.Tensor:
    w = weight.clone().double()
    acc = torch.zeros(w.shape[0], dtype=torch.float64)
    for g in grads:
        g = g.double()
        for r in range(w.shape[0]):
            if g[r].abs().sum() > 0:
                acc[r] += (g[r] ** 2).mean()
                w[r] -= lr * g[r] / (acc[r].sqrt() + eps)
    return w


def run(sparse: bool) -> None:
    torch.manual_seed(0)
    table = nn.EmbeddingBag(10, 4, mode="sum", sparse=sparse)
    head = nn.Linear(4, 2)
    start = table.weight.detach().clone()
    cfg = MTLConfig.from_dict({"method": "ew", "lr": 0.05, "embedding_optimizer": "rowwise_adagrad", "eps": 1e-8})
    opt = MultiTaskOptimizer(cfg, ParamRoles(shared=list(head.parameters()), embeddings=[table.weight]), 2)
    seen = []
    for step in range(4):
        ids = torch.tensor([[1, 3], [3, 7], [step, 1]])  # duplicates within and across bags
        emb = table(ids)
        losses = head(emb).pow(2).mean(dim=0)
        g = torch.autograd.grad(losses.sum(), table.weight, retain_graph=True)[0]
        seen.append(g.to_dense() if g.is_sparse else g)
        opt.step(losses, embedded=emb)
    expected = reference(start, seen, 0.05, 1e-8)
    torch.testing.assert_close(table.weight.detach().double(), expected, rtol=1e-5, atol=1e-6)
    untouched = [r for r in range(10) if r not in (0, 1, 2, 3, 7)]
    assert torch.equal(table.weight.detach()[untouched], start[untouched])


def test_rowwise_adagrad_sparse_matches_reference() -> None:
    run(sparse=True)


def test_rowwise_adagrad_dense_matches_reference() -> None:
    run(sparse=False)
