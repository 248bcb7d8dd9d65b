"""The export records the graph's per-user tensors (models.export.user_side, .user_sequence), and the
graph split at each (serving.user_precompute.split_graph) computes the whole graph's bits: every
architecture, folded and plain, under task dependencies (ESMM), on the tiny spec (histories only)
and on the real ETL spec (the first layer's user part too, from the user-side columns alone)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from aptrank.data.feature_sides import USER, spec_sides
from aptrank.data.spec import (
    INPUT_NAMES,
    META_USER_TENSORS,
    OUTPUT_NAME,
    USER_FIRST_LAYER_TENSOR,
    USER_SEQUENCE_TENSOR,
    FeatureSpec,
)
from aptrank.models.export import ExportModule, export_checked, export_onnx, parity_rows
from aptrank.models.export.user_sequence import sequence_frontier
from aptrank.models.export.user_side import UserSplitFirstLayer
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.registry import build_model
from aptrank.models.task_dag import TaskDependency
from aptrank.serving.user_precompute import REST_INPUTS, split_graph

PROVIDERS = ["CPUExecutionProvider"]


def _tensors(path: Path) -> list[str]:
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(meta[META_USER_TENSORS]) if META_USER_TENSORS in meta else []


def _random_feed(spec: FeatureSpec, rows: int = 37) -> dict[str, np.ndarray]:
    batch = FeatureBatch.random(spec, rows, torch.Generator().manual_seed(rows))
    feed = {n: t.numpy() for n, t in zip(INPUT_NAMES, batch.inputs(), strict=True)}
    feed["sequence_lengths"][:3] = 0  # empty histories
    return feed


def _split_equals_whole(
    path: Path, feed: dict[str, np.ndarray], user_only: dict[str, np.ndarray] | None = None
) -> None:
    """At each recorded tensor: the user part (in a batch and one row at a time, and on
    ``user_only``: the same rows with every non-user column 0) gives the whole graph's values of it,
    and the rest on them its probabilities, bit for bit."""
    tensors = _tensors(path)
    whole = onnx.load(str(path))
    for t in tensors:
        whole.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    expected = dict(
        zip(
            [OUTPUT_NAME, *tensors],
            ort.InferenceSession(whole.SerializeToString(), providers=PROVIDERS).run([OUTPUT_NAME, *tensors], feed),
            strict=True,
        )
    )
    rows = len(feed["categorical"])
    for t in tensors:
        user, rest = (ort.InferenceSession(p.SerializeToString(), providers=PROVIDERS) for p in split_graph(path, t))
        assert [i.name for i in rest.get_inputs()] == ["categorical", t, "dense"]
        (values,) = user.run(None, feed)
        one_by_one = np.concatenate(
            [user.run(None, {n: a[r : r + 1] for n, a in feed.items()})[0] for r in range(rows)]
        )
        assert np.array_equal(values, expected[t]) and np.array_equal(one_by_one, values)
        if user_only is not None:
            assert np.array_equal(user.run(None, user_only)[0], values)
        (probabilities,) = rest.run(None, {**{n: feed[n] for n in REST_INPUTS}, t: values})
        assert np.array_equal(probabilities, expected[OUTPUT_NAME])
    if USER_SEQUENCE_TENSOR in tensors:  # an empty history pools to zeros
        pooled = split_graph(path, USER_SEQUENCE_TENSOR)[0]
        (values,) = ort.InferenceSession(pooled.SerializeToString(), providers=PROVIDERS).run(None, feed)
        assert not values[feed["sequence_lengths"].sum(axis=1) == 0].any()


@pytest.mark.parametrize("fold_rows", [0, 512], ids=["plain", "folded"])
def test_every_architecture_records_its_pooled_histories(
    spec: FeatureSpec, arch: str, small: dict, tmp_path: Path, fold_rows: int
) -> None:
    """The tiny spec says nothing of sides (no snapshot layout): the histories only."""
    path = export_onnx(build_model(arch, spec, small).eval(), tmp_path / f"{arch}.onnx", spec, fold_rows=fold_rows)
    assert _tensors(path) == [USER_SEQUENCE_TENSOR]
    width = len(spec.sequence) * small["embedding_dim"]  # type: ignore[operator]
    shapes = {v.name: v for v in onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph.value_info}
    assert shapes[USER_SEQUENCE_TENSOR].type.tensor_type.shape.dim[1].dim_value == width
    _split_equals_whole(path, _random_feed(spec))


def test_esmm_records_its_pooled_histories(spec: FeatureSpec, small: dict, tmp_path: Path) -> None:
    edges = {"finish": TaskDependency(given="click"), "like": TaskDependency(given="click")}
    path = export_onnx(build_model("ple", spec, small, edges).eval(), tmp_path / "esmm.onnx", spec)
    assert _tensors(path) == [USER_SEQUENCE_TENSOR]
    _split_equals_whole(path, _random_feed(spec, 64))


@pytest.mark.parametrize("arch", ["mmoe", "ple", "shared_bottom", "esmm", "dense_encoded"])
def test_the_real_spec_records_the_first_layers_user_part(
    etl_dir: Path, small: dict, tmp_path: Path, arch: str
) -> None:
    """On the ETL's spec the first layer is folded in a user and an other part (each group of one
    side), through the parity gate; its user part reads the user-side columns alone (encoded dense
    features, ``model.dense_encoding``, all in the other part)."""
    spec = FeatureSpec.read(etl_dir)
    edges = {"finish": TaskDependency(given="click"), "like": TaskDependency(given="click")} if arch == "esmm" else {}
    options = {**small, "dense_encoding": {"bins": 4, "dim": 3}} if arch == "dense_encoded" else small
    model = build_model({"esmm": "ple", "dense_encoded": "mmoe"}.get(arch, arch), spec, options, edges).eval()
    rows = parity_rows(etl_dir, spec, 512)
    path = export_checked(model, spec, tmp_path / f"{arch}.onnx", rows).path
    assert _tensors(path) == [USER_FIRST_LAYER_TENSOR, USER_SEQUENCE_TENSOR]
    sides = spec_sides(spec)
    assert sides is not None
    fold = ExportModule(model).fold
    assert isinstance(fold, UserSplitFirstLayer)
    for part, side in ((fold.user, True), (fold.other, False)):
        assert all((sides[spec.categorical[c].name] == USER) == side for g in part.groups for c in g)
    assert fold.user.with_dense is (arch != "dense_encoded")
    user_only = {n: a.copy() for n, a in rows.items()}
    user_only["categorical"][:, [i for i, f in enumerate(spec.categorical) if sides[f.name] != USER]] = 0
    user_only["dense"][
        :, [i for i, f in enumerate(spec.dense) if sides[f.name] != USER or not fold.user.with_dense]
    ] = 0
    _split_equals_whole(path, rows, user_only)


def test_no_history_tensor_without_sequence_features(spec: FeatureSpec, small: dict, tmp_path: Path) -> None:
    variant = dataclasses.replace(spec, sequence=())
    assert _tensors(export_onnx(build_model("mmoe", variant, small).eval(), tmp_path / "m.onnx", variant)) == []


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
