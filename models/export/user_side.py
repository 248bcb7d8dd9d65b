"""The head's first layer computed in two parts: what the user's snapshot row fixes, and the rest.

The first layer is linear, ``h = W x + b``, so it is the sum of its products over any partition of
its inputs. The features the snapshot fixes per user (``data.feature_sides``: categorical and dense
features reading only user-table columns, and the histories) give ``u = W_user x_user + b``, one
[N] vector per user; the item and request features give the rest, ``h = W_other x_other + u``.
Computing ``u`` apart changes only the order of the sums (the parity gate checks the result like
every export), and makes it a tensor of the graph that depends on the user's features alone: the
export names it and a scorer computes it once per snapshot user (``serving.user_precompute``),
reading per candidate only the item and request side's groups and columns -- the per-user part of
a ranker computed once per user, as a two-stage recommender computes its user vector once per
request (Covington et al., "Deep Neural Networks for YouTube Recommendations", RecSys 2016, sec. 4).
Each part folds its own small tables (:mod:`~aptrank.models.export.fold`), so a folded group holds
features of one side only.

Applies when the spec was written by the ETL (its snapshot layout says which side each feature
reads), every sequence feature is user-side, and both parts have inputs; otherwise the layer is
folded whole as before.
"""

from __future__ import annotations

import torch
from torch import nn

from aptrank.data.feature_sides import USER, spec_sides
from aptrank.models.embedding import SpecEmbedding
from aptrank.models.export.fold import FoldedFirstLayer, InputColumns, fold_groups, table_rows


def user_columns(embedding: SpecEmbedding) -> tuple[InputColumns, InputColumns] | None:
    """(user part, other part) of the first layer's inputs, or None when the split does not apply
    (module docstring). Encoded dense features (``model.dense_encoding``: one encoder reads them
    all) stay in the other part."""
    spec = embedding.spec
    sides = spec_sides(spec)
    if sides is None or any(sides[s.name] != USER for s in spec.sequence):
        return None

    def split(features: tuple) -> tuple[tuple[int, ...], tuple[int, ...]]:
        user = tuple(i for i, f in enumerate(features) if sides[f.name] == USER)
        return user, tuple(i for i in range(len(features)) if i not in user)

    (user_cat, other_cat), (user_dense, other_dense) = split(spec.categorical), split(spec.dense)
    if embedding.dense_encoder is not None:
        user_dense, other_dense = (), tuple(range(len(spec.dense)))
    if not (user_cat or user_dense or spec.sequence) or not (other_cat or other_dense):
        return None
    return InputColumns(user_cat, user_dense, True), InputColumns(other_cat, other_dense, False)


class UserSplitFirstLayer(nn.Module):
    """``forward(...) -> first(embedded)`` [B, N] as the user's part ``u`` plus the other part with
    ``u`` as its addend (module docstring); :meth:`parts` also returns ``u``."""

    def __init__(
        self, embedding: SpecEmbedding, first: nn.Linear, max_rows: int, user: InputColumns, other: InputColumns
    ) -> None:
        super().__init__()
        self.user = FoldedFirstLayer(embedding, first, max_rows, user, bias=True)
        self.other = FoldedFirstLayer(embedding, first, max_rows, other, bias=False)

    def parts(
        self, categorical: torch.Tensor, sequence: torch.Tensor, sequence_lengths: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(first layer's output, the user's part of it)."""
        user = self.user(categorical, sequence, sequence_lengths, dense)
        return self.other(categorical, sequence, sequence_lengths, dense, addend=user), user

    def forward(
        self, categorical: torch.Tensor, sequence: torch.Tensor, sequence_lengths: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        return self.parts(categorical, sequence, sequence_lengths, dense)[0]


def fold_first_layer(
    embedding: SpecEmbedding, first: nn.Linear, max_rows: int
) -> FoldedFirstLayer | UserSplitFirstLayer | None:
    """``first`` with the small tables of ``embedding`` folded in, in a user and an other part when
    :func:`user_columns` applies; None when no table has at most ``max_rows`` rows (0: folding off)."""
    if not fold_groups(table_rows(embedding), max_rows):
        return None
    split = user_columns(embedding)
    if split is None:
        return FoldedFirstLayer(embedding, first, max_rows)
    return UserSplitFirstLayer(embedding, first, max_rows, *split)
