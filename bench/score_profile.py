"""Where the ONNX scoring path spends its time, per stage and per graph node (``bench/score.py``'s
setup: the demo model, PLE, exported through the parity gate, the sample's real candidates).

Per stage, in CPU microseconds per row on one thread (the process CPU time, so that jobs sharing
the cores do not count): Parquet read, reject checks, feature lookup (``CandidateFeatures.encode_blocks``),
onnxruntime (``Scorer.predict``), fusion and output columns, Parquet write. Per node: the
onnxruntime profiler (``SessionOptions.enable_profiling``, https://onnxruntime.ai/docs/performance/
tune-performance/profiling-tools.html) over the same rows, each node's share of the kernel time.
Each ``--fold-rows`` value is exported and profiled in turn (the export's table folding,
``models.export.fold``), each on both scoring paths: ``pooled`` (the users' histories pooled once,
``serving.user_precompute``: the graph's rest after the sequence branch) and ``whole`` (the whole
graph, as for a model exported without the marker). The machine line is ``bench/score.py``'s.
Writes ``bench/results/score_profile.json``.

    .venv/bin/python bench/score_profile.py [--rows 262144] [--fold-rows 512 4096] [--top 12] [--config JOB.yaml]

``--config``: the job config whose model is exported (the demo job by default; e.g. a copy with
``model.dense_encoding`` to measure what the dense features' encoding costs the graph).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from report import write_result
from score import DEMO_CONFIG, candidates_file, cpu_info, prepare_all

CHUNK_ROWS = 131_072


def stage_times(scorer: object, source: Path, out: Path) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(CPU microseconds per row of each stage of ``serving.batch_scoring.score_frame`` + the write,
    the first chunk's graph inputs); the lookup and the model alternate by blocks of
    ``SCORE_BLOCK_ROWS`` rows, as in ``Scorer.score``, after one untimed pass over the first chunk
    (else the first path profiled pays the process's first allocations: +0.2-0.3 us/row of lookup)."""
    import polars as pl

    from aptrank.serving.batch_scoring import ParquetSink
    from aptrank.serving.candidates import iter_chunks, reject_reason, scan_candidates
    from aptrank.serving.scorer import SCORE_BLOCK_ROWS

    part = scorer.user_part  # type: ignore[attr-defined]
    spent: collections.Counter[str] = collections.Counter()
    clock = time.process_time()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.process_time()
        spent[stage] += now - clock
        clock = now

    chunks = list(iter_chunks(scan_candidates("canonical", source), CHUNK_ROWS))
    lap("parquet read")
    scorer.score(chunks[0])  # type: ignore[attr-defined]  # warm-up, untimed: the allocator's pages and caches
    clock = time.process_time()
    sink, first = ParquetSink(out), None
    for chunk in chunks:
        clock = time.process_time()
        reject_reason(chunk)
        lap("reject checks")
        blocks, parts = [], []
        for encoded in scorer.features.encode_blocks(chunk, SCORE_BLOCK_ROWS, sequences=part is None):  # type: ignore[attr-defined]
            lap("feature lookup")  # as Scorer.score does
            parts.append(scorer.predict(encoded))  # type: ignore[attr-defined]
            lap("onnxruntime")
            if first is None:
                blocks.append(encoded.arrays if part is None else part.feed(encoded.arrays, encoded.user_rows))
            clock = time.process_time()  # the graph inputs' copy is the profiler's, not the scorer's
        probs = np.concatenate(parts)
        first = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]} if first is None else first
        clock = time.process_time()  # the first chunk's copy above is the profiler's, not the scorer's
        cols = [pl.Series(f"p_{t}", probs[:, k]) for k, t in enumerate(scorer.task_names)]  # type: ignore[attr-defined]
        scored = chunk.with_columns(*cols, pl.Series("score", scorer.fusion.score(probs)))  # type: ignore[attr-defined]
        lap("fusion + columns")
        sink.write(scored)
        lap("parquet write")
    sink.abort()
    rows = sum(c.height for c in chunks)
    assert first is not None, "no candidate rows"
    return {k: v / rows * 1e6 for k, v in spent.items()}, first


def node_times(model: bytes | str, arrays: dict[str, np.ndarray], prefix: Path) -> tuple[float, dict[str, float]]:
    """(CPU us per row unprofiled, each node's share of the profiled kernel time) for ``arrays``
    run through ``model`` (a path or serialized graph) with the scorer's session settings,
    :data:`serving.onnx_model.PREDICT_ROWS` at a time."""
    import onnxruntime as ort

    from aptrank.serving.onnx_model import PREDICT_ROWS, PROVIDERS, session_options

    rows = int(arrays["categorical"].shape[0])
    feeds = [{k: v[s : s + PREDICT_ROWS] for k, v in arrays.items()} for s in range(0, rows, PREDICT_ROWS)]
    plain = ort.InferenceSession(model, session_options(1), providers=PROVIDERS)
    for feed in feeds:  # warm-up
        plain.run(None, feed)
    t0 = time.process_time()
    for feed in feeds:
        plain.run(None, feed)
    cpu_us = (time.process_time() - t0) / rows * 1e6
    opts = session_options(1)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(prefix)
    profiled = ort.InferenceSession(model, opts, providers=PROVIDERS)
    for feed in feeds:
        profiled.run(None, feed)
    events = json.loads(Path(profiled.end_profiling()).read_text())
    spent: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            spent[f"{e['args']['op_name']} {e['name'].removesuffix('_kernel_time')}"] += e["dur"]
    total = sum(spent.values()) or 1
    return cpu_us, {k: v / total for k, v in spent.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=262_144)
    parser.add_argument("--fold-rows", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--top", type=int, default=12, help="nodes printed per graph")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="job config of the model")
    args = parser.parse_args()
    from aptrank.serving.scorer import Scorer, load_scorer
    from aptrank.serving.user_precompute import USER_TABLE_MAX_BYTES, split_graph

    machine = cpu_info()
    print(f"machine: {machine['cpu_model']}; SIMD {' '.join(machine['simd_flags'])}; ort {machine['onnxruntime']}")  # type: ignore[arg-type]
    graphs: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="aptrank-bench-profile-") as tmp:
        for fold_rows in args.fold_rows:
            work = Path(tmp) / f"fold{fold_rows}"
            work.mkdir()
            prep = prepare_all(work, args.config, fold_rows=fold_rows)
            source = candidates_file(prep.features, args.rows, work / "candidates.parquet")
            for path, max_bytes in (("whole", 0), ("per-user", USER_TABLE_MAX_BYTES)):
                scorer = load_scorer(prep.model_path, prep.features, weights=prep.weights, threads=1)
                scorer = Scorer(scorer.model, scorer.features, prep.weights, user_table_max_bytes=max_bytes)
                stages, arrays = stage_times(scorer, source, work / "out.parquet")
                listed = ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
                print(f"fold_rows {fold_rows}, {path}: {listed} CPU us/row (total {sum(stages.values()):.2f})")
                graph = str(prep.model_path)
                if scorer.user_part is not None:
                    graph = split_graph(prep.model_path, scorer.user_part.tensor)[1].SerializeToString()
                cpu_us, shares = node_times(graph, arrays, work / f"ort-{path}")
                print(f"  graph: {cpu_us:.2f} CPU us/row unprofiled; nodes by share of kernel time:")
                for name, share in list(shares.items())[: args.top]:
                    print(f"    {share * 100:5.1f}%  {name}")
                graphs[f"fold_rows={fold_rows},{path}"] = {
                    "stages_cpu_us_per_row": stages,
                    "graph_cpu_us_per_row": cpu_us,
                    "node_shares": shares,
                }
    write_result(
        "score_profile",
        {
            "benchmark": "score_profile",
            "rows": args.rows,
            "config": str(args.config),
            "machine": machine,
            "graphs": graphs,
        },
    )


if __name__ == "__main__":
    main()
