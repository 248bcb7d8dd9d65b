"""The README's Python API example runs as written (on the shipped sample, with a tiny model): ETL,
train + register, load the registered model, score a DataFrame; and ``import aptrank`` stays cheap."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.tiny import TINY_DEMO

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES_LINE = 'overrides = ["train.epochs=1"]'


def readme_example() -> str:
    """The first ```python block under '## Python API' in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: '## Python API' has no ```python block"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = readme_example()
    assert OVERRIDES_LINE in code, f"README example: expected the line {OVERRIDES_LINE!r} (the test shrinks the model)"
    code = code.replace(OVERRIDES_LINE, f"overrides = {TINY_DEMO!r}")
    # the example runs from the repository root: give the temp dir its data sample and configs
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "samples").symlink_to(ROOT / "data" / "samples")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)

    etl, trained, scored = scope["etl"], scope["trained"], scope["scored"]
    assert etl.passed and (tmp_path / "work" / "notebook" / "features" / "feature_spec.json").is_file()
    assert trained.created and trained.model_uri == "models:/kuairand-demo/1"
    assert trained.tracking_uri == f"sqlite:///{(tmp_path / 'work' / 'notebook' / 'mlflow.db').resolve()}"
    aucs = trained.metrics["test_auc"]
    assert set(aucs) == {"click", "like", "finish"} and all(0.3 < a < 1.0 for a in aucs.values())

    tasks = scope["scorer"].task_names
    assert tasks == ("click", "like", "finish")
    rejected = scope["scorer"].score_frame(scope["candidates"]).rejected
    assert scored.height + rejected.height == 1000 and scored.height > 900
    probs = scored.select([f"p_{t}" for t in tasks]).to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    # the fusion weights registered with the model: the job config's scoring.weights, no config needed here
    weights = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["scoring"]["weights"]
    fused = probs.astype(np.float64) @ np.array([weights[t] for t in tasks], dtype=np.float64)
    np.testing.assert_allclose(scored["score"].to_numpy(), fused, rtol=1e-6)
    # a pandas frame scores the same
    again = scope["scorer"].score(scope["candidates"].to_pandas())
    np.testing.assert_array_equal(np.asarray(again["score"]), scored["score"].to_numpy())


def test_import_aptrank_is_cheap_and_lazy() -> None:
    code = (
        "import sys, json, aptrank;"
        " heavy = [m for m in ('torch', 'polars', 'mlflow', 'onnxruntime') if m in sys.modules];"
        " api = [n for n in aptrank.API if callable(getattr(aptrank, n))];"
        " print(json.dumps({'heavy': heavy, 'api': api, 'torch_after': 'torch' in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    assert out["api"] == ["TrainedModel", "export", "load_scorer", "read_candidates", "run_etl", "run_job", "train"]
    assert out["torch_after"] is False  # resolving the API names loads aptrank.api only


def test_unknown_attribute_is_an_attribute_error() -> None:
    import aptrank

    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        aptrank.trian  # noqa: B018
