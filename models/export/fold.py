"""Export-time folding of small embedding tables into the head's first Linear layer.

The head's first layer computes ``h = W x + b`` on ``x = [e_1(i_1), ..., e_C(i_C), sequences, dense]``
(``models.embedding``). Its categorical part is a sum over features, ``sum_f W_f e_f(i_f)``, where
``W_f`` are the ``embedding_dim`` columns of ``W`` that read feature ``f``. Matrix products are
associative, so for a feature ``f`` the products ``E_f W_f^T`` ([V_f, N]: every row of its table
already multiplied by its columns) can be computed once at export, and for a *group* of features
their sum over the cartesian product of the vocabularies is one table of ``prod V_f`` rows:

    P_g[j_1, ..., j_k] = sum_{m <= k} W_{f_m} e_{f_m}(j_m)        (row-major joint index)

The layer then reads one N-wide row per group instead of multiplying the group's ``k * D`` inputs
by N outputs; the remaining features (large vocabularies, sequences, dense) keep the GEMM, whose
addend is the groups' sum (the layer's bias is added to the first group's table, in float64 with
its products), so the graph has one ``Gemm`` and no ``Add`` for it. The same
identity as folding batch normalisation into the preceding layer for inference (Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
CVPR 2018, sec. 3.2): exact in real arithmetic, and in float only the summation order changes
(the tables are computed in float64, then rounded once). The export parity gate checks the result
against the PyTorch model to 1e-5 like every export.

Groups are packed first-fit-decreasing by vocabulary size with ``prod V_f <= max_rows``; a feature
with more than ``max_rows`` rows is not folded. On the demo MMoE (37 categorical features, 34 of
them with <= 1,213 rows; first layer 665 -> 268), ``max_rows=4096`` gives 10 groups (29,738 rows,
30 MB of float32; the ONNX file grows from 2.7 to 34 MB) and the GEMM's inputs go from 665 to 121;
onnxruntime, one thread, real candidate rows: 3.1 -> 2.2 us per row on a quiet host. The default
is ``max_rows=512``: 12 groups of 33 features (4,888 rows, 5 MB; GEMM inputs 137). A group row is
a random 1 KB read, so the tables must stay in cache: 30 MB is the whole L3 of the 2-core cloud
VM's CPU (32 MB, shared with the host's other tenants), and as soon as anything else uses that L3
the 4096-row tables' gathers go to DRAM; the 512-row tables cost the same on a quiet core and
5-10% less under cache pressure (``bench/score.py``'s docstring has the measurements). A feature
alone in its group saves nothing (a 268-wide row read in place of a 16-wide one and 16 x 268
multiply-adds), so the large single-feature groups that 4096 allows buy nothing for their 25 MB.
An id must be inside its table (the feature lookup guarantees it): an out-of-range id would read
another row of its group, where the unfolded graph read another table's row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from aptrank.models.embedding import FusedTables, SpecEmbedding

FOLD_MAX_ROWS = 512
"""Default rows per folded group table (``aptrank export --fold-rows``; 0 turns folding off)."""
EXACT_INDEX_LIMIT = 2**24
"""Integers below this are exact in float32: the bound on a group's rows (see ``group_rows``)."""


def fold_groups(vocab: list[int], max_rows: int) -> list[list[int]]:
    """Indices of ``vocab`` (rows per feature) packed into groups whose product of rows is at most
    ``max_rows``, first-fit-decreasing (ties by index, so the packing is deterministic). A feature
    with more than ``max_rows`` rows is in no group. Members of a group are in packing order."""
    if not 0 <= max_rows <= EXACT_INDEX_LIMIT:
        raise ValueError(f"fold_groups: max_rows must be in [0, 2**24], got {max_rows}")
    groups: list[tuple[int, list[int]]] = []
    for f in sorted(range(len(vocab)), key=lambda i: (-vocab[i], i)):
        rows = vocab[f]
        if rows > max_rows:
            continue
        for k, (size, members) in enumerate(groups):
            if size * rows <= max_rows:
                groups[k] = (size * rows, [*members, f])
                break
        else:
            groups.append((rows, [f]))
    return [members for _, members in groups]


def table_rows(embedding: SpecEmbedding) -> list[int]:
    """Rows of each categorical feature's table, in spec order."""
    tables = embedding.spec.tables()
    return [tables[f.table] for f in embedding.spec.categorical]


def group_table(products: list[torch.Tensor]) -> torch.Tensor:
    """``[prod V_m, N]``: row ``(j_1, ..., j_k)`` (row-major) is ``sum_m products[m][j_m]``, for the
    members' ``E_f W_f^T`` products ``[V_m, N]``."""
    sizes, width = [p.shape[0] for p in products], products[0].shape[1]
    table = torch.zeros([*sizes, width], dtype=products[0].dtype)
    for m, product in enumerate(products):
        shape = [1] * len(sizes) + [width]
        shape[m] = sizes[m]
        table = table + product.view(shape)
    return table.reshape(-1, width)


@dataclass(frozen=True)
class InputColumns:
    """The first layer's inputs one folded part reads: categorical and dense features (spec
    positions) and whether the sequence features."""

    categorical: tuple[int, ...]
    dense: tuple[int, ...]
    sequences: bool

    @staticmethod
    def every(embedding: SpecEmbedding) -> InputColumns:
        spec = embedding.spec
        return InputColumns(tuple(range(len(spec.categorical))), tuple(range(len(spec.dense))), True)


class FoldedFirstLayer(nn.Module):
    """``forward(categorical, sequence, sequence_lengths, dense) -> first(embedded)`` [B, N] with the
    features of :func:`fold_groups` read from precomputed group tables (module docstring). A copy
    of the weights when built: build it after training. ``columns``: the part of the layer's inputs
    it computes (all by default; ``models.export.user_side`` computes the user's part apart), then
    ``bias``: whether the layer's bias is in this part, and ``forward``'s ``addend`` is added."""

    def __init__(
        self,
        embedding: SpecEmbedding,
        first: nn.Linear,
        max_rows: int = FOLD_MAX_ROWS,
        columns: InputColumns | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        spec, dim = embedding.spec, embedding.embedding_dim
        vocab = table_rows(embedding)
        cols = columns or InputColumns.every(embedding)
        self.groups = [
            [cols.categorical[k] for k in g] for g in fold_groups([vocab[c] for c in cols.categorical], max_rows)
        ]
        if not self.groups and columns is None:
            raise ValueError(f"FoldedFirstLayer: no categorical feature has <= {max_rows} rows to fold")
        total = sum(math.prod(vocab[c] for c in g) for g in self.groups)
        if total > EXACT_INDEX_LIMIT:  # group_rows' float32 indexes would not be exact
            raise ValueError(f"FoldedFirstLayer: {total} folded rows in all, more than 2**24")
        self.embedding = embedding
        self.sequences = cols.sequences
        folded = {c for g in self.groups for c in g}
        keep = [c for c in cols.categorical if c not in folded]
        self.register_buffer("keep_columns", torch.tensor(keep, dtype=torch.int64))
        self.rest_tables = FusedTables(embedding, categorical=keep)
        every_dense = list(cols.dense) == list(range(len(spec.dense)))
        if cols.dense and not every_dense and embedding.dense_encoder is not None:
            raise ValueError("FoldedFirstLayer: a part of the encoded dense features (their encoder reads all)")
        self.with_dense = bool(cols.dense)
        self.register_buffer("dense_columns", None if every_dense else torch.tensor(cols.dense, dtype=torch.int64))

        weight = first.weight.detach().to(torch.float64)  # [N, D_in]
        sequence_start = len(vocab) * dim
        dense_start = sequence_start + len(spec.sequence) * dim
        columns_read = [j for c in keep for j in range(c * dim, (c + 1) * dim)]
        columns_read += range(sequence_start, dense_start) if cols.sequences else []
        # the dense block: all of it (encoded or not), or single scalar columns
        columns_read += range(dense_start, weight.shape[1]) if every_dense else [dense_start + d for d in cols.dense]
        # no bias of its own: the layer's bias is in the first group's table, so that the folded
        # sum is the addend of the remaining columns' GEMM (one Gemm node, no Add)
        self.rest = nn.Linear(len(columns_read), weight.shape[0], bias=False) if columns_read else None
        if self.rest is not None:
            with torch.no_grad():
                self.rest.weight.copy_(weight[:, columns_read].to(first.weight.dtype))
        own_bias = first.bias.detach().to(torch.float64).view(1, -1) if bias and first.bias is not None else None
        self.register_buffer(
            "bias", own_bias.to(first.weight.dtype) if own_bias is not None and not self.groups else None
        )

        tables = embedding.table_weights()
        parts, offsets = [], [0]
        # joint[g, c]: the stride of categorical feature c in group g's row-major index (the last
        # member varies fastest), 0 when c is not in g; ``joint @ categorical.T`` is every group's index
        joint = torch.zeros(len(self.groups), len(vocab), dtype=torch.float32)
        for g, group in enumerate(self.groups):
            for m, c in enumerate(group):
                joint[g, c] = math.prod(vocab[d] for d in group[m + 1 :])
            products = [
                tables[spec.categorical[c].table].detach().to(torch.float64) @ weight[:, c * dim : (c + 1) * dim].T
                for c in group
            ]
            if g == 0 and own_bias is not None:  # the layer's bias, in float64 with the first group's products
                products.append(own_bias)
            parts.append(group_table(products))
            offsets.append(offsets[-1] + parts[-1].shape[0])
        width = weight.shape[0]
        self.register_buffer("folded", torch.cat(parts).to(first.weight.dtype) if parts else torch.zeros(0, width))
        self.register_buffer("joint", joint)
        self.register_buffer("group_offsets", torch.tensor(offsets[:-1], dtype=torch.float32).view(-1, 1))
        # the sum over groups as a product with ones: onnxruntime's ReduceSum adds in another order
        # for a single row than for a batch (from 8 groups up), the product adds every column in the
        # same order at any width, so a candidate scores the same bits online (one request) and in a
        # batch file. Batch scoring of 2M candidates: 657k rows/s, against 607k for rows first
        # ([B, G, N], summed by B products of 1 x G)
        self.register_buffer("ones", torch.ones(1, len(self.groups)))

    def group_rows(self, categorical: torch.Tensor) -> torch.Tensor:
        """Row of each group's table in ``folded``, groups first [G, B]: the members' joint index
        plus the group's offset, one float32 matrix product with the offsets as its addend (one
        ``Gemm`` node), which is exact: a folded id and its stride are below ``max_rows <= 2**24``
        and the rows of all groups are at most 2**24, so every product and partial sum is an
        integer below 2**24, and an unfolded id (maybe larger, then rounded) is multiplied by an
        exact 0. Groups first, so that the gathered rows [G, B, N] are summed over G by one
        matrix-vector product over a [G, B * N] matrix."""
        return F.linear(self.joint, categorical.to(self.joint.dtype), self.group_offsets).to(torch.int64)

    def forward(
        self,
        categorical: torch.Tensor,
        sequence: torch.Tensor,
        sequence_lengths: torch.Tensor,
        dense: torch.Tensor,
        addend: torch.Tensor | None = None,
    ) -> torch.Tensor:
        total = self.bias  # [1, N] when this part has the bias and no group to hold it
        if self.groups:
            gathered = F.embedding(self.group_rows(categorical), self.folded)  # [G, B, N]
            total = (self.ones @ gathered.reshape(len(self.groups), -1)).reshape(categorical.shape[0], -1)
        if addend is not None:
            total = addend if total is None else total + addend
        if self.rest is None:  # every input column was a folded feature
            if total is None:
                raise ValueError("FoldedFirstLayer: a part with no input column")
            return total
        if self.with_dense and self.dense_columns is not None:
            dense = dense.index_select(1, self.dense_columns)
        rest = self.embedding.forward_plain(
            categorical.index_select(1, self.keep_columns),
            sequence,
            sequence_lengths,
            dense,
            self.rest_tables,
            sequences=self.sequences,
            with_dense=self.with_dense,
        )
        if total is None:
            return rest @ self.rest.weight.T
        return torch.addmm(total, rest, self.rest.weight.T)  # one Gemm: the bias is in ``folded``
