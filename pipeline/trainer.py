"""The training loop: model from the FeatureSpec, task-aware optimizer from ``apt``, early stopping on
validation mean AUC, a checkpoint every epoch, exact resume, and a final evaluation written as JSON.

Per step the trainer only computes the K per-task losses; ``apt.MultiTaskOptimizer`` does the
backward pass(es), aggregation and update, as configured by the job's ``mtl`` section.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aptrank.apt import NonFiniteError
from aptrank.data.spec import FeatureSpec
from aptrank.models.registry import build_model
from aptrank.pipeline import checkpoint
from aptrank.pipeline.config import JobConfig
from aptrank.pipeline.dense_fit import fit_dense_encoding
from aptrank.pipeline.distill import distilled_train_files, teacher_record
from aptrank.pipeline.evaluate import evaluate_split
from aptrank.pipeline.loader import ExampleLoader
from aptrank.pipeline.meda import reinitialise_tables
from aptrank.pipeline.objective import build_multitask_optimizer, task_losses
from aptrank.pipeline.parallel import SingleProcess, make_parallel

EVALUATION_FILE = "evaluation.json"


class NonFiniteLossError(RuntimeError):
    """A task loss became NaN/inf; the run stops and the last good checkpoint is kept."""


@dataclass
class TrainCallbacks:
    """Hooks for tracking (MLflow lives in pipeline/, never in apt/)."""

    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
    on_diagnostics: Callable[[int, dict[str, float]], None] | None = None


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    history: list[dict[str, Any]]
    evaluation: dict[str, Any]
    train_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """One training run in ``run_dir`` on the ETL output ``features_dir``.

    Under ``torchrun`` (WORLD_SIZE > 1) the model is TorchRec model parallel (see
    :mod:`aptrank.pipeline.parallel`); rank 0 evaluates, checkpoints and reports.
    """

    def __init__(
        self,
        cfg: JobConfig,
        features_dir: str | Path,
        run_dir: str | Path,
        callbacks: TrainCallbacks | None = None,
        parallel: SingleProcess | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.features_dir = Path(features_dir)
        self.run_dir = Path(run_dir)
        self.callbacks = callbacks or TrainCallbacks()
        self.device = resolve_device(cfg.train.device)
        self.parallel = parallel or make_parallel(self.device)
        self.progress = progress and self.parallel.is_main
        if self.parallel.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.spec = FeatureSpec.read(self.features_dir)
        torch.manual_seed(cfg.seed)
        self.train_loader = ExampleLoader(
            self.spec,
            distilled_train_files(
                self.features_dir, self.run_dir, cfg.train.distill, cfg.seed, self.parallel.rank, self.progress
            ),
            cfg.train.batch_size,
            seed=cfg.seed,
            shuffle_buffer=cfg.train.shuffle_buffer,
        )
        model = self._build()
        fit_dense_encoding(model, self.train_loader)  # training-split quantiles (model.dense_encoding)
        mtl = cfg.mtl_seeded
        self.model = self.parallel.prepare(model, mtl.embedding_lr or mtl.lr, mtl.eps)
        # rank 0 evaluates an unsharded replica when the trained model is sharded
        self.replica = self._build() if self.parallel.world > 1 and self.parallel.is_main else None
        self.global_step = 0
        self.optimizer = build_multitask_optimizer(cfg, self.model, self.parallel, self.callbacks.on_diagnostics)
        self.history: list[dict[str, Any]] = []
        self.best = {"epoch": -1, "mean_auc": -math.inf, "bad_epochs": 0}
        self.start_epoch = 0
        self.finished = False

    def _build(self) -> torch.nn.Module:
        return build_model(self.cfg.arch, self.spec, self.cfg.model_seeded, self.cfg.tasks).to(self.device)

    def _eval_model(self) -> torch.nn.Module | None:
        """The model to evaluate on rank 0 (None on other ranks); collective when sharded."""
        if self.replica is None and self.parallel.world == 1:
            return self.model
        state = self.parallel.full_state_dict(self.model)
        if self.replica is not None:
            self.replica.load_state_dict(state)
        return self.replica

    # ---- state -----------------------------------------------------------------------------
    def _state(self, epoch: int, model_state: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": model_state,
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "best": dict(self.best),
            "history": list(self.history),
            "finished": self.finished,
            "spec_hash": self.spec.hash,
            "config": self.cfg.to_dict(),
            "global_step": self.global_step,
            "world_size": self.parallel.world,
        }

    def resume(self) -> None:
        if self.parallel.world > 1:
            raise NotImplementedError(
                "--resume is supported for single-process runs (the fused table "
                "optimizer state of a sharded run is not checkpointed)"
            )
        state = checkpoint.load(checkpoint.last_path(self.run_dir))
        if state["spec_hash"] != self.spec.hash:
            raise ValueError(f"{self.run_dir}: checkpoint was trained on another FeatureSpec; cannot resume")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.best, self.history = state["best"], state["history"]
        self.finished = state["finished"]
        self.global_step = state["global_step"]
        self.start_epoch = state["epoch"] + 1

    # ---- loop ------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        if self.cfg.train.meda and epoch > 0:
            if self.parallel.world > 1:
                raise NotImplementedError("train.meda: single-process runs only (the sharded tables are not re-drawn)")
            reinitialise_tables(self.model, self.optimizer, self.cfg.seed, epoch)
        names = self.model.task_names
        cols = torch.tensor(self.model.label_columns)
        sums = torch.zeros(len(names), dtype=torch.float64)
        steps, samples, skipped, t0 = 0, 0, 0, time.perf_counter()
        limit = self.cfg.train.max_steps_per_epoch
        bar = tqdm(
            total=limit or len(self.train_loader),
            desc=f"epoch {epoch}",
            unit="batch",
            disable=not self.progress,
            leave=False,
            mininterval=1.0,
        )
        for full_batch in self.train_loader.epoch_batches(epoch):
            batch = self.parallel.shard(full_batch).to(self.device, non_blocking=True)
            task_logits, embedded, representation = self.model.forward_per_task(batch)
            losses = task_losses(task_logits, batch.labels[:, cols], self.model.task_dag)
            values = torch.stack([loss.detach() for loss in losses])
            if self.optimizer.config.nonfinite == "raise" and not bool(torch.isfinite(values).all()):
                bad = [n for n, v in zip(names, values.tolist(), strict=True) if not math.isfinite(v)]
                raise NonFiniteLossError(
                    f"epoch {epoch} step {steps}: non-finite loss for task(s) {bad}; {self._stop()} (lower mtl.lr?)"
                )
            self.global_step += 1
            try:  # under mtl.nonfinite: skip, apt drops and counts bad steps, and raises after N in a row
                metrics = self.optimizer.step(losses, embedded=embedded, representation=representation)
            except NonFiniteError as e:
                raise NonFiniteLossError(f"epoch {epoch} step {steps}: {e}; {self._stop()}") from e
            if metrics.get("skipped"):
                skipped += 1
                continue
            sums += values.double().cpu()
            steps += 1
            samples += full_batch.batch_size
            bar.update(1)
            if steps % 20 == 0:
                rate = samples / (time.perf_counter() - t0)
                losses_now = {n: f"{v:.4f}" for n, v in zip(names, (sums / steps).tolist(), strict=True)}
                bar.set_postfix({"samples/s": f"{rate:,.0f}", **losses_now})
            if limit and steps >= limit:
                break
        bar.close()
        seconds = time.perf_counter() - t0
        mean_losses = (sums / max(steps, 1)).tolist()
        self.optimizer.end_epoch(mean_losses)
        return {
            "epoch": epoch,
            "steps": steps,
            "samples": samples,
            "seconds": seconds,
            "samples_per_s": samples / max(seconds, 1e-9),
            "data_wait_s": self.train_loader.wait_seconds,
            "train_loss": dict(zip(names, mean_losses, strict=True)),
            "skipped_steps": skipped,
        }

    def _stop(self) -> str:
        """What a diverged run leaves behind: the last good checkpoint, when an epoch ended before."""
        last = checkpoint.last_path(self.run_dir)
        if last.is_file():
            return f"the run stops, the last good checkpoint is kept at {last}"
        return "the run stops before its first epoch ended: no checkpoint was written"

    def fit(self) -> TrainResult:
        t0 = time.perf_counter()
        epochs = self.cfg.train.epochs
        for epoch in range(self.start_epoch, epochs):
            if self.finished:
                break
            record = self.train_epoch(epoch)
            eval_model = self._eval_model()
            if eval_model is not None:
                self._end_epoch(epoch, record, eval_model)
            self.finished = self.parallel.broadcast(self.finished)
        result = self.finish(time.perf_counter() - t0) if self.parallel.is_main else None
        return self.parallel.broadcast(result)

    def _end_epoch(self, epoch: int, record: dict[str, Any], eval_model: torch.nn.Module) -> None:
        """Rank 0: validation, early stopping, checkpoints, callbacks."""
        model_state = eval_model.state_dict()
        _check_finite_weights(model_state, epoch, self._stop())
        valid = evaluate_split(
            eval_model, self.spec, self.features_dir, "valid", self.device, self.cfg.train.eval_batch_size
        )
        record["valid"] = valid
        self.history.append(record)
        if valid["mean_auc"] > self.best["mean_auc"]:
            self.best.update(epoch=epoch, mean_auc=valid["mean_auc"], bad_epochs=0)
            checkpoint.save_atomic(model_state, checkpoint.best_path(self.run_dir))
        else:
            self.best["bad_epochs"] += 1
        self.finished = self.best["bad_epochs"] >= self.cfg.train.patience or epoch == self.cfg.train.epochs - 1
        checkpoint.save_atomic(self._state(epoch, model_state), checkpoint.last_path(self.run_dir))
        if self.callbacks.on_epoch_end is not None:
            self.callbacks.on_epoch_end(epoch, record)

    def finish(self, seconds: float) -> TrainResult:
        """Rank 0: reload the best epoch's weights, evaluate valid and test, write ``evaluation.json``."""
        model = self.replica if self.replica is not None else self.model
        model.load_state_dict(checkpoint.load(checkpoint.best_path(self.run_dir)))
        evaluation = {
            "seed": self.cfg.seed,
            "arch": self.cfg.arch,
            "tasks": model.task_names,
            "spec_hash": self.spec.hash,
            "best_epoch": self.best["epoch"],
            "world_size": self.parallel.world,
            "valid": evaluate_split(
                model, self.spec, self.features_dir, "valid", self.device, self.cfg.train.eval_batch_size
            ),
            "test": evaluate_split(
                model,
                self.spec,
                self.features_dir,
                "test",
                self.device,
                self.cfg.train.eval_batch_size,
                with_popularity=True,
            ),
            "history": self.history,
        }
        teacher = teacher_record(self.run_dir, self.parallel.rank)
        if teacher is not None:
            evaluation["distill"] = {k: teacher[k] for k in ("teacher_oof_auc", "teacher_rounds", "rows")}
        (self.run_dir / EVALUATION_FILE).write_text(json.dumps(_jsonable(evaluation), indent=2, sort_keys=True))
        return TrainResult(self.run_dir, self.best["epoch"], self.history, evaluation, seconds)


def _check_finite_weights(state: dict[str, torch.Tensor], epoch: int, stop: str) -> None:
    """A finite gradient times a huge learning rate can overflow a weight: such weights are never
    checkpointed (the loss check of the next step would only catch them if there were one)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteLossError(f"epoch {epoch}: non-finite weights in {bad[:3]}; {stop} (lower mtl.lr?)")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
