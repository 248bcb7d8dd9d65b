"""The registered scorer model (serving.pyfunc_model): ``mlflow.pyfunc.load_model(uri).predict`` on raw
candidate rows equals ``aptrank score`` and ``/v1/rank`` (all given only the model URI), its signature
and input example are on raw columns of real test rows, loading and predicting import no torch,
``mlflow models serve`` answers ``dataframe_records``, and a ``models:/`` URI without a tracking URI
is refused with a message saying where it looked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from tests.serving.conftest import URI, WEIGHTS, Registry
from tests.serving.online.serving_http import Client, ServeProcess
from tests.tiny import CLI

ROOT = Path(__file__).resolve().parents[2]


def _pandas(frame: pl.DataFrame):
    return frame.with_columns(pl.col("ts").dt.replace_time_zone(None)).to_pandas()


def test_predict_on_raw_rows_equals_aptrank_score_and_v1_rank(
    pyfunc, registered: str, registry: Registry, candidates: pl.DataFrame, tmp_path: Path
) -> None:
    predicted = pyfunc.predict(_pandas(candidates))
    assert list(predicted.columns) == ["p_click", "p_like", "p_finish", "score"]
    assert len(predicted) == candidates.height
    probs = predicted[["p_click", "p_like", "p_finish"]].to_numpy()
    np.testing.assert_allclose(predicted["score"], probs.astype(np.float64) @ [1.0, 2.0, 1.0], rtol=0, atol=1e-6)

    # aptrank score with nothing but the model URI: snapshot and weights come from the model
    candidates.write_parquet(tmp_path / "candidates.parquet")
    out = tmp_path / "scored.parquet"
    args = ["score", "--no-progress", "--model", registered, "--tracking-uri", registry.uri]
    args += ["--source", "canonical", "--input", str(tmp_path / "candidates.parquet"), "--output", str(out)]
    result = CliRunner().invoke(__import__("aptrank.pipeline.cli", fromlist=["app"]).app, args)
    assert result.exit_code == 0, result.output
    assert "fusion weights" in result.stderr and "registered with the model" in result.stderr
    batch = pl.read_parquet(out)
    for column in predicted.columns:
        np.testing.assert_allclose(batch[column].to_numpy(), predicted[column].to_numpy(), rtol=0, atol=1e-6)

    # /v1/rank of `aptrank serve --model URI` (no --features, no --config) for one user's candidates
    first = candidates.row(0, named=True)
    rows = candidates.filter(pl.col("user_id") == first["user_id"]).head(20)
    rows = rows.with_columns(pl.lit(first["ts"]).alias("ts"), pl.lit(first["tab"]).alias("tab"))
    direct = pyfunc.predict(_pandas(rows))
    serve = ("--model", registered, "--tracking-uri", registry.uri, "--poll-seconds", "0")
    with ServeProcess(*serve, workers=1) as server:
        status, payload = Client(server.port).rank(
            {
                "user_id": first["user_id"],
                "item_ids": rows["item_id"].to_list(),
                "ts": first["ts"].isoformat(),
                "context": {"tab": first["tab"]},
            }
        )
    assert status == 200 and payload["weights"] == WEIGHTS
    by_item = {r["item_id"]: r for r in payload["results"]}
    for k, item in enumerate(rows["item_id"].to_list()):
        assert abs(by_item[item]["score"] - direct["score"].iloc[k]) <= 1e-6
        assert abs(by_item[item]["probabilities"]["like"] - direct["p_like"].iloc[k]) <= 1e-6


def test_signature_and_input_example_are_raw_columns_of_real_test_rows(
    pyfunc, raw_test: pl.DataFrame, registered: str, registry: Registry, tmp_path: Path
) -> None:
    import mlflow.artifacts

    from aptrank.pipeline.mlflow_store import fluent_uri

    signature = pyfunc.metadata.get_input_schema().to_dict()
    assert [(c["name"], c["type"]) for c in signature] == [
        ("user_id", "long"),
        ("item_id", "long"),
        ("ts", "datetime"),
        ("tab", "long"),
    ]
    outputs = pyfunc.metadata.get_output_schema().to_dict()
    assert [(c["name"], c["type"]) for c in outputs] == [
        ("p_click", "float"),
        ("p_like", "float"),
        ("p_finish", "float"),
        ("score", "double"),
    ]
    with fluent_uri(registry.uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=registered, dst_path=str(tmp_path)))
    example = json.loads((local / "input_example.json").read_text())
    frame = pl.DataFrame(example["data"], schema=example["columns"], orient="row")
    assert frame.height == 5 and frame.columns == ["user_id", "item_id", "ts", "tab"]
    first = raw_test.head(5)
    assert frame["user_id"].to_list() == first["user_id"].to_list()
    assert frame["item_id"].to_list() == first["item_id"].to_list()
    assert frame["tab"].to_list() == first["tab"].to_list()
    artifacts = sorted(p.name for p in (local / "artifacts").iterdir())
    assert artifacts == ["features", "fusion.json", "model.onnx", "model.onnx.sha256"]
    assert json.loads((local / "artifacts" / "fusion.json").read_text()) == {"weights": WEIGHTS}


def test_extra_columns_are_ignored_and_missing_ones_named(pyfunc, candidates: pl.DataFrame) -> None:
    frame = _pandas(candidates.head(50))
    plain = pyfunc.predict(frame)
    frame["note"] = "x"
    with_extra = pyfunc.predict(frame)
    assert list(with_extra.columns) == list(plain.columns)
    np.testing.assert_array_equal(with_extra["score"].to_numpy(), plain["score"].to_numpy())
    with pytest.raises(Exception, match="tab"):
        pyfunc.predict(frame.drop(columns=["tab"]))


def test_loading_and_predicting_import_no_torch(registered: str, registry: Registry, candidates: pl.DataFrame) -> None:
    rows = candidates.head(10).with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.3f"))
    code = textwrap.dedent(
        f"""
        import sys, json
        import mlflow, mlflow.pyfunc, pandas as pd
        mlflow.set_tracking_uri({registry.uri!r})
        model = mlflow.pyfunc.load_model({registered!r})
        frame = pd.DataFrame({rows.to_dict(as_series=False)!r})
        out = model.predict(frame.assign(ts=pd.to_datetime(frame["ts"])))
        print(json.dumps({{"torch": "torch" in sys.modules, "rows": len(out)}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"torch": False, "rows": 10}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_dataframe_records(
    pyfunc, registered: str, registry: Registry, candidates: pl.DataFrame
) -> None:
    rows = candidates.head(30)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": registry.uri}
    # mlflow models serve execs `uvicorn` from PATH: the venv's bin folder, as when the venv is activated
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    mlflow_cli = [sys.executable, "-m", "mlflow", "models", "serve", "-m", registered, "--env-manager", "local"]
    proc = subprocess.Popen(
        [*mlflow_cli, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    records = [{**r, "ts": r["ts"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]} for r in rows.to_dicts()]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    said = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
                    raise AssertionError(f"mlflow models serve did not come up: {said[-3000:]}") from None
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            json.dumps({"dataframe_records": records}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            answer = json.loads(r.read())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    served = pl.DataFrame(answer["predictions"])
    direct = pyfunc.predict(_pandas(rows))
    assert served.columns == ["p_click", "p_like", "p_finish", "score"]
    for column in served.columns:
        np.testing.assert_allclose(served[column].to_numpy(), direct[column].to_numpy(), rtol=0, atol=1e-6)


def test_models_uri_without_tracking_uri_says_where_it_looked(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [*CLI, "score", "--model", URI, "--source", "canonical", "--input", "x", "--output", "y.parquet"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no MLflow tracking URI" in done.stderr and "--tracking-uri" in done.stderr
    assert "MLFLOW_TRACKING_URI" in done.stderr and str(tmp_path) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists()
