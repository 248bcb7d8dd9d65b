"""MTLConfig: invalid values and combinations are refused when the config loads, naming the key."""

from __future__ import annotations

import pytest

from aptrank.apt import METHODS, OPTIMIZERS, ConfigError, MTLConfig


def test_defaults_and_round_trip() -> None:
    cfg = MTLConfig.from_dict({})
    assert (cfg.method, cfg.optimizer, cfg.grad_mode, cfg.grad_scope) == ("ew", "adamw", "exact", "dense")
    full = MTLConfig.from_dict(
        {
            "method": "cagrad",
            "method_kwargs": {"alpha": 0.4},
            "optimizer": "adatask_muon",
            "apt": {"momentum": True, "beta_min": 0.6, "direction_preservation": True, "gamma": 0.2},
            "muon": {"lr": 0.01, "ns_steps": 5},
            "diagnostics_every": 10,
        }
    )
    assert MTLConfig.from_dict(full.to_dict()) == full
    assert MTLConfig.from_dict({"mtl": {"method": "mgda"}, "trainer": {"epochs": 1}}).method == "mgda"


def test_every_registered_name_loads() -> None:
    for method in METHODS:
        for optimizer in OPTIMIZERS:
            MTLConfig.from_dict({"method": method, "optimizer": optimizer})


@pytest.mark.parametrize(
    "cfg, key, words",
    [
        ({"method": "gradvac"}, "mtl.method", "unknown method"),
        ({"optimizer": "lion"}, "mtl.optimizer", "unknown optimizer"),
        ({"method": "cagrad", "method_kwargs": {"alpha": -0.5}}, "mtl.method_kwargs.alpha", ">= 0"),
        ({"method": "cagrad", "method_kwargs": {"c": 0.5}}, "mtl.method_kwargs.c", "unknown argument"),
        ({"method": "mgda", "method_kwargs": {"normalization": "l1"}}, "mtl.method_kwargs.normalization", "one of"),
        (
            {"method": "nash_mtl", "method_kwargs": {"update_weights_every": 0}},
            "mtl.method_kwargs.update_weights_every",
            "integer >= 1",
        ),
        ({"method": "dwa", "method_kwargs": {"T": 0}}, "mtl.method_kwargs.T", "> 0"),
        ({"apt": {"direction_preservation": True}}, "mtl.apt.direction_preservation", "Muon"),
        ({"optimizer": "adatask", "apt": {"direction_preservation": True}}, "mtl.apt.direction_preservation", "Muon"),
        ({"apt": {"momentum": True, "beta_min": 0.95}}, "mtl.apt.beta_min", "<= beta_max"),
        ({"apt": {"beta_min": 1.0}}, "mtl.apt.beta_min", "[0, 1)"),
        ({"apt": {"beta_max": -0.1}}, "mtl.apt.beta_max", "[0, 1)"),
        ({"apt": {"gamma": -1}}, "mtl.apt.gamma", ">= 0"),
        ({"apt": {"momentum": "yes"}}, "mtl.apt.momentum", "true or false"),
        ({"apt": {"beta": 0.9}}, "mtl.apt.beta", "unknown key"),
        ({"optimizer": "adatask", "grad_mode": "rep"}, "mtl.optimizer", "AdaTask"),
        (
            {"optimizer": "muon", "grad_mode": "rep", "apt": {"direction_preservation": True}},
            "mtl.apt.direction_preservation",
            "per-task gradients",
        ),
        ({"grad_mode": "rep", "grad_scope": "all"}, "mtl.grad_scope", "rep"),
        ({"grad_scope": "all", "per_task_backend": "batched"}, "mtl.per_task_backend", "sparse"),
        ({"grad_mode": "fast"}, "mtl.grad_mode", "one of"),
        ({"lr": 0}, "mtl.lr", "> 0"),
        ({"betas": [0.9]}, "mtl.betas", "pair"),
        ({"betas": [0.9, 1.0]}, "mtl.betas", "beta2"),
        ({"muon": {"ns_steps": 0}}, "mtl.muon.ns_steps", "[1, 99]"),
        ({"muon": {"momentum": 1.5}}, "mtl.muon.momentum", "[0, 1)"),
        ({"diagnostics_every": -1}, "mtl.diagnostics_every", ">= 0"),
        ({"seed": 1.5}, "mtl.seed", "integer"),
        ({"learning_rate": 0.1}, "mtl.learning_rate", "unknown key"),
    ],
)
def test_invalid_config_is_refused_with_key_and_reason(cfg: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        MTLConfig.from_dict(cfg)
    assert err.value.key == key
    assert words in str(err.value)


def test_beta_max_defaults_to_the_base_momentum() -> None:
    cfg = MTLConfig.from_dict({"optimizer": "muon", "apt": {"momentum": True}})
    assert cfg.apt_beta_max_for("muon") == 0.95
    assert cfg.apt_beta_max_for("adam") == 0.9
    # Muon's momentum 0.95 allows beta_min 0.92 for its 2-D weights, but not for Adam's beta1 0.9
    with pytest.raises(ConfigError, match="beta_max"):
        MTLConfig.from_dict({"optimizer": "muon", "apt": {"momentum": True, "beta_min": 0.92}})


def test_apt_config_needs_no_pipeline_models_or_data() -> None:
    """apt/ stays usable alone: its config imports pydantic and aptrank.errors / config_model only."""
    import subprocess
    import sys

    code = (
        "import sys, aptrank.apt; "
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in (['aptrank', 'pipeline'], ['aptrank', 'models'], "
        "['aptrank', 'data'], ['aptrank', 'serving'])); print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
