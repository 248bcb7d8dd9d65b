"""Architectures by name: ``build_model(arch, spec, config)``, and the ``model`` config section.

K (the tasks) comes from the FeatureSpec; sizes come from the architecture's own config section
(``MMoE.config_class`` = ``MMoEConfig``, ...). :data:`ModelSection` is the job config's ``model``
section: a union of those sections discriminated on ``arch`` (``mmoe`` when absent). Parameters are
initialised from the global torch RNG (``torch.manual_seed``) or, when ``config.seed`` is set, from
that seed in a forked RNG, so the same seed always gives the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Union

import torch
from pydantic import Discriminator, Tag

from aptrank.config_errors import TAG_MARK
from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.config import ModelConfig, ModelConfigError
from aptrank.models.mmoe import MMoE
from aptrank.models.ple import PLE
from aptrank.models.shared_bottom import SharedBottom, SingleTask
from aptrank.models.task_dag import TaskDependency

ARCHITECTURES: dict[str, type[MultiTaskModel]] = {
    "single_task": SingleTask,
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
}
DEFAULT_ARCH = "mmoe"


def _arch_tag(value: Any) -> str:
    arch = value.get("arch", DEFAULT_ARCH) if isinstance(value, Mapping) else getattr(value, "arch", None)
    return f"arch{TAG_MARK}{arch}"


ModelSection = Annotated[
    Union[tuple(Annotated[m.config_class, Tag(f"arch{TAG_MARK}{a}")] for a, m in ARCHITECTURES.items())],  # noqa: UP007
    Discriminator(_arch_tag),
]
"""The ``model`` section of a job config: the section of the architecture named by ``arch``."""

SIZE_KEYS: frozenset[str] = frozenset(k for m in ARCHITECTURES.values() for k in m.config_class.model_fields)
"""Every key some architecture's section declares."""


def model_config(arch: str, sizes: Mapping[str, Any] | ModelConfig | None = None) -> ModelConfig:
    """The ``arch`` section from ``sizes`` shared by several architectures (a grid's ``job.model``,
    a test's size set): keys that only other architectures declare are left out, any other
    unknown key or a wrong value is refused (:class:`ModelConfigError` naming ``model.<key>``)."""
    if arch not in ARCHITECTURES:
        raise ModelConfigError("model.arch", f"unknown model architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    section = ARCHITECTURES[arch].config_class
    if isinstance(sizes, ModelConfig):
        if not isinstance(sizes, section):
            raise ModelConfigError("model.arch", f"a {type(sizes).__name__} cannot build {arch!r}")
        return sizes
    tagged = {"arch": arch} if "arch" in section.model_fields else {}  # an architecture without a section of its own
    return section.parse({**own_sizes(arch, sizes or {}), **tagged}, prefix="model")


def own_sizes(arch: str, sizes: Mapping[str, Any]) -> dict[str, Any]:
    """``sizes`` without the keys that only architectures other than ``arch`` declare."""
    own = ARCHITECTURES[arch].config_class.model_fields if arch in ARCHITECTURES else {}
    return {k: v for k, v in sizes.items() if k in own or k not in SIZE_KEYS}


def build_model(
    arch: str,
    spec: FeatureSpec,
    config: Mapping[str, Any] | ModelConfig | None = None,
    tasks: Mapping[str, TaskDependency] | None = None,
) -> MultiTaskModel:
    """A fresh model of architecture ``arch`` for ``spec`` (``config``: its section or shared sizes;
    ``tasks``: the job's task dependencies, ``models.task_dag``; none = independent heads)."""
    cfg = model_config(arch, config)
    build: Callable[[FeatureSpec, Any], MultiTaskModel] = ARCHITECTURES[arch]
    if cfg.seed is None:
        model = build(spec, cfg)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build(spec, cfg)
    if tasks:
        model.set_task_dependencies(tasks)
    return model
