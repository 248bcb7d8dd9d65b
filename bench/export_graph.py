"""ONNX graph speed per architecture: the exported model with and without table folding.

Setup: the real ETL on the shipped KuaiRand sample (``configs/etl/kuairand.yaml``: 37 categorical
features, 34 of them with at most 1,213 rows) and, per architecture, a model of the demo sizes
(16-dim embeddings, experts [64], bottom [128, 64], towers [32]; untrained, seeded: the cost does
not depend on the weights). Each is exported twice through ``models.export.export_onnx``:
``--fold-rows 0`` (the baseline: unfolded) and the default ``FOLD_MAX_ROWS`` (small tables folded
into the first dense layer, ``models.export.fold``), and both are checked against PyTorch on the
test rows (max |diff| printed, must be <= 1e-5). Timed: onnxruntime on one thread over the first
``--rows`` test rows, ``serving.onnx_model.PREDICT_ROWS`` rows per call, median of ``--repeats``
interleaved passes, in us per row. Writes ``bench/results/export_graph.json``.

    .venv/bin/python bench/export_graph.py [--rows 16384] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ETL_CONFIG = ROOT / "configs" / "etl" / "kuairand.yaml"
SIZES = {"embedding_dim": 16, "expert_hidden": [64], "bottom_hidden": [128, 64], "tower_hidden": [32], "seed": 7}
PARITY = 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16_384)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import torch

    from aptrank.data.adapters import SAMPLE_DIR
    from aptrank.data.etl.config import load_config
    from aptrank.data.etl.run import run_etl
    from aptrank.data.tensors import model_inputs
    from aptrank.models.export import export_onnx
    from aptrank.models.export.fold import FOLD_MAX_ROWS
    from aptrank.models.feature_batch import FeatureBatch
    from aptrank.models.registry import ARCHITECTURES, build_model
    from aptrank.serving.onnx_model import PREDICT_ROWS, load_onnx

    variants = {"unfolded": 0, "folded": FOLD_MAX_ROWS}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="aptrank-bench-export-") as tmp:
        spec = run_etl("kuairand", SAMPLE_DIR, Path(tmp) / "etl", load_config(ETL_CONFIG)).spec
        table = pq.read_table(next((Path(tmp) / "etl" / "test").glob("*.parquet")))
        arrays = {k: np.asarray(v) for k, v in model_inputs(table.slice(0, args.rows), spec).items()}
        rows = len(arrays["dense"])
        for arch in ARCHITECTURES:
            model = build_model(arch, spec, SIZES).eval()
            with torch.no_grad():
                expected = torch.sigmoid(model(FeatureBatch(**{k: torch.from_numpy(v) for k, v in arrays.items()})))
            sessions, entry = {}, {}
            for name, fold in variants.items():
                path = export_onnx(model, Path(tmp) / f"{arch}-{name}.onnx", spec, fold_rows=fold)
                sessions[name] = load_onnx(path)
                diff = float(np.abs(sessions[name].predict(arrays) - expected.numpy()).max())
                entry[name] = {"fold_rows": fold, "max_abs_diff": diff, "file_mb": path.stat().st_size / 1e6}
                if diff > PARITY:
                    raise SystemExit(f"{arch} {name}: max |diff| {diff:.2e} > {PARITY}")
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, session in sessions.items():
                    start = time.perf_counter()
                    session.predict(arrays)
                    times[name].append((time.perf_counter() - start) / rows * 1e6)
            for name in variants:
                entry[name]["us_per_row"] = statistics.median(times[name])
                entry[name]["us_per_row_runs"] = times[name]
            entry["speedup"] = entry["unfolded"]["us_per_row"] / entry["folded"]["us_per_row"]
            results[arch] = entry
            figures = "  ".join(
                f"{n} {entry[n]['us_per_row']:5.2f} us/row ({entry[n]['file_mb']:4.1f} MB)" for n in variants
            )
            worst = max(entry[n]["max_abs_diff"] for n in variants)
            ratio = entry["speedup"]
            print(f"{arch:<14s} {figures}  unfolded / folded: x{ratio:.2f}  max |diff| {worst:.1e}", flush=True)
    write_result(
        "export_graph",
        {
            "benchmark": "export_graph",
            "config": {**vars(args), "rows_used": rows, "sizes": SIZES, "predict_rows": PREDICT_ROWS, "threads": 1},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "baseline": "unfolded (--fold-rows 0)",
            "architectures": results,
        },
    )


if __name__ == "__main__":
    main()
