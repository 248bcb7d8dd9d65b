"""Task dependencies (ESMM): the entire-space product and its loss on a hand-made batch, stability at
extreme logits, refusals of cycles / self-loops / unknown tasks, and ONNX parity with the product in
the exported graph for every multi-task architecture."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from aptrank.data.spec import INPUT_NAMES, FeatureSpec
from aptrank.models.config import ModelConfigError
from aptrank.models.export import export_onnx
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.registry import build_model
from aptrank.models.task_dag import TaskDag, TaskDependency, check_acyclic, log1mexp
from aptrank.pipeline.config import ConfigError, load_config
from aptrank.pipeline.objective import task_losses

TASKS = ["click", "like", "finish"]


def given(parent: str, conditional_loss: bool = False) -> TaskDependency:
    return TaskDependency(given=parent, conditional_loss=conditional_loss)


def esmm_dag(conditional_loss: bool = False) -> TaskDag:
    edges = {"finish": given("click", conditional_loss), "like": given("click", conditional_loss)}
    return TaskDag(TASKS, TASKS, edges)


# logits: click 0 (p = 1/2); like -ln 3 (p(like|click) = 1/4); finish ln 3 (p(finish|click) = 3/4)
LOGITS = torch.tensor([[0.0, -math.log(3.0), math.log(3.0)]] * 2, dtype=torch.float64)
# row 0: clicked, liked, not finished; row 1: nothing
LABELS = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)


def test_product_on_a_hand_made_batch() -> None:
    dag = esmm_dag()
    expected = torch.tensor([[0.5, 0.125, 0.375]] * 2, dtype=torch.float64)
    assert torch.allclose(dag.probabilities(LOGITS), expected, atol=1e-15)
    assert torch.allclose(torch.sigmoid(dag.entire_space_logits(LOGITS)), expected, atol=1e-12)
    log_p = dag.log_probabilities(list(LOGITS.unbind(1)))
    assert torch.allclose(torch.stack(log_p, 1).exp(), expected, atol=1e-15)


def test_entire_space_loss_by_hand() -> None:
    losses = task_losses(list(LOGITS.unbind(1)), LABELS, esmm_dag())
    click = -(math.log(0.5) + math.log(0.5)) / 2
    like = -(math.log(0.125) + math.log(0.875)) / 2
    finish = -(math.log(0.625) + math.log(0.625)) / 2
    assert [float(x) for x in losses] == pytest.approx([click, like, finish], abs=1e-12)


def test_conditional_loss_adds_the_parent_positive_rows() -> None:
    losses = task_losses(list(LOGITS.unbind(1)), LABELS, esmm_dag(conditional_loss=True))
    like = -(math.log(0.125) + math.log(0.875)) / 2 - math.log(0.25)  # one clicked row, liked
    finish = -(math.log(0.625) + math.log(0.625)) / 2 - math.log(0.25)  # one clicked row, not finished
    assert [float(x) for x in losses[1:]] == pytest.approx([like, finish], abs=1e-12)
    # no parent-positive row: the conditional term is 0, not NaN
    none = task_losses(list(LOGITS.unbind(1)), torch.zeros_like(LABELS), esmm_dag(conditional_loss=True))
    plain = task_losses(list(LOGITS.unbind(1)), torch.zeros_like(LABELS), esmm_dag())
    assert [float(x) for x in none] == [float(x) for x in plain]


def test_a_chain_multiplies_along_it() -> None:
    dag = TaskDag(TASKS, TASKS, {"finish": given("like"), "like": given("click")})
    assert dag.order.index(0) < dag.order.index(1) < dag.order.index(2)
    assert torch.allclose(dag.probabilities(LOGITS)[:, 2], torch.full((2,), 0.5 * 0.25 * 0.75, dtype=torch.float64))


def test_extreme_logits_keep_finite_losses_and_gradients() -> None:
    logits = torch.tensor([[60.0, 60.0, -60.0], [-60.0, -60.0, 60.0], [60.0, -60.0, 60.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    losses = task_losses(list(logits.unbind(1)), labels, esmm_dag(conditional_loss=True))
    torch.stack(losses).sum().backward()
    assert all(math.isfinite(float(x.detach())) for x in losses)
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    points = [-1e-30, -0.5, -1.0, -80.0]
    exact = [math.log(-math.expm1(x)) for x in points]  # -69.08, -0.9328, -0.4587, -1.8e-35
    assert log1mexp(torch.tensor(points, dtype=torch.float64)).tolist() == pytest.approx(exact, rel=1e-12)
    assert math.isfinite(float(log1mexp(torch.tensor([0.0]))))  # p = 1 in float32: clamped, finite


def test_no_dependencies_is_the_identity(spec: FeatureSpec, small: dict, batch: FeatureBatch) -> None:
    dag = TaskDag(TASKS, TASKS)
    assert not dag.has_dependencies and dag.entire_space_logits(LOGITS) is LOGITS
    plain, with_empty = build_model("mmoe", spec, small), build_model("mmoe", spec, small, {})
    assert torch.equal(plain(batch), with_empty(batch))
    losses = task_losses(list(LOGITS.unbind(1)), LABELS)
    assert [float(x) for x in losses] == [float(x) for x in task_losses(list(LOGITS.unbind(1)), LABELS, dag)]


@pytest.mark.parametrize(
    ("tasks", "key", "reason"),
    [
        ("{click: {given: click}}", "tasks.click.given", "self-loop"),
        ("{click: {given: finish}, finish: {given: like}, like: {given: click}}", "tasks.click.given", "cycle"),
    ],
)
def test_cycles_are_refused_at_config_load(tmp_path: Path, tasks: str, key: str, reason: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(f"tasks: {tasks}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key and reason in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(ModelConfigError, match="self-loop"):
        check_acyclic({"a": given("a")})


def test_unknown_tasks_are_refused_once_the_spec_is_known(spec: FeatureSpec, small: dict) -> None:
    with pytest.raises(ModelConfigError) as caught:
        build_model("mmoe", spec, small, {"finish": given("share")})
    assert caught.value.key == "tasks.finish.given" and "'share' is not a task" in str(caught.value)
    with pytest.raises(ModelConfigError) as caught:
        build_model("mmoe", spec, small, {"share": given("click")})
    assert caught.value.key == "tasks.share"


def test_single_task_baseline_keeps_an_independent_head(spec: FeatureSpec, small: dict) -> None:
    model = build_model("single_task", spec, {**small, "task": "finish"}, {"finish": given("click")})
    assert not model.task_dag.has_dependencies


@pytest.mark.parametrize("arch", ["mmoe", "ple", "shared_bottom"])
@pytest.mark.parametrize("fold_rows", [0, 4096], ids=["plain", "folded"])
def test_onnx_parity_with_the_product_in_the_graph(
    spec: FeatureSpec, small: dict, tmp_path: Path, arch: str, fold_rows: int
) -> None:
    edges = {"finish": given("like"), "like": given("click")}
    model = build_model(arch, spec, small, edges).eval()
    with torch.no_grad():  # towers far from 0, so the product differs from independent sigmoids
        for tower in model.towers:
            tower.out.bias.add_(1.5)
    path = export_onnx(model, tmp_path / f"{arch}.onnx", spec, fold_rows=fold_rows)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    b = FeatureBatch.random(spec, 37, torch.Generator().manual_seed(5))
    (got,) = session.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, b.inputs(), strict=True)})
    with torch.no_grad():
        expected = torch.sigmoid(model(b)).numpy()
        towers = torch.sigmoid(model.head(model.embedding(b))[0]).numpy()
    assert np.abs(got - expected).max() <= 1e-5
    click, like, finish = (model.task_names.index(t) for t in ("click", "like", "finish"))
    product = towers[:, click] * towers[:, like] * towers[:, finish]
    assert np.abs(got[:, finish] - product).max() <= 1e-6
    assert (got[:, finish] <= got[:, like]).all() and (got[:, like] <= got[:, click]).all()
    assert np.abs(got[:, finish] - towers[:, finish]).min() > 1e-3  # not the independent head
