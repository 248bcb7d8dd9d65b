"""The export marks where the sequence branch ends (models.export.user_sequence), and the graph split
there (serving.user_precompute.split_graph) computes the whole graph's bits: every architecture,
folded and not, and under task dependencies (ESMM)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from aptrank.data.spec import INPUT_NAMES, META_USER_SEQUENCE, OUTPUT_NAME, USER_SEQUENCE_TENSOR, FeatureSpec
from aptrank.models.export import export_onnx
from aptrank.models.export.user_sequence import sequence_frontier
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.registry import build_model
from aptrank.models.task_dag import TaskDependency
from aptrank.serving.user_precompute import REST_INPUTS, split_graph

PROVIDERS = ["CPUExecutionProvider"]


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _split_equals_whole(path: Path, spec: FeatureSpec, rows: int = 37) -> None:
    """History part then rest on a random batch (three empty histories): the bits of the whole
    graph, pooled (in a batch and one row at a time) and scored."""
    batch = FeatureBatch.random(spec, rows, torch.Generator().manual_seed(rows))
    feed = {n: t.numpy() for n, t in zip(INPUT_NAMES, batch.inputs(), strict=True)}
    feed["sequence_lengths"][:3] = 0  # empty histories
    whole = onnx.load(str(path))
    whole.graph.output.append(helper.make_tensor_value_info(USER_SEQUENCE_TENSOR, TensorProto.FLOAT, None))
    session = ort.InferenceSession(whole.SerializeToString(), providers=PROVIDERS)
    probabilities, pooled_whole = session.run([OUTPUT_NAME, USER_SEQUENCE_TENSOR], feed)
    history, rest = (
        ort.InferenceSession(p.SerializeToString(), providers=PROVIDERS)
        for p in split_graph(path, USER_SEQUENCE_TENSOR)
    )
    assert [i.name for i in history.get_inputs()] == ["sequence", "sequence_lengths"]
    assert [i.name for i in rest.get_inputs()] == ["categorical", USER_SEQUENCE_TENSOR, "dense"]
    (pooled,) = history.run(None, {n: feed[n] for n in ("sequence", "sequence_lengths")})
    one_by_one = np.concatenate(
        [history.run(None, {n: feed[n][r : r + 1] for n in ("sequence", "sequence_lengths")})[0] for r in range(rows)]
    )
    assert np.array_equal(pooled, pooled_whole) and np.array_equal(one_by_one, pooled)
    (split,) = rest.run(None, {**{n: feed[n] for n in REST_INPUTS}, USER_SEQUENCE_TENSOR: pooled})
    assert np.array_equal(split, probabilities)
    assert not pooled[:3].any() and pooled[3:].any()  # an empty history pools to zeros


@pytest.mark.parametrize("fold_rows", [0, 512], ids=["plain", "folded"])
def test_every_architecture_marks_its_sequence_branch(
    spec: FeatureSpec, arch: str, small: dict, tmp_path: Path, fold_rows: int
) -> None:
    model = build_model(arch, spec, small).eval()
    path = export_onnx(model, tmp_path / f"{arch}.onnx", spec, fold_rows=fold_rows)
    assert _meta(path)[META_USER_SEQUENCE] == USER_SEQUENCE_TENSOR
    width = len(spec.sequence) * small["embedding_dim"]  # type: ignore[operator]
    shapes = {v.name: v for v in onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph.value_info}
    assert shapes[USER_SEQUENCE_TENSOR].type.tensor_type.shape.dim[1].dim_value == width
    _split_equals_whole(path, spec)


def test_esmm_marks_its_sequence_branch(spec: FeatureSpec, small: dict, tmp_path: Path) -> None:
    edges = {"finish": TaskDependency(given="click"), "like": TaskDependency(given="click")}
    model = build_model("ple", spec, small, edges).eval()
    path = export_onnx(model, tmp_path / "esmm.onnx", spec)
    assert _meta(path)[META_USER_SEQUENCE] == USER_SEQUENCE_TENSOR
    _split_equals_whole(path, spec, rows=64)


def test_no_marker_without_sequence_features(spec: FeatureSpec, small: dict, tmp_path: Path) -> None:
    variant = dataclasses.replace(spec, sequence=())
    path = export_onnx(build_model("mmoe", variant, small).eval(), tmp_path / "m.onnx", variant)
    assert META_USER_SEQUENCE not in _meta(path)


def _graph(*nodes: onnx.NodeProto) -> ir.Graph:
    """A graph with the four model inputs ([B, 4] each, float) and the nodes' last output."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in INPUT_NAMES]
    output = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph(list(nodes), "g", inputs, [output])
    return ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph))).graph


def test_the_frontier_is_one_tensor_or_none() -> None:
    pooled = helper.make_node("Add", ["sequence", "sequence_lengths"], ["pooled"])
    one = _graph(pooled, helper.make_node("Add", ["pooled", "categorical"], ["probabilities"]))
    assert sequence_frontier(one) is not None and sequence_frontier(one).name == "pooled"  # type: ignore[union-attr]
    two = _graph(
        helper.make_node("Relu", ["sequence"], ["a"]),
        helper.make_node("Relu", ["sequence_lengths"], ["b"]),
        helper.make_node("Add", ["a", "categorical"], ["c"]),
        helper.make_node("Add", ["b", "c"], ["probabilities"]),
    )
    assert sequence_frontier(two) is None  # the branch leaves through two tensors
    mixed = _graph(
        helper.make_node("Add", ["sequence", "categorical"], ["a"]),
        helper.make_node("Add", ["a", "sequence_lengths"], ["probabilities"]),
    )
    assert sequence_frontier(mixed) is None  # the sequence inputs are read together with another input
