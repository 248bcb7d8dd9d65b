"""Grid files: the committed research grid has the issue's shape; every broken grid is refused
before any work with an error naming the file and the key; cells get the documented job configs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from aptrank.pipeline.cli import app
from aptrank.pipeline.experiment import GridError, grid_from_dict, load_grid
from aptrank.pipeline.experiment.cells import baseline_cell, cell_config, grid_cells

ROOT = Path(__file__).resolve().parents[2]
RESEARCH = ROOT / "configs" / "grids" / "research.yaml"
SYNTH_ETL = str(ROOT / "configs" / "etl" / "synthetic.yaml")
KUAIRAND_ETL = str(ROOT / "configs" / "etl" / "kuairand.yaml")


def minimal() -> dict[str, Any]:
    return {
        "name": "g",
        "seeds": [0, 1],
        "archs": ["mmoe"],
        "methods": ["ew", "pcgrad"],
        "optimizers": ["muon"],
        "datasets": {
            "syn": {"generator": {"users": 50, "items": 40, "events": 500, "days": 3}, "etl_config": SYNTH_ETL}
        },
        "job": {"train": {"epochs": 1}, "mtl": {"lr": 0.01, "apt": {"beta_min": 0.6}}},
    }


def test_research_grid_shape() -> None:
    spec = load_grid(RESEARCH)
    assert spec.archs == ("mmoe", "ple") and spec.seeds == (0, 1, 2) and spec.apt == (False, True)
    assert spec.methods == ("ew", "uw", "mgda", "pcgrad", "cagrad", "nash_mtl", "imgrad", "sdmgrad")
    assert spec.optimizers == ("adamw", "adatask", "muon") and spec.baselines
    assert spec.datasets["kuairand"].source == "kuairand"
    correlations = sorted(d.generator.task_correlation for d in spec.datasets.values() if d.generator)
    assert correlations[0] < 0 < correlations[1]  # conflicting and highly correlated
    cells = grid_cells(spec, {d: ("click", "like", "finish") for d in spec.datasets})
    assert len(cells) == 3 * (2 * 8 * 3 * 2 * 3 + 3 * 3) == 891
    assert len({c.id for c in cells}) == 891
    assert cell_config(spec, cells[-1]).mtl.diagnostics_every > 0


def test_cell_configs() -> None:
    spec = grid_from_dict(minimal())
    cells = grid_cells(spec, {"syn": ("click", "like")})
    assert [c.id for c in cells[:2]] == ["syn/single_task/click/seed0", "syn/single_task/click/seed1"]
    on = next(c for c in cells if c.apt and c.method == "pcgrad")
    cfg = cell_config(spec, on)
    assert cfg.arch == "mmoe" and cfg.seed == on.seed and cfg.name == "g"
    assert cfg.to_dict()["mtl"]["apt"] == {
        "momentum": True,
        "direction_preservation": True,
        "beta_min": 0.6,
    }  # Muon: DP on
    off = cell_config(spec, next(c for c in cells if not c.apt and c.task is None)).to_dict()["mtl"]["apt"]
    assert off == {"momentum": False, "direction_preservation": False, "beta_min": 0.6}
    adamw = cell_config(
        grid_from_dict({**minimal(), "optimizers": ["adamw"]}),
        next(
            c for c in grid_cells(grid_from_dict({**minimal(), "optimizers": ["adamw"]}), {"syn": ("click",)}) if c.apt
        ),
    )
    assert adamw.mtl.apt.direction_preservation is False  # APT on = momentum only without Muon
    base = cell_config(spec, baseline_cell("syn", "like", 1))
    assert base.arch == "single_task" and base.model.task == "like" and base.mtl.diagnostics_every == 0
    assert cfg.tracking.experiment == "aptrank-g"
    assert cell_config(spec, on).to_dict() == cfg.to_dict()  # deterministic


def edit(path: str, value: Any) -> dict[str, Any]:
    """``minimal()`` with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    raw = copy.deepcopy(minimal())
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("seeds", ..., "seeds", "required key missing"),
        ("sedes", [1], "sedes", "unknown key"),
        ("methods", ["ew", "pcgard"], "methods[1]", "unknown value 'pcgard'"),
        ("optimizers", ["adam"], "optimizers[0]", "unknown value 'adam'"),
        ("archs", ["single_task"], "archs[0]", "unknown value"),
        ("seeds", [0, 0], "seeds", "distinct"),
        ("seeds", [], "seeds", "at least one"),
        ("apt", "yes", "apt", "expected a list"),
        ("baselines", "no", "baselines", "expected true or false"),
        ("workers", 0, "workers", ">= 1"),
        ("name", "a b", "name", "must match"),
        ("datasets.syn.generator.task_correlation", 2.0, "datasets.syn.generator.task_correlation", "[-1, 1]"),
        ("datasets.syn.generator.usrs", 5, "datasets.syn.generator.usrs", "unknown key"),
        ("datasets.syn.input", "data/samples/kuairand-pure", "datasets.syn", "exactly one"),
        (
            "datasets.syn",
            {"source": "kuairand", "input": "/no/such/dir", "etl_config": KUAIRAND_ETL},
            "datasets.syn.input",
            "does not exist",
        ),
        (
            "datasets.syn",
            {"source": "parquet-ish", "input": ".", "etl_config": KUAIRAND_ETL},
            "datasets.syn.source",
            "not a source",
        ),
        ("datasets.syn.etl_config", "/no/etl.yaml", "datasets.syn.etl_config", "not found"),
        ("job.mtl.lr", -1, "job.mtl.lr", "must be > 0"),
        ("job.model.experts", 3, "job.model.experts", "unknown key"),
        ("job.seed", 3, "job.seed", "set by the grid"),
        ("method_kwargs", {"imgrad": {"alpha": 0.8}}, "method_kwargs.imgrad", "not a method of this grid"),
        ("method_kwargs", {"pcgrad": {"alpha": 0.8}}, "job.mtl.method_kwargs.alpha", "unknown argument"),
        ("configurations", [{"method": "ew", "optimizer": "adamw"}], "configurations", "not both"),
        ("variants", {"a b": {}}, "variants.a b", "must match"),
        ("variants", {"v": {"etl": {"features": {"smoothing": -1}}}}, "variants.v.etl", "features.smoothing"),
        ("variants", {"v": {"etl": {"freshnes": "daily"}}}, "variants.v.etl", "freshnes: unknown key"),
        ("variants", {"v": {"job": {"model": {"experts": 3}}}}, "variants.v.job.model.experts", "unknown key"),
        ("variants", {"v": {"jobs": {}}}, "variants.v.jobs", "unknown key"),
        ("lightgbm_params", {"num_leaves": 0}, "lightgbm_params.num_leaves", "must be > 0"),
    ],
)
def test_bad_grid_names_the_key(path: str, value: Any, key: str, words: str) -> None:
    with pytest.raises(GridError) as info:
        grid_from_dict(edit(path, value), "grid.yaml")
    assert info.value.key == key
    assert str(info.value).startswith("grid.yaml: ") and f"'{key}'" in str(info.value) and words in str(info.value)


def test_cli_refuses_a_bad_grid_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(edit("methods", ["ew", "nash"])))
    result = CliRunner().invoke(app, ["experiment", "--grid", str(path), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert f"{path}: 'methods[1]': unknown value 'nash'" in result.output
    assert not (tmp_path / "w").exists()  # refused before any work
    missing = CliRunner().invoke(app, ["experiment", "--grid", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2 and "grid file not found" in missing.output


def test_explicit_configurations_replace_the_product() -> None:
    raw = {k: v for k, v in minimal().items() if k not in ("methods", "optimizers")}
    raw["configurations"] = [
        {"method": "pcgrad", "optimizer": "adamw", "apt": True},
        {"method": "ew", "optimizer": "muon"},
    ]
    spec = grid_from_dict(raw)
    assert spec.combos == [("pcgrad", "adamw", True), ("ew", "muon", False)]
    cells = [c for c in grid_cells(spec, {"syn": ("click",)}) if c.task is None]
    assert [c.id for c in cells] == [
        "syn/mmoe/pcgrad/adamw/apt-on/seed0",
        "syn/mmoe/pcgrad/adamw/apt-on/seed1",
        "syn/mmoe/ew/muon/apt-off/seed0",
        "syn/mmoe/ew/muon/apt-off/seed1",
    ]
    with pytest.raises(GridError) as info:
        grid_from_dict({**raw, "configurations": [*raw["configurations"], raw["configurations"][0]]})
    assert info.value.key == "configurations" and "distinct" in str(info.value)
    with pytest.raises(GridError) as info:
        grid_from_dict({**raw, "configurations": [{"method": "ew", "optimizer": "adam"}]})
    assert info.value.key == "configurations[0].optimizer" and "unknown value 'adam'" in str(info.value)
    with pytest.raises(GridError) as info:
        grid_from_dict({k: v for k, v in raw.items() if k != "configurations"})
    assert info.value.key == "methods" and "required key missing" in str(info.value)


def test_variants_merge_job_overrides_and_name_cells_and_tables() -> None:
    raw = minimal()
    raw["variants"] = {
        "small": {},
        "wide": {"job": {"model": {"embedding_dim": 12}, "mtl": {"apt": {"beta_min": 0.7}}}},
    }
    raw["lightgbm"] = True
    spec = grid_from_dict(raw)
    cells = grid_cells(spec, {"syn/small": ("click",), "syn/wide": ("click",)})
    assert len(cells) == 2 * (1 * 2 + 2 + 2 * 2 * 2)  # per variant: baselines, LightGBM, MTL cells
    assert cells[2].id == "syn/small/lightgbm/seed0" and cells[2].table == "syn/small"
    wide = next(c for c in cells if c.variant == "wide" and c.method == "pcgrad" and c.apt)
    assert wide.id == "syn/wide/mmoe/pcgrad/muon/apt-on/seed0"
    small = cell_config(spec, next(c for c in cells if c.variant == "small" and c.method == "pcgrad" and c.apt))
    wide_cfg = cell_config(spec, wide)
    assert small.model.embedding_dim != 12 and wide_cfg.model.embedding_dim == 12
    # a deep merge: the override keeps the grid's other keys of the same sections
    assert wide_cfg.to_dict()["mtl"]["apt"] == {"momentum": True, "direction_preservation": True, "beta_min": 0.7}
    assert wide_cfg.mtl.lr == small.mtl.lr == 0.01


def test_issue19_grid_waits_only_for_the_two_new_keys(tmp_path: Path) -> None:
    """configs/grids/kuairand-issue19.yaml is refused only for ``freshness`` (ETL) and ``tasks`` (job)
    until they exist; without those overrides it is a valid 72-cell grid with LightGBM rows."""
    path = ROOT / "configs" / "grids" / "kuairand-issue19.yaml"
    try:
        load_grid(path)
    except GridError as e:
        assert e.key in ("variants.indep-daily.etl", "variants.esmm-exact.job.tasks"), e
    raw = yaml.safe_load(path.read_text())
    for variant in raw["variants"].values():
        if variant:
            variant.get("etl", {}).pop("freshness", None)
            variant.get("job", {}).pop("tasks", None)
    spec = grid_from_dict(raw, str(path))
    tasks = ("click", "like", "finish")
    cells = grid_cells(spec, {f"kuairand/{v}": tasks for v in spec.variants})
    mtl = [c for c in cells if c.task is None and not c.is_lightgbm]
    assert len(mtl) == 4 * 2 * 3 * 3 == 72
    assert sum(c.is_lightgbm for c in cells) == 4 * 3 and sum(c.is_baseline for c in cells) == 4 * 3 * 3
    assert ("mgda", "adamw", True) in spec.combos  # the current default, the acceptance's comparison


def test_lightgbm_rows_without_the_package_are_refused_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lightgbm" else real(name, *a))
    with pytest.raises(GridError) as info:
        grid_from_dict({**minimal(), "lightgbm": True}, "grid.yaml")
    assert info.value.key == "lightgbm" and "aptrank[baselines]" in str(info.value)
    assert grid_from_dict(minimal()).lightgbm is False  # a grid without LightGBM rows does not need it
