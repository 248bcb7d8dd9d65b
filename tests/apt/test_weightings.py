"""Loss weightings: UW, DWA, GradNorm, RLW against their formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aptrank.apt import METHODS


def make(name: str, k: int = 3, seed: int = 0, **kw):
    return METHODS[name](k, generator=torch.Generator().manual_seed(seed), **kw)


def test_uw_weights_and_log_variance_gradient() -> None:
    m = make("uw")
    losses = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    comb = m.combine(None, losses)
    s = -0.5
    np.testing.assert_allclose(comb.coef.numpy(), np.full(3, 1 / (2 * np.exp(s))))
    torch.testing.assert_close(comb.tower_weights, comb.coef)
    # d/ds [L / (2 e^s) + s / 2] = -L / (2 e^s) + 1/2
    np.testing.assert_allclose(m.log_var.grad.numpy(), -losses.numpy() / (2 * np.exp(s)) + 0.5)


def test_dwa_weights_from_the_two_previous_epochs() -> None:
    m = make("dwa", T=2.0)
    one = torch.ones(3, dtype=torch.float64)
    assert m.combine(None, one).coef.tolist() == [1.0, 1.0, 1.0]
    m.end_epoch([1.0, 2.0, 3.0])
    assert m.combine(None, one).coef.tolist() == [1.0, 1.0, 1.0]
    m.end_epoch([0.5, 2.0, 4.5])
    r = np.array([0.5, 1.0, 1.5])
    expected = 3 * np.exp(r / 2) / np.exp(r / 2).sum()
    np.testing.assert_allclose(m.combine(None, one).coef.numpy(), expected)
    m.end_epoch([0.5, 1.0, 4.5])  # only the last two epochs count
    r = np.array([1.0, 0.5, 1.0])
    np.testing.assert_allclose(m.combine(None, one).coef.numpy(), 3 * np.exp(r / 2) / np.exp(r / 2).sum())


def test_rlw_weights_are_seeded_positive_and_sum_to_k() -> None:
    one = torch.ones(4, dtype=torch.float64)
    a, b = make("rlw", 4, seed=3), make("rlw", 4, seed=3)
    draws_a = [a.combine(None, one).coef for _ in range(5)]
    draws_b = [b.combine(None, one).coef for _ in range(5)]
    for x, y in zip(draws_a, draws_b, strict=True):
        torch.testing.assert_close(x, y)
        assert float(x.sum()) == pytest.approx(4.0)
        assert bool((x > 0).all())
    assert not torch.equal(draws_a[0], draws_a[1])
    # the reference: K softmax(z), z ~ N(0, I) from the same generator
    z = torch.randn(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(draws_a[0], 4 * torch.softmax(z, 0))


def test_gradnorm_objective_gradient_matches_finite_differences() -> None:
    k, alpha = 3, 1.5
    m = make("gradnorm", k, alpha=alpha)
    one = torch.ones(k, dtype=torch.float64)
    assert not m.needs_gram()
    assert m.combine(None, one).coef.tolist() == [1.0, 1.0, 1.0]  # first epoch: plain sum
    initial = np.array([0.7, 0.6, 0.9])
    m.end_epoch(initial.tolist())
    assert m.needs_gram()
    with torch.no_grad():
        m.scale.copy_(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
    g = np.random.default_rng(0).normal(size=(k, 6))
    losses = np.array([0.5, 0.55, 0.4])
    gram = torch.from_numpy(g @ g.T)
    comb = m.combine(gram, torch.from_numpy(losses))
    s0 = m.scale.detach().numpy().copy()

    def weights(s: np.ndarray) -> np.ndarray:
        return k * np.exp(s) / np.exp(s).sum()

    norms_g = np.linalg.norm(g, axis=1)
    ratio = losses / initial
    r = ratio / ratio.mean()
    target = (weights(s0) * norms_g).mean() * r**alpha  # held constant

    def objective(s: np.ndarray) -> float:
        return float(np.abs(weights(s) * norms_g - target).sum())

    h = 1e-6
    fd = np.array([(objective(s0 + h * e) - objective(s0 - h * e)) / (2 * h) for e in np.eye(k)])
    np.testing.assert_allclose(m.scale.grad.numpy(), fd, atol=1e-6)
    np.testing.assert_allclose(comb.coef.numpy(), weights(s0))
    torch.testing.assert_close(comb.tower_weights, comb.coef)
