"""Execution strategies for the trainer: one process, or TorchRec model parallel under ``torchrun``.

``TorchRecParallel`` wraps the model in TorchRec's ``DistributedModelParallel``: embedding tables are
sharded table-wise (each table lives on one rank; on CPU/gloo TorchRec's only table-wise kernel is
the fused one, so tables are updated inside the backward by FBGEMM's exact row-wise Adagrad), and the
dense part is replicated and data parallel: every rank takes a contiguous slice of each global
batch, and the ``apt`` engine all-reduces the per-task gradient matrix before aggregating, so all
ranks apply the same aggregated direction (no DDP: its hooks assume one plain backward).
Evaluation and checkpoints happen on rank 0 on an unsharded replica assembled from the shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from aptrank.models.feature_batch import FeatureBatch


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class SingleProcess:
    """The default: everything local; every hook is the identity."""

    rank = 0
    world = 1
    external_embeddings = False
    grad_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def prepare(self, model: nn.Module, embedding_lr: float, embedding_eps: float) -> nn.Module:
        return model

    def roles(self, model: nn.Module) -> dict[str, Any]:
        return model.param_roles()

    def shard(self, batch: FeatureBatch) -> FeatureBatch:
        return batch

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def broadcast(self, obj: Any) -> Any:
        return obj

    def close(self) -> None:
        return None


class TorchRecParallel(SingleProcess):
    """``DistributedModelParallel`` with table-wise sharding; see the module docstring."""

    external_embeddings = True

    def __init__(self, device: torch.device) -> None:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.device = device
        self.grad_reducer = self._mean

    def _mean(self, t: torch.Tensor) -> torch.Tensor:
        out = t.contiguous().clone()
        dist.all_reduce(out)
        return out / self.world

    def prepare(self, model: nn.Module, embedding_lr: float, embedding_eps: float) -> nn.Module:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
        from torchrec.distributed.planner.types import ParameterConstraints
        from torchrec.distributed.types import ShardingType

        fused = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": embedding_lr, "eps": embedding_eps}
        sharders = [EmbeddingBagCollectionSharder(fused_params=fused)]
        tables = [c.name for c in model.embedding.ebc.embedding_bag_configs()]
        constraints = {t: ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value]) for t in tables}
        topology = Topology(world_size=self.world, compute_device=self.device.type)
        plan = EmbeddingShardingPlanner(topology=topology, constraints=constraints).collective_plan(
            model, sharders, dist.GroupMember.WORLD
        )
        initial = {k: v.detach().clone() for k, v in model.embedding.ebc.state_dict().items()}
        self.dmp = DistributedModelParallel(
            model, device=self.device, plan=plan, sharders=sharders, init_data_parallel=False
        )
        _copy_into_shards(self.dmp.module.embedding.ebc, initial)
        return self.dmp.module

    def roles(self, model: nn.Module) -> dict[str, Any]:
        roles = model.param_roles()
        table_ids = {id(p) for p in model.embedding.table_parameters()}
        roles["shared"] = [p for p in roles["shared"] if id(p) not in table_ids]
        roles["embeddings"] = []  # updated by the fused FBGEMM kernel inside the backward
        return roles

    def shard(self, batch: FeatureBatch) -> FeatureBatch:
        parts = [torch.tensor_split(t, self.world)[self.rank] for t in batch.inputs()]
        labels = None if batch.labels is None else torch.tensor_split(batch.labels, self.world)[self.rank]
        return FeatureBatch(*parts, labels=labels)

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The unsharded state dict on rank 0 (collective: every rank must call it)."""
        out: dict[str, torch.Tensor] = {}
        for key, value in model.state_dict().items():
            if hasattr(value, "local_shards"):
                full = torch.zeros(value.size(), dtype=value.dtype) if self.rank == 0 else None
                value.gather(dst=0, out=full)
                if self.rank == 0:
                    out[key] = full
            else:
                out[key] = value.detach().cpu().clone()
        return out

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _copy_into_shards(sharded: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Sharding re-initialises the tables; give every shard its rows of the seeded initial weights, so
    a sharded run starts from exactly the model a single-process run starts from."""
    with torch.no_grad():
        for key, value in sharded.state_dict().items():
            for shard in getattr(value, "local_shards", list)():
                (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                shard.tensor.copy_(full[key][r0 : r0 + nr, c0 : c0 + nc])


def make_parallel(device: torch.device) -> SingleProcess:
    return TorchRecParallel(device) if world_size_from_env() > 1 else SingleProcess()
