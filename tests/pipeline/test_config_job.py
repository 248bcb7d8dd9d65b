"""The job config: typed, parsed once at load, every bad value refused naming the file and dotted key;
the published JSON Schema equals the model's and accepts the shipped configs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from aptrank.apt import MTLConfig
from aptrank.config_model import ConfigModel
from aptrank.data.etl.config import EtlConfigError
from aptrank.data.etl.config import load_config as load_etl_config
from aptrank.data.synthetic import GeneratorConfig
from aptrank.errors import ConfigError
from aptrank.models import ModelConfigError
from aptrank.models.mmoe import MMoEConfig
from aptrank.models.ple import PLEConfig
from aptrank.pipeline import config_schema
from aptrank.pipeline.config import JobConfig, build_config, load_config
from aptrank.pipeline.experiment.grid import GridError
from aptrank.pipeline.experiment.variants import merged
from tests.tiny import CLI

ROOT = Path(__file__).resolve().parents[2]
JOB_CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
ETL_CONFIGS = sorted((ROOT / "configs" / "etl").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key", "rule"),
    [
        ('train:\n  patience: "two"\n', "train.patience", "expected an integer, got 'two'"),
        ("train:\n  epochs: four\n", "train.epochs", "expected an integer, got 'four'"),
        ('train:\n  epochs: "3"\n', "train.epochs", "expected an integer, got '3'"),  # YAML typed it a string
        ("train:\n  epochs: 0\n", "train.epochs", "must be >= 1, got 0"),
        ("train:\n  device: gpu\n", "train.device", "must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("seed: 1.5\n", "seed", "expected an integer, got 1.5"),
        ("trian:\n  epochs: 3\n", "trian", "unknown key"),
        ("train:\n  epoch: 3\n", "train.epoch", "unknown key"),
        ("train: 3\n", "train", "expected a mapping, got 3"),
        ("scoring:\n  weights: {click: high}\n", "scoring.weights.click", "expected a number, got 'high'"),
        ("model:\n  arch: mmoe\n  experts: 3\n", "model.experts", "unknown key"),
        ("model:\n  arch: mmoe\n  num_experts: many\n", "model.num_experts", "expected an integer, got 'many'"),
        ("model:\n  arch: ple\n  num_experts: 3\n", "model.num_experts", "unknown key"),  # an MMoE key
        ("model:\n  expert_hidden: [64, x]\n", "model.expert_hidden[1]", "expected an integer, got 'x'"),
        ("model:\n  arch: transformer\n", "model.arch", "unknown arch 'transformer'"),
        ("mtl:\n  method: nope\n", "mtl.method", "unknown method 'nope'"),
        ("mtl:\n  lr: fast\n", "mtl.lr", "expected a number, got 'fast'"),
        ("mtl:\n  apt:\n    beta: 0.9\n", "mtl.apt.beta", "unknown key"),
        ("mtl:\n  method: pcgrad\n  method_kwargs: {alpha: 0.5}\n", "mtl.method_kwargs.alpha", "unknown argument"),
        ("mtl:\n  optimizer: adamw\n  apt: {direction_preservation: true}\n", "mtl.apt.direction_preservation", "Muon"),
        ("mtl:\n  optimizer: adatask\n  grad_mode: rep\n", "mtl.optimizer", "AdaTask"),
        ("mtl:\n  grad_scope: all\n  per_task_backend: batched\n", "mtl.per_task_backend", "sparse"),
    ],
)
def test_bad_job_config_is_refused_at_load_naming_file_and_key(tmp_path: Path, text: str, key: str, rule: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key and err.value.source == str(path)
    assert str(err.value).startswith(f"{path}: {key}: ") and rule in err.value.reason


def test_an_unknown_key_lists_the_known_ones_at_its_place() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.arch=ple", "model.num_experts=3"])
    assert err.value.key == "model.num_experts" and "'ple_levels'" in err.value.reason
    assert "'num_experts'" not in err.value.reason  # PLE's own keys, not MMoE's
    with pytest.raises(ConfigError) as err:
        load_config(None, ["mtl.apt.beta=0.9"])
    assert (
        err.value.reason
        == "unknown key; known: ['beta_max', 'beta_min', 'direction_preservation', 'gamma', 'momentum']"
    )


def test_overrides_are_yaml_typed_like_the_file() -> None:
    assert load_config(None, ["train.epochs=3"]).train.epochs == 3
    for item, key in (("train.patience=two", "train.patience"), ("train.epochs='3'", "train.epochs")):
        with pytest.raises(ConfigError) as err:
            load_config(None, [item])
        assert err.value.key == key and "expected an integer" in str(err.value)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"'seed' is not a section"):
        load_config(None, ["seed=1", "seed.x=1"])


def test_every_room_raises_the_one_config_error() -> None:
    cases = [
        (lambda: MTLConfig.from_dict({"lr": "x"}), ConfigError, "mtl.lr"),
        (lambda: MMoEConfig(num_experts="two"), ModelConfigError, "num_experts"),
        (lambda: GeneratorConfig(users="many"), ConfigError, "users"),
        (lambda: load_etl_config(ROOT / "nope.yaml"), EtlConfigError, ""),
    ]
    for make, kind, key in cases:
        with pytest.raises(kind) as err:
            make()
        assert isinstance(err.value, ConfigError) and isinstance(err.value, ValueError) and err.value.key == key
    assert issubclass(GridError, ConfigError)


def test_etl_and_generator_sections_refuse_wrong_types_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, "features:\n  smoothing: lots\n", "etl.yaml")
    with pytest.raises(EtlConfigError) as err:
        load_etl_config(path)
    assert err.value.key == "features.smoothing" and str(err.value).startswith(f"{path}: features.smoothing: ")
    with pytest.raises(ConfigError) as err:
        GeneratorConfig.parse({"days": "seven"}, "grid.yaml", "datasets.syn.generator")
    assert str(err.value) == "grid.yaml: datasets.syn.generator.days: expected an integer, got 'seven'"


def test_sections_are_typed_and_parsed_once(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    assert isinstance(cfg.mtl, MTLConfig) and isinstance(cfg.model, PLEConfig) and cfg.arch == "ple"
    assert cfg.mtl.method == "mgda" and cfg.mtl.apt.momentum is True and cfg.model.expert_hidden == (64,)
    assert cfg.mtl_seeded.seed == cfg.seed == 7 and cfg.model_seeded.seed == 7  # unset: the job's seed
    own = load_config(None, ["seed=3", "mtl.seed=5", "model.seed=6"])
    assert (own.mtl_seeded.seed, own.model_seeded.seed) == (5, 6)
    with pytest.raises(Exception, match="frozen"):
        cfg.train.epochs = 9  # type: ignore[misc]
    ple = load_config(None, ["model.arch=ple", "model.ple_levels=1"])
    assert isinstance(ple.model, PLEConfig) and ple.model.ple_levels == 1
    single = ple.with_model("single_task", task="like")
    assert single.arch == "single_task" and single.model.task == "like" and single.train == ple.train
    assert single.to_dict()["model"] == {**ple.to_dict()["model"], "arch": "single_task", "task": "like"}


def test_to_dict_reports_model_and_mtl_as_written() -> None:
    """config_hash input: an int where a float is declared stays as written (the hash of an existing
    config does not move), shared sizes of a grid stay too; the typed values are floats."""
    cfg = load_config(None, ["model.dropout=0", "mtl.lr=1"])
    assert cfg.model.dropout == 0.0 and isinstance(cfg.model.dropout, float) and cfg.mtl.lr == 1.0
    assert cfg.to_dict()["model"] == {"dropout": 0} and cfg.to_dict()["mtl"] == {"lr": 1}
    assert json.dumps(cfg.to_dict()["mtl"]) == '{"lr": 1}'
    shared = build_config({"model": {"arch": "ple", "num_experts": 3}}, "grid cell", shared_model_sizes=True)
    assert shared.to_dict()["model"] == {"arch": "ple", "num_experts": 3} and shared.model.given() == {"arch": "ple"}


def test_a_run_logged_with_shared_sizes_still_loads() -> None:
    logged = {"model": {"arch": "ple", "num_experts": 3, "bottom_hidden": [4], "ple_levels": 1}}
    with pytest.raises(ConfigError, match="model.num_experts: unknown key"):
        build_config(logged, "run config")
    cfg = build_config(logged, "run config", shared_model_sizes=True)
    assert cfg.model.given() == {"arch": "ple", "ple_levels": 1}
    with pytest.raises(ConfigError, match="model.experts: unknown key"):  # a typo is still refused
        build_config({"model": {"arch": "ple", "experts": 3}}, "run config", shared_model_sizes=True)


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: p.name)
def test_to_dict_keeps_what_the_file_says(path: Path) -> None:
    """The hashed view (pipeline.provenance.config_hash) is the same as before the typed models:
    the ``model`` and ``mtl`` sections exactly as written, the other sections complete."""
    raw = yaml.safe_load(path.read_text())
    d = load_config(path).to_dict()
    assert d["model"] == raw["model"] and d["mtl"] == raw["mtl"]
    assert d["train"] == merged(JobConfig().train.to_dict(), raw["train"])  # nested sections too (train.distill)
    assert list(d) == ["name", "seed", "data", "model", "train", "mtl", "tracking", "gate", "scoring"]
    assert load_config(None).to_dict()["model"] == {"arch": "mmoe"} and load_config(None).to_dict()["mtl"] == {}
    assert build_config(d, "run config").to_dict() == d  # a logged config (MLflow config.yaml) reads back to itself


@pytest.mark.parametrize("name", sorted(config_schema.SCHEMAS))
def test_published_schema_is_the_generated_one(name: str) -> None:
    assert (ROOT / "docs" / name).read_text() == config_schema.schema_text(name)
    assert config_schema.main(["--check"]) == 0


def test_schema_accepts_the_shipped_configs_and_refuses_bad_ones() -> None:
    job = json.loads((ROOT / "docs" / "job-config.schema.json").read_text())
    etl = json.loads((ROOT / "docs" / "etl-config.schema.json").read_text())
    for schema, paths in ((job, JOB_CONFIGS), (etl, ETL_CONFIGS)):
        for path in paths:
            assert path.read_text().startswith(f"# yaml-language-server: $schema=../{'../' if schema is etl else ''}")
            jsonschema.validate(json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str)), schema)
    for bad in ({"train": {"patience": "two"}}, {"model": {"arch": "ple", "num_experts": 3}}, {"mtl": {"lr": "x"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, job)


def test_stale_schema_is_reported(tmp_path: Path) -> None:
    assert config_schema.main(["--out", str(tmp_path)]) == 0
    assert config_schema.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "job-config.schema.json").write_text("{}\n")
    assert config_schema.main(["--out", str(tmp_path), "--check"]) == 1


def test_cli_refuses_a_bad_config_with_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, 'train:\n  patience: "two"\n')
    command = [*CLI, "train", "--features", str(tmp_path), "--config", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {path}: train.patience: expected an integer, got 'two'"]


def test_train_on_a_folder_without_an_etl_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-etl-here"
    command = [*CLI, "train", "--features", str(missing), "--run-dir", str(tmp_path / "run"), "--no-track"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {missing}: FeatureSpec file not found"]


def test_every_config_model_forbids_unknown_keys_and_is_frozen() -> None:
    def subclasses(cls: type) -> list[type]:
        return [c for s in cls.__subclasses__() for c in (s, *subclasses(s))]

    models = subclasses(ConfigModel)
    assert {"JobConfig", "MTLConfig", "MMoEConfig", "EtlConfig", "GeneratorConfig", "GridSpec"} <= {
        m.__name__ for m in models
    }
    assert all(m.model_config["extra"] == "forbid" and m.model_config["frozen"] for m in models)
