"""The exported graph's per-user tensors, recorded in its metadata so that scorers compute them once
per user.

The ``sequence`` and ``sequence_lengths`` inputs hold a user's history lists, which the feature
snapshot fixes per user (their encodings read only user-table columns: ``data.feature_sides``), so
every candidate row of one user pools the same embeddings; on a spec written by the ETL the first
layer's user part (``models.export.user_side``) is fixed per user too. A scorer that knows such a
tensor splits the graph there (``onnx.utils.Extractor``, :mod:`aptrank.serving.user_precompute`),
computes it once per snapshot user and feeds the rest of the graph that user's row: the per-user
part of a ranker computed once per user rather than per candidate, as a two-stage recommender
computes its user vector once per request (Covington et al., "Deep Neural Networks for YouTube
Recommendations", RecSys 2016, sec. 4).

The first layer's user part is named by the export (a second output while tracing, removed after).
The pooled histories' tensor is found on the graph itself: the *frontier* of the sequence branch,
i.e. the values computed from the two sequence inputs (and constants) alone that a node outside the
branch reads; when there is exactly one, a float32 [batch, width] tensor, it is renamed
:data:`~aptrank.data.spec.USER_SEQUENCE_TENSOR`. The names go to the metadata under
:data:`~aptrank.data.spec.META_USER_TENSORS` (JSON list, most work first). Only names change: the
graph computes the same, with the same inputs and output (DESIGN.md contract 5), so the parity gate
and the content digest apply as before. A graph with neither (no sequence feature, a shape read off
another input, ...) gets no metadata and scorers run it whole.
"""

from __future__ import annotations

import json

import onnx_ir as ir

from aptrank.data.spec import META_USER_TENSORS, SEQUENCE_INPUTS, USER_SEQUENCE_TENSOR

SUBGRAPHS = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)


def _constant_values(graph: ir.Graph) -> set[ir.Value]:
    """Values that depend on no graph input: initializers and what nodes compute from them alone."""
    free = {v for v in graph.initializers.values()}
    for node in graph:
        if all(v is None or v in free for v in node.inputs):
            free.update(node.outputs)
    return free


def sequence_frontier(graph: ir.Graph) -> ir.Value | None:
    """The single value through which the sequence inputs reach the rest of ``graph`` (module
    docstring), or None when there is no such single float [batch, width] value."""
    sources = [v for v in graph.inputs if v.name in SEQUENCE_INPUTS]
    if len(sources) != len(SEQUENCE_INPUTS):
        return None
    if any(a.type in SUBGRAPHS for node in graph for a in node.attributes.values()):
        return None  # a subgraph may read outer values that are not among its node's inputs
    free = _constant_values(graph)
    branch = set(sources)
    for node in graph:  # topological order
        inputs = [v for v in node.inputs if v is not None]
        if any(v in branch for v in inputs) and all(v in branch or v in free for v in inputs):
            branch.update(node.outputs)
    frontier = {v for v in branch for use in v.uses() if not set(use.node.outputs) <= branch}
    frontier |= {v for v in graph.outputs if v in branch}
    if len(frontier) != 1:
        return None
    (value,) = frontier
    if value in sources or value.dtype != ir.DataType.FLOAT or value.shape is None or len(value.shape) != 2:
        return None
    return value


def mark_user_tensors(model: ir.Model, first_layer: str | None = None) -> list[str]:
    """Record the graph's per-user tensors in its metadata (:data:`META_USER_TENSORS`), most work
    first: ``first_layer`` (the first layer's user part, named by the export) when given, then the
    sequence branch's frontier, renamed :data:`USER_SEQUENCE_TENSOR` here when there is a single
    one. Returns the names recorded (none: no metadata written)."""
    names = [first_layer] if first_layer else []
    value = sequence_frontier(model.graph)
    if value is not None:
        taken = {v.name for n in model.graph for v in (*n.inputs, *n.outputs) if v is not None and v is not value}
        if USER_SEQUENCE_TENSOR not in taken | set(model.graph.initializers):
            value.name = USER_SEQUENCE_TENSOR
            names.append(USER_SEQUENCE_TENSOR)
    if names:
        model.metadata_props[META_USER_TENSORS] = json.dumps(names)
    return names
