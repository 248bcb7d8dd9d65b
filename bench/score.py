"""Batch scoring benchmark (``aptrank score``): 5M candidates end-to-end, ONNX and the registered
scorer model (MLflow pyfunc) vs the PyTorch model.

Setup (also used by ``bench/serve_load.py``): the real ETL on the shipped KuaiRand sample
(``configs/etl/kuairand.yaml``) and a model of the demo job (``configs/demo.yaml``: architecture,
sizes, fusion weights) exported through the parity gate. Weights are untrained (seeded): scoring cost
does not depend on their values. Candidates: the sample's real (user, item, ts, tab) rows repeated
to ``--rows`` (5M), written as one canonical Parquet file.

End-to-end = read Parquet in chunks -> feature lookup -> model -> fused score -> write Parquet (+
rejects). The PyTorch baseline runs the *same* pipeline with the model's PyTorch forward (TorchRec
training path, ``torch.inference_mode``, its fastest rows per call) in place of onnxruntime, on the
first ``--baseline-rows`` rows, in two settings: one chunk at a time with torch on every core, and
one chunk per core with one torch thread each (``--workers`` chunks at a time is what ``aptrank
score`` does); the faster is the baseline, its time extrapolated per row (said so in the output).
Peak RSS of the process is sampled every 20 ms; the process CPU time (all threads) is recorded too,
since rows per CPU-second shows what the code costs when other jobs take part of the 2 cores.
The pyfunc path is the registered scorer model (:mod:`serving.pyfunc_model`: ONNX + snapshot +
fusion weights, saved by :class:`pipeline.scorer_model.ScorerModel`) loaded with
``mlflow.pyfunc.load_model`` and called on pandas chunks (MLflow's schema enforcement included),
in the same chunked pipeline. Targets: >= 150k rows/s and >= 3x the PyTorch pipeline, for ONNX and
for the pyfunc. The load average before each run is recorded (the cores may be shared), and the
machine: CPU model, the SIMD flags onnxruntime's MLAS kernels dispatch on (AVX2, AVX-512, VNNI,
AMX), cores usable (affinity) vs reported, and the onnxruntime / torch / Polars thread settings.
Writes ``bench/results/score.json``.

What moves the ratio from one machine to another (``bench/score_profile.py``: per stage and per
graph node, CPU time on one thread; measured on the 2-vCPU AMD EPYC (Zen 4) VM, AVX-512 with VNNI
and BF16, no AMX, onnxruntime 1.23.2). The ONNX path is ~75% the graph (3.1-3.5 of 4.4-4.7 CPU
us/row; feature lookup 0.7-0.9, Parquet write 0.18 with zstd, read 0.08, fusion 0.02), and the
graph is mostly memory traffic: on the 4096-row folded graph the first GEMM took 20% of the kernel
time, the folded-group gather 16%, the sequence gather 12%, the sequence ReduceSum 8%, the MMoE
mix 5%, the group sum 4.5%, the rest ~40 small nodes; one run call costs ~38 us whatever its
rows (0.3 us/row at 128 rows). Those gathers read random 1 KB rows of the folded tables, 30 MB at
4096 rows per group: the whole L3 of the CPU (32 MB), which the VM shares with the host's other
tenants and the second scoring thread. With a process streaming 64 MB on the other core the
4096-row graph went from 3.10 to 3.66 us/row (+18%) and the unfolded one (2 MB of tables) from
5.23 to 5.52 (+6%); the PyTorch path (~10 us/row of Python and TorchRec dispatch on small tables)
barely moves, so the ratio moves with the neighbours' cache use, the likeliest reason for
x3.25-3.61 on a quiet host against x2.18-2.63 on busy ones at the same load average inside the VM
(one streaming neighbour explains +18%; a busier host's share was not reproduced here, so this is
the best-supported cause, not a proven one). Not the cause: onnxruntime's
session settings (optimization level basic/extended/all, arena, memory pattern, denormals as
zero: within 3%, noise), MLAS kernel dispatch (fp32 SGEMM takes the AVX-512F kernels on every
machine of this kind; VNNI and AMX only serve int8/bf16 kernels, which the 1e-5 parity gate rules
out), threads (one intra-op thread per chunk on its caller, no spinning, no pool to pin), rows per
call (64-512 within noise), the Parquet codec (0.26 us/row read + write). What the export does
about it (``models.export``): fold tables of at most 512 rows (5 MB, cache-resident; the 25 MB of
single-feature groups that 4096 allowed saved nothing), the sequence mean's sum and the folded
groups' sum as products with ones (one pass, the same bits at any batch size), and the towers as
one batched product per layer (``models.layers.StackedTowers``). The graph: 49 -> 47 nodes,
34 -> 7.4 MB; 3.43-3.67 -> 3.03-3.15 CPU us/row in the same run on the busy VM (load 15), and
the whole path's rows per CPU-second +12-14% (ONNX) and +12-17% (pyfunc) in A/B runs at load
6-10, the PyTorch path's unchanged (its training forward is not the export's): per CPU-second
x2.70 and x2.61 against x2.49 and x2.30 before, so on a busy host x3 is still not met.

With the PLE demo model (``bench/score_profile.py``: the three task mixes were a slice, concat and
einsum each, 13.6% of the kernel time with their concats) the export mixes all tasks in one batched
product (``models.ple.FusedPLEHead.gate_weights``: each task's gate weights placed on its own and
the shared experts, exact zeros elsewhere): graph 3.86-4.08 -> 3.53-3.72 CPU us/row, interleaved on
the same rows (load 6); the whole path on a busy host (load 6-7, before and after in turn): ONNX
196.6k -> 230.6k rows/CPU-s, pyfunc 184.9k -> 218.8k, PyTorch 80.1k and 85.1k, per CPU-second x2.45
-> x2.71 and x2.31 -> x2.57 (x3 on a quiet host needs ~264k). Tried and not kept (within noise):
256-8192 rows per onnxruntime call (1024 and more are slower: the [groups, rows, 329] gather of the
folded tables leaves the cache), scoring a chunk's lookup and model in 32,768-row blocks (on one
thread the lookup's fresh ~170 MB of arrays per chunk cost 0.34 us/row of page-fault system time,
0.05 in blocks; with two workers the rows per CPU-second stayed within noise, 193-227k against
205-229k), the first layer's bias folded into the tables so that one Gemm adds the folded sum (-1%,
noise).

Around the graph (issue #15, PLE demo): the scorer used to encode a whole 131,072-row chunk at
once, and its input arrays (~1.3 KB a row, each one 21-42 MB, above glibc's 32 MB mmap threshold)
were fresh pages on every chunk: on one thread, lookup then model per chunk, the lookup took 0.30
user + 0.64-1.12 system CPU us/row (0.012 minor faults a row); in 16,384-row blocks
(``serving.scorer.SCORE_BLOCK_ROWS``, ``CandidateFeatures.encode_blocks``) 0.37 user + 0.00-0.01
system, the same bits (the model calls are the same 128-row calls). The request side's log1p went
from ``math.log1p`` per element (0.18 us/row) to Polars' own vectorised log1p (bit-equal by
construction). The PyTorch baseline runs the same pipeline, so it gains the page-fault time too:
A/B on the same 1M (ONNX) and 0.5M (PyTorch) candidates, two workers, interleaved before/after,
load 6-8: ONNX 188-189k -> 217-243k rows/CPU-s (system time 0.88-1.38 -> 0.14-0.20 us/row),
PyTorch 79k -> 89k, per CPU-second x2.38 -> x2.43-2.71.
What is left is the graph (3.3-3.5 of ~4.3 CPU us/row on one thread): the first GEMM's 137 x 329
multiply-adds a row take 0.7-0.8 us, near an AVX-512 core's fp32 peak (an estimate), and folding
the four large tables too (``fold_rows=20000``: the 17k-row user table alone) makes the tables
225 MB and the graph slower (3.94-3.98 against 3.35-3.48 us). The next step is the per-user
pre-pooled history (the sequence gather, its index arithmetic and sum, and 32 of the GEMM's 137
inputs: ~0.6-0.8 us/row), which changes the graph's inputs (a user row in place of the history),
so contract 5, the parity rows (training examples have point-in-time histories, not the
snapshot's) and the online path with it.

Graph trims (PLE demo; onnxruntime's profiler, per-node medians over 256 calls of 128 rows; one
thread): the gates as masked softmax logits over all experts (``models.ple.over_all_experts``), the
sequence lengths clamped by one ``Clip`` in float, the group offsets and the folded sum as ``Gemm``
addends (``models.export.fold``): 53 -> 43 graph nodes (51 -> 41 after onnxruntime's fusions),
kernel time 3.62 -> 3.34 us/row, one call of one row 35.9 -> 31.9 CPU us (6.3 of it Python's
binding); interleaved A/B, 60 rounds of 16k real rows (load 4-5): 3.44 -> 3.26 CPU us/row median,
per-round ratio 0.947 (IQR 0.934-0.963); ``bench/score_profile.py``'s onnxruntime stage 3.44-3.89
-> 3.19-3.37 in three interleaved pairs. Re-measured and not changed: rows per call (64 x1.08, 256
x1.00, 512 x1.05, 1024 x1.20 against 128: ``serving.onnx_model.PREDICT_ROWS``) and the session
settings on this graph (ratios to the scorer's own, same A/B: EXTENDED in place of ALL 1.01, an
offline-optimized model loaded with optimizations off 1.00, spinning on 1.01: noise). What remains
is the first GEMM (26% of the kernel time), the folded gather (15%), the sequence gather (11%),
the group sum and the gate mix (7% each), the per-user pre-pooled history above.

Per-user work once per snapshot user (issue #15; ``serving.user_precompute``, DESIGN.md "Export is
a model capability"): without changing the graph's inputs, the export computes the first layer as
a user part (the features the snapshot's user row fixes: histories, 27 of 37 categorical and 16 of
41 dense features on the demo; their own folded groups) plus the item/request part, and records
that tensor and the pooled histories' in the metadata; every scorer splits the graph there with
``onnx.utils.Extractor``, computes the user part once per snapshot user (35 MB for the sample's
27k users, 1,340 B a user) and per candidate runs only the rest, bit-equal to the whole graph
(self-checked at load, tested). ``bench/score_profile.py`` (one thread, 262k rows, load 1-2, CPU
us/row, whole graph then per-user part): feature lookup 0.56 -> 0.47 (the first path profiled pays
0.1-0.3 more whichever it is; interleaved on 131k rows, 0.33-0.36 with the history arrays, 0.25-0.28
without), onnxruntime 3.96 -> 1.98 (graph 3.78 -> 1.78: per candidate the first GEMM reads 57 inputs
(137 on the old export), 4 folded groups (12), no history gather), whole path 4.80 -> 2.71; the
whole graph of a split export (what a scorer runs past the memory bound; chunks with unknown
users run the user part on their rows only) is slower than the old export's (3.3-3.5 -> 3.8-4.0
us). First cut, histories only (the sequence branch's frontier): lookup + graph 3.9 -> 3.15 CPU
us/row, x3.43/x3.28 per CPU-second at load 5-7. The acceptance run (``--rows 5000000``, two
workers, load 0.9-1.2; the 2-vCPU AMD EPYC
VM; ``results/score.json``): PyTorch 156.2k rows/s (81.4k rows/CPU-s), ONNX 697.8k (367.2k), pyfunc
698.7k (376.0k): x4.47 and x4.47 wall, x4.51 and x4.62 per CPU-second (x3.9 and x4.0 against the
last quiet run's PyTorch, 94.4k rows/CPU-s); an earlier run at load 1.7-2.9 gave x4.44 and x4.20
per CPU-second. The one-chunk two-thread PyTorch setting fell to 6-7k rows/s whenever the
other engineers' jobs held a core (intra-op threads waiting on each other); the two-worker setting,
the baseline, did not. numpy's transparent huge pages (``NUMPY_MADVISE_HUGEPAGE=0`` against the
default, 2M rows, interleaved A/B/A/B, load 2.3-4.2): PyTorch 85.5/85.7k -> 86.3/90.2k rows/CPU-s,
ONNX 363.1/389.9k -> 373.8/379.8k, pyfunc 355.2/381.3k -> 359.9/354.8k: within noise, so scoring
keeps numpy's default.

    .venv/bin/python bench/score.py [--rows 5000000] [--baseline-rows 1000000] [--chunk-rows 131072]
        [--workers CORES] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import psutil
from report import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
ETL_CONFIG = ROOT / "configs" / "etl" / "kuairand.yaml"
ROWS_TARGET_PER_S = 150_000
SPEEDUP_TARGET = 3.0
TORCH_ROWS_PER_CALL = 2048
"""The PyTorch baseline's rows per forward call: its fastest measured (153k rows/s at 2048 against
140k at 512 and 134k-145k at 8192); onnxruntime uses its own fastest, ``PREDICT_ROWS``."""
CORES = len(os.sched_getaffinity(0))
TORCH_SETTINGS = [(1, CORES), (CORES, 1)]
"""PyTorch baseline settings (chunks at a time, torch threads): one chunk on every core's thread, or
one chunk per core; the faster one is the baseline."""


@dataclass
class Prepared:
    model_path: Path
    features: Path
    weights: dict[str, float]
    torch_model: object


def prepare_all(workdir: Path, config: Path = DEMO_CONFIG, fold_rows: int | None = None) -> Prepared:
    """ETL on the KuaiRand sample + the job's model (``config``, the demo job by default) exported
    through the parity gate (``fold_rows``: the export's table folding, None = its default)."""
    from aptrank.data.adapters import SAMPLE_DIR
    from aptrank.data.etl.config import load_config as load_etl_config
    from aptrank.data.etl.run import run_etl
    from aptrank.models.export import export_checked, parity_rows
    from aptrank.models.registry import build_model
    from aptrank.pipeline.config import load_config

    features = workdir / "etl"
    spec = run_etl("kuairand", SAMPLE_DIR, features, load_etl_config(ETL_CONFIG)).spec
    cfg = load_config(config)
    model = build_model(cfg.arch, spec, {**cfg.model_options, "seed": cfg.seed}).eval()
    result = export_checked(model, spec, workdir / "model.onnx", parity_rows(features, spec), fold_rows=fold_rows)
    print(
        f"setup: ETL {features}, {cfg.arch} exported (parity max |diff| {result.parity.max_abs_diff:.2e} "
        f"on {result.parity.rows} rows)",
        flush=True,
    )
    return Prepared(result.path, features, dict(cfg.scoring.weights), model)


def prepare(workdir: Path, config: Path = DEMO_CONFIG) -> tuple[Path, Path]:
    """(ONNX model path, ETL output dir): the setup ``bench/serve_load.py`` shares."""
    p = prepare_all(workdir, config)
    return p.model_path, p.features


class TorchRunner:
    """The PyTorch model behind the ``predict(arrays)`` interface of ``serving.onnx_model.OnnxModel``:
    the model's own forward (TorchRec path) in eager mode under ``torch.inference_mode``, run
    :data:`TORCH_ROWS_PER_CALL` rows at a time."""

    def __init__(self, model: object, onnx_model: object) -> None:
        self.model = model
        self.spec = onnx_model.spec  # type: ignore[attr-defined]
        self.task_names = onnx_model.task_names  # type: ignore[attr-defined]
        self.version = "pytorch"

    def predict(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        from aptrank.data.spec import INPUT_NAMES
        from aptrank.models.feature_batch import FeatureBatch

        rows = int(arrays[INPUT_NAMES[0]].shape[0])
        out = []
        with torch.inference_mode():
            for start in range(0, rows, TORCH_ROWS_PER_CALL):
                part = {k: torch.from_numpy(arrays[k][start : start + TORCH_ROWS_PER_CALL]) for k in INPUT_NAMES}
                out.append(torch.sigmoid(self.model(FeatureBatch(**part))).numpy())  # type: ignore[operator]
        return np.concatenate(out) if out else np.zeros((0, len(self.task_names)), np.float32)


def candidates_file(features: Path, rows: int, path: Path) -> Path:
    """The sample's real candidate rows (user, item, ts, tab) repeated to ``rows`` rows."""
    from aptrank.data.adapters import SAMPLE_DIR, load_source

    base = load_source("kuairand", SAMPLE_DIR).events.select("user_id", "item_id", "ts", "tab").collect()
    reps = -(-rows // base.height)
    pl.concat([base] * reps).head(rows).write_parquet(path, row_group_size=131_072)
    return path


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")


def cpu_info() -> dict[str, object]:
    """CPU model, the SIMD flags kernels dispatch on, cores usable vs reported, thread settings."""
    import onnxruntime
    import torch

    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu_model": model,
        "simd_flags": [f for f in SIMD_FLAGS if f in flags],
        "cores_usable": CORES,
        "cores_reported": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
        "polars_threads": pl.thread_pool_size(),
    }


class PyfuncScorer:
    """The registered scorer model (``mlflow.pyfunc.load_model``) behind the ``Scorer`` interface
    that :func:`serving.batch.score_chunks` calls: each chunk goes through ``predict`` as a pandas
    frame of the raw columns (``ts`` naive UTC, as MLflow's datetime type takes it). The pyfunc does
    not report missing-row or OOV counts, so its ``LookupCounts`` holds only the rows."""

    def __init__(self, model: object, task_names: tuple[str, ...], context: list[str]) -> None:
        self.model = model
        self.task_names = task_names
        self.columns = ["user_id", "item_id", "ts", *context]
        self.version = "pyfunc"

    def output_columns(self) -> list[str]:
        return [f"p_{t}" for t in self.task_names] + ["score"]

    def score(self, chunk: pl.DataFrame) -> object:
        from aptrank.serving.encoded import LookupCounts
        from aptrank.serving.scorer import Scored

        frame = chunk.select(self.columns).with_columns(pl.col("ts").dt.replace_time_zone(None)).to_pandas()
        out = self.model.predict(frame)  # type: ignore[attr-defined]
        names = self.output_columns()
        probs = out[names[:-1]].to_numpy(np.float32)
        return Scored(probs, out[names[-1]].to_numpy(np.float64), LookupCounts(len(out)))


def pyfunc_scorer(prep: Prepared, source: Path, work: Path, task_names: tuple[str, ...]) -> PyfuncScorer:
    """The demo model saved as a scorer model (its input example: the candidates' first rows) and
    loaded back with ``mlflow.pyfunc.load_model``."""
    import mlflow.pyfunc

    from aptrank.data.spec import FeatureSpec
    from aptrank.pipeline.scorer_model import ScorerModel, assemble, to_pandas_candidates

    spec = FeatureSpec.read(prep.features)
    files = assemble(prep.model_path, prep.features, prep.weights, work / "pyfunc-artifacts")
    example = to_pandas_candidates(pl.read_parquet(source, n_rows=5), spec)
    path = ScorerModel(files, example).save(work / "pyfunc-model")
    return PyfuncScorer(mlflow.pyfunc.load_model(str(path)), task_names, list(spec.extras.get("context", [])))


class PeakRss:
    """Samples this process's RSS every 20 ms in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(
    scorer: object, source: Path, out_dir: Path, chunk_rows: int, limit: int | None, workers: int
) -> dict[str, float]:
    from aptrank.serving.batch_scoring import score_chunks
    from aptrank.serving.candidates import count_rows, iter_chunks, scan_candidates

    frame = scan_candidates("canonical", source)
    if limit is not None:
        frame = frame.head(limit)
    load = os.getloadavg()[0]
    cpu0 = time.process_time()
    with PeakRss() as rss:
        report = score_chunks(
            scorer,
            iter_chunks(frame, chunk_rows),
            out_dir / "scored.parquet",  # type: ignore[arg-type]
            out_dir / "rejects.parquet",
            total_rows=count_rows(frame),
            workers=workers,
        )
    cpu = time.process_time() - cpu0
    return {
        "rows": report.input_rows,
        "scored_rows": report.scored_rows,
        "rejected_rows": report.rejected_rows,
        "wall_s": report.seconds,
        "rows_per_s": report.rows_per_s,
        "cpu_s": cpu,
        "rows_per_cpu_s": report.input_rows / max(cpu, 1e-9),
        "peak_rss_bytes": rss.peak,
        "load_avg_1m_before": load,
        "workers": workers,
    }


def report(name: str, r: dict, note: str) -> None:
    print(
        f"{name:<8s} {r['rows']:>10,} rows  workers {r['workers']}  {r['wall_s']:7.1f} s  "
        f"{r['rows_per_s'] / 1e3:7.1f} k rows/s  ({r['rows_per_cpu_s'] / 1e3:.1f} k rows/cpu-s)  "
        f"peak RSS {r['peak_rss_bytes'] / 2**20:6.0f} MiB  load {r['load_avg_1m_before']:.2f}  ({note})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--baseline-rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=131_072)
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="job config of the model")
    parser.add_argument("--workers", type=int, default=CORES, help="chunks scored at a time (aptrank score's default)")
    parser.add_argument(
        "--threads", type=int, default=1, help="onnxruntime threads per chunk (aptrank score's default)"
    )
    args = parser.parse_args()

    import torch

    from aptrank.serving.scorer import Scorer, load_scorer

    machine = cpu_info()
    print(
        f"machine: {machine['cpu_model']}; SIMD {' '.join(machine['simd_flags']) or 'none of ' + str(SIMD_FLAGS)}; "  # type: ignore[arg-type]
        f"cores usable {machine['cores_usable']} of {machine['cores_reported']} reported; onnxruntime "
        f"{machine['onnxruntime']}; threads: torch {machine['torch_threads']}, polars {machine['polars_threads']}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="aptrank-bench-score-") as tmp:
        work = Path(tmp)
        prep = prepare_all(work, args.config)
        source = candidates_file(prep.features, args.rows, work / "candidates.parquet")
        onnx_scorer = load_scorer(prep.model_path, prep.features, weights=prep.weights, threads=args.threads)
        torch_scorer = Scorer(
            TorchRunner(prep.torch_model, onnx_scorer.model),
            onnx_scorer.features,  # type: ignore[arg-type]
            prep.weights,
        )
        tried = []
        for workers, threads in TORCH_SETTINGS:  # the baseline is the faster PyTorch setting
            torch.set_num_threads(threads)
            r = run(torch_scorer, source, work, args.chunk_rows, args.baseline_rows, workers)
            r["torch_threads"] = threads
            report(
                "pytorch",
                r,
                f"torch threads {threads}; subset, extrapolated per row to {args.rows:,} rows: "
                f"{args.rows / r['rows_per_s']:.0f} s",
            )
            tried.append(r)
        base = max(tried, key=lambda r: r["rows_per_s"])
        onnx = run(onnx_scorer, source, work, args.chunk_rows, None, args.workers)
        report("onnx", onnx, f"onnxruntime threads {args.threads}")
        pyfunc = run(
            pyfunc_scorer(prep, source, work, onnx_scorer.task_names), source, work, args.chunk_rows, None, args.workers
        )
        report("pyfunc", pyfunc, "registered scorer model, mlflow.pyfunc.load_model(...).predict on pandas chunks")
    speedup = onnx["rows_per_s"] / base["rows_per_s"]
    speedup_pyfunc = pyfunc["rows_per_s"] / base["rows_per_s"]
    per_cpu = onnx["rows_per_cpu_s"] / base["rows_per_cpu_s"]
    per_cpu_pyfunc = pyfunc["rows_per_cpu_s"] / base["rows_per_cpu_s"]
    result = {
        "benchmark": "score",
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "model": f"{args.config} (untrained weights)",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            **machine,
        },
        "baseline_pytorch": {**base, "note": f"subset of {base['rows']:,} rows, extrapolated per row"},
        "pytorch_settings_tried": tried,
        "run_onnx": onnx,
        "run_pyfunc": pyfunc,
        "ratios_vs_baseline": {
            "speedup_rows_per_s": speedup,
            "speedup_rows_per_cpu_s": per_cpu,
            "pyfunc_speedup_rows_per_s": speedup_pyfunc,
            "pyfunc_speedup_rows_per_cpu_s": per_cpu_pyfunc,
        },
        "targets": {"rows_per_s_min": ROWS_TARGET_PER_S, "speedup_min": SPEEDUP_TARGET},
        "meets_targets": min(onnx["rows_per_s"], pyfunc["rows_per_s"]) >= ROWS_TARGET_PER_S
        and min(speedup, speedup_pyfunc) >= SPEEDUP_TARGET,
    }
    print(
        f"onnx / pytorch: x{speedup:.2f}; pyfunc / pytorch: x{speedup_pyfunc:.2f}; per CPU-second "
        f"x{per_cpu:.2f} and x{per_cpu_pyfunc:.2f}; targets "
        f"(>= {ROWS_TARGET_PER_S / 1e3:.0f}k rows/s, >= x{SPEEDUP_TARGET:.0f}): "
        f"{'met' if result['meets_targets'] else 'MISSED'}"
    )
    write_result("score", result)


if __name__ == "__main__":
    main()
