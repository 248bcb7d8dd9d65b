"""Streaming synthetic impression-log generator: world -> chunk plan -> chunks -> Parquet + manifest.

Random streams come from ``SeedSequence(seed, spawn_key=(stream, ...))`` (what ``SeedSequence.spawn``
produces): one for the world, one for calibrating the label intercepts, one for dealing bad-row
quotas and one per chunk, so a chunk's draws do not depend on how much was drawn before it. Only one
chunk is in memory at a time; peak memory depends on ``chunk_size`` and the world, not on ``events``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from aptrank.data.synthetic import tasks
from aptrank.data.synthetic.bad_rows import BAD_KINDS, Corruptor, bad_totals
from aptrank.data.synthetic.clock import epoch_ms
from aptrank.data.synthetic.config import GeneratorConfig
from aptrank.data.synthetic.events import draw_chunk
from aptrank.data.synthetic.plan import make_plan
from aptrank.data.synthetic.world import build_world
from aptrank.data.synthetic.writer import TRUTH_COLUMNS, PartitionedWriter, event_schema, write_table

MANIFEST_VERSION = 1
OUTPUTS: tuple[str, ...] = ("events", "items.parquet", "users.parquet", "manifest.json")
STREAM_WORLD, STREAM_CALIBRATION, STREAM_PLAN, STREAM_CHUNK = range(4)


def stream_rng(seed: int, *key: int) -> np.random.Generator:
    """The independent random stream ``key`` of run ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def generate(
    out: Path | str, cfg: GeneratorConfig, *, overwrite: bool = False, progress: bool = False
) -> dict[str, Any]:
    """Write ``out/events/``, ``out/items.parquet``, ``out/users.parquet`` and ``out/manifest.json``
    for ``cfg``; return the manifest. Refuses a folder that already holds these outputs unless
    ``overwrite`` (which deletes exactly those). ``progress`` shows a tqdm bar on stderr when it is a
    terminal."""
    out = Path(out)
    _prepare(out, overwrite)
    world = build_world(cfg, stream_rng(cfg.seed, STREAM_WORLD), stream_rng(cfg.seed, STREAM_CALIBRATION))
    write_table(world.items, out / "items.parquet")
    write_table(world.users, out / "users.parquet")
    plan = make_plan(cfg, stream_rng(cfg.seed, STREAM_PLAN))
    schema = event_schema(cfg.truth)
    corruptor = Corruptor(cfg.items, cfg.start_date)
    label_sums = np.zeros(tasks.K, dtype=np.int64)
    clean_rows = 0
    day: dt.date | None = None
    after_ms = 0
    bar = tqdm(total=cfg.events, unit="ev", unit_scale=True, file=sys.stderr, disable=None if progress else True)
    with PartitionedWriter(out / "events", schema) as writer, bar:
        for chunk in plan:
            if chunk.day != day:
                day, after_ms = chunk.day, epoch_ms(chunk.day) - 1
            rng = stream_rng(cfg.seed, STREAM_CHUNK, chunk.index)
            result = draw_chunk(world, chunk, rng, corruptor, schema, cfg.finish_ratio, after_ms)
            writer.write(chunk.day, chunk.part, result.table)
            after_ms = result.last_ts
            label_sums += result.label_sums
            clean_rows += result.clean_rows
            bar.update(result.table.num_rows)
    manifest = _manifest(cfg, writer.rows, clean_rows, label_sums, corruptor, world.intercepts)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _prepare(out: Path, overwrite: bool) -> None:
    present = [name for name in OUTPUTS if (out / name).exists()]
    if present and not overwrite:
        raise FileExistsError(f"{out}: already holds generator output {present}; choose an empty folder or overwrite")
    for name in present:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _manifest(
    cfg: GeneratorConfig,
    files: dict[str, int],
    clean_rows: int,
    label_sums: np.ndarray,
    corruptor: Corruptor,
    intercepts: np.ndarray,
) -> dict[str, Any]:
    start = cfg.start_date
    end = start + dt.timedelta(days=cfg.days)
    targets = (cfg.click_rate, cfg.like_rate, cfg.finish_rate)
    bad = bad_totals(cfg.events, cfg.bad_rows)
    correlation = tasks.correlation_matrix(cfg.task_correlation, cfg.like_alignment)
    return {
        "generator": "data.synthetic",
        "manifest_version": MANIFEST_VERSION,
        "seed": cfg.seed,
        "params": cfg.to_dict(),
        "rows": {"events": sum(files.values()), "clean_events": clean_rows, "items": cfg.items, "users": cfg.users},
        "files": {f"events/{rel}": n for rel, n in sorted(files.items())},
        "bad_rows": {kind.value: int(n) for kind, n in zip(BAD_KINDS, bad, strict=True)},
        "bad_row_variants": dict(sorted(corruptor.variants.items())),
        "time_range": {"start": f"{start.isoformat()}T00:00:00Z", "end_exclusive": f"{end.isoformat()}T00:00:00Z"},
        "finish_ratio": cfg.finish_ratio,
        "label_rates": {
            task: {"target": target, "observed_clean": float(label_sums[k]) / max(clean_rows, 1)}
            for k, (task, target) in enumerate(zip(tasks.TASKS, targets, strict=True))
        },
        "task_correlation_matrix": correlation.round(12).tolist(),
        "intercepts": {task: float(b) for task, b in zip(tasks.TASKS, intercepts, strict=True)},
        "truth_columns": list(TRUTH_COLUMNS) if cfg.truth else [],
    }
