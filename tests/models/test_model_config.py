"""Model config sections: each architecture's own, defaults, YAML-style dicts, errors naming the key."""

from __future__ import annotations

import pytest

from aptrank.models import ARCHITECTURES, ModelConfig, ModelConfigError, model_config
from aptrank.models.mmoe import MMoE, MMoEConfig
from aptrank.models.ple import PLE, PLEConfig
from aptrank.models.shared_bottom import SharedBottom, SharedBottomConfig, SingleTask, SingleTaskConfig


def test_each_architecture_owns_its_section() -> None:
    sections = {a: m.config_class for a, m in ARCHITECTURES.items()}
    assert sections == {
        "single_task": SingleTaskConfig,
        "shared_bottom": SharedBottomConfig,
        "mmoe": MMoEConfig,
        "ple": PLEConfig,
    }
    assert (MMoE.config_class, PLE.config_class) == (MMoEConfig, PLEConfig)
    assert (SharedBottom.config_class, SingleTask.config_class) == (SharedBottomConfig, SingleTaskConfig)
    assert "num_experts" in MMoEConfig.model_fields and "num_experts" not in PLEConfig.model_fields
    assert "bottom_hidden" not in MMoEConfig.model_fields and "task" in SingleTaskConfig.model_fields
    assert all(issubclass(s, ModelConfig) for s in sections.values())


def test_lists_become_tuples_and_defaults_stay() -> None:
    cfg = model_config("shared_bottom", {"bottom_hidden": [32, 16], "dropout": 0.1})
    assert isinstance(cfg, SharedBottomConfig)
    assert cfg.bottom_hidden == (32, 16) and cfg.dropout == 0.1
    assert cfg.embedding_dim == SharedBottomConfig().embedding_dim == 16
    assert cfg.sparse_embeddings is True
    assert model_config("mmoe", None) == MMoEConfig()
    assert model_config("mmoe", cfg := MMoEConfig(num_experts=2)) is cfg
    assert model_config("ple", {"tower_hidden": []}).tower_hidden == ()


def test_shared_sizes_keep_the_keys_of_the_architecture() -> None:
    sizes = {"expert_hidden": [8], "num_experts": 3, "bottom_hidden": [4], "ple_levels": 1}
    assert model_config("mmoe", sizes).given() == {"arch": "mmoe", "expert_hidden": [8], "num_experts": 3}
    assert model_config("single_task", sizes).given() == {"arch": "single_task", "bottom_hidden": [4]}
    assert model_config("ple", sizes).given() == {"arch": "ple", "expert_hidden": [8], "ple_levels": 1}


@pytest.mark.parametrize(
    ("arch", "config", "key", "words"),
    [
        ("mmoe", {"embeding_dim": 8}, "model.embeding_dim", "unknown key"),
        ("mmoe", {"embedding_dim": 0}, "model.embedding_dim", "must be >= 1"),
        ("mmoe", {"num_experts": 2.5}, "model.num_experts", "expected an integer, got 2.5"),
        ("mmoe", {"num_experts": "two"}, "model.num_experts", "expected an integer, got 'two'"),
        ("ple", {"ple_levels": True}, "model.ple_levels", "expected an integer, got True"),
        ("mmoe", {"expert_hidden": []}, "model.expert_hidden", "needs at least 1"),
        ("mmoe", {"tower_hidden": 32}, "model.tower_hidden", "expected a list"),
        ("mmoe", {"tower_hidden": [8, -1]}, "model.tower_hidden[1]", "must be >= 1"),
        ("mmoe", {"dropout": 1.0}, "model.dropout", "must be < 1.0"),
        ("mmoe", {"sparse_embeddings": "yes"}, "model.sparse_embeddings", "expected true or false"),
        ("mmoe", {"seed": "1"}, "model.seed", "expected an integer, got '1'"),
        ("moe", {}, "model.arch", "unknown model architecture 'moe'"),
    ],
)
def test_bad_values_raise_naming_the_key(arch: str, config: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ModelConfigError) as err:
        model_config(arch, config)
    assert err.value.key == key and words in str(err.value)


def test_constructing_a_section_directly_is_checked_too() -> None:
    with pytest.raises(ModelConfigError, match=r"^num_experts: must be >= 1, got 0$"):
        MMoEConfig(num_experts=0)
