"""ModelConfig: defaults, YAML-style dicts, errors that name the key and the rule."""

from __future__ import annotations

import pytest

from aptrank.models.config import ModelConfig, ModelConfigError


def test_from_dict_converts_lists_and_keeps_defaults() -> None:
    cfg = ModelConfig.from_dict({"bottom_hidden": [32, 16], "dropout": 0.1})
    assert cfg.bottom_hidden == (32, 16)
    assert cfg.dropout == 0.1
    assert cfg.embedding_dim == ModelConfig().embedding_dim
    assert cfg.sparse_embeddings is True
    assert ModelConfig.from_dict(None) == ModelConfig()
    assert ModelConfig.from_dict(cfg) is cfg


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"embeding_dim": 8}, r"unknown key\(s\) \['embeding_dim'\].*known keys"),
        ({"embedding_dim": 0}, "'embedding_dim': must be a positive int"),
        ({"num_experts": 2.5}, "'num_experts': must be a positive int"),
        ({"ple_levels": True}, "'ple_levels': must be a positive int"),
        ({"expert_hidden": []}, "'expert_hidden': needs at least one"),
        ({"tower_hidden": 32}, "'tower_hidden': must be a list"),
        ({"tower_hidden": [8, -1]}, "'tower_hidden': must be a positive int"),
        ({"dropout": 1.0}, r"'dropout': must be in \[0, 1\)"),
        ({"sparse_embeddings": "yes"}, "'sparse_embeddings': must be true/false"),
        ({"seed": "1"}, "'seed': must be an int"),
    ],
)
def test_bad_values_raise(config: dict[str, object], pattern: str) -> None:
    with pytest.raises(ModelConfigError, match=pattern):
        ModelConfig.from_dict(config)


def test_empty_tower_hidden_is_allowed() -> None:
    assert ModelConfig.from_dict({"tower_hidden": []}).tower_hidden == ()
