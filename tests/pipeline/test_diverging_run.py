"""A diverging run ends in one clear line and a JSON summary, never a traceback (issue #20):
``aptrank train`` and ``aptrank run`` with MGDA at ``mtl.lr: 1e6`` stop on the non-finite gradient
(exit 1); an infinite learning rate is refused when the config loads (exit 2). Real CLI processes on
the ETL output of the shipped sample."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.tiny import CLI, TINY_DEMO

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "demo.yaml")
"""The demo job: MGDA + AdamW + APT momentum; at ``lr: 1e6`` its shared gradient overflows within steps."""
SMALL = [*TINY_DEMO, "mtl.method=mgda", "train.max_steps_per_epoch=10", "model.dropout=0", "train.distill.weight=0"]
"""Without the demo's dropout (0.1) and soft labels (``train.distill``): with either, this tiny model's
ReLUs die at ``lr: 1e6`` before the gradient overflows (the run ends finite, every AUC 0.5), and the
non-finite path is what is tested."""


def cli(args: list[str], overrides: list[str]) -> tuple[int, list[str], dict]:
    """(exit code, stderr lines, the JSON summary on stdout's last line) of one ``aptrank`` process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [*CLI, *args, *[x for o in overrides for x in ("--set", o)]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    return done.returncode, done.stderr.splitlines(), json.loads(lines[-1])


def only_error_line(stderr: list[str]) -> str:
    errors = [line for line in stderr if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_train_at_lr_1e6_with_mgda_stops_with_one_line_and_a_json_summary(etl_dir: Path, tmp_path: Path) -> None:
    args = ["train", "--config", DEMO, "--features", str(etl_dir), "--run-dir", str(tmp_path / "run"), "--no-track"]
    code, stderr, summary = cli([*args, "--no-progress"], [*SMALL, "mtl.lr=1e6"])
    line = only_error_line(stderr)
    assert code == 1 and summary["exit_code"] == 1
    assert "training diverged: epoch 0 step" in line and "non-finite" in line
    assert "no checkpoint was written" in line and not (tmp_path / "run" / "last.pt").exists()
    assert summary["error"] == line.removeprefix("error: ")


INFINITE_LR = [(".inf", "must be > 0 and finite, got inf"), ("inf", "expected a number, got 'inf'")]


@pytest.mark.parametrize(("value", "rule"), INFINITE_LR)
def test_train_refuses_an_infinite_lr_when_it_loads(etl_dir: Path, tmp_path: Path, value: str, rule: str) -> None:
    args = ["train", "--features", str(etl_dir), "--run-dir", str(tmp_path / "run"), "--no-track"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*CLI, *args, "--set", f"mtl.lr={value}"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: <defaults>: mtl.lr: {rule}"]
    assert not (tmp_path / "run").exists()


def config_file(tmp_path: Path, lr: str) -> Path:
    """configs/demo.yaml with ``mtl.lr`` written in the file (as a user would), not as an override."""
    text = Path(DEMO).read_text().replace("lr: 0.002", f"lr: {lr}")
    path = tmp_path / "diverging.yaml"
    path.write_text(text)
    return path


def test_scheduled_job_at_lr_1e6_fails_with_exit_1_and_registers_nothing(etl_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = ["run", "--config", str(config_file(tmp_path, "1e6")), "--workdir", str(work)]
    code, stderr, summary = cli(args, [*SMALL, f"data.features={etl_dir}"])
    line = only_error_line(stderr)
    assert code == 1 and summary["exit_code"] == 1
    assert summary["error"].startswith("training diverged: epoch 0 step") and "non-finite" in summary["error"]
    assert line == f"error: {summary['error']}"
    assert not list(work.glob("runs/*/*.onnx"))

    from mlflow import MlflowClient

    assert MlflowClient(f"sqlite:///{work}/mlflow.db").search_model_versions("name='kuairand-demo'") == []


def test_scheduled_job_refuses_an_infinite_lr_in_its_config_file(tmp_path: Path) -> None:
    config = config_file(tmp_path, ".inf")
    code, stderr, summary = cli(["run", "--config", str(config), "--workdir", str(tmp_path / "work")], [])
    assert code == 2 and summary["exit_code"] == 2
    assert summary["error"] == f"{config}: mtl.lr: must be > 0 and finite, got inf"
    assert only_error_line(stderr) == f"error: {summary['error']}"
    assert not (tmp_path / "work").exists()
