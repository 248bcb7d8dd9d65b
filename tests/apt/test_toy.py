"""The classic two-objective toy (CAGrad / Nash-MTL papers): MGDA, CAGrad and Nash-MTL reach the
Pareto front from each of the papers' three starting points."""

from __future__ import annotations

import pytest
import torch

from aptrank.apt import toy


def test_pareto_front_is_pareto_stationary() -> None:
    for x in toy.pareto_front(9):
        assert toy.pareto_gap(x) < 1e-9
    assert toy.pareto_gap(torch.tensor([0.0, -7.0])) > 0.01


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mgda", "cagrad", "nash_mtl"])
@pytest.mark.parametrize("init", toy.INITS)
def test_method_reaches_the_pareto_front(method: str, init: tuple[float, float]) -> None:
    end = toy.run(method, init, steps=1000)[-1]
    assert toy.front_distance(end) < 0.02, (method, init, end.tolist())
