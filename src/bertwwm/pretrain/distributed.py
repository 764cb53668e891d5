"""The process group of a run: which rank this is, the collectives the loop needs, and DDP / FSDP2.

Under one process every collective is the identity, so the loop has a single code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from bertwwm.pretrain.config import PretrainConfig


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if world > 1 else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return Dist(rank, world, local_rank, device)


def all_reduce(values: list[float], d: Dist) -> list[float]:
    """The sums of `values` over the ranks (float64)."""
    if d.world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast_float(value: float, d: Dist) -> float:
    """Rank 0's `value` on every rank."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def wrap_parallel(model, cfg: PretrainConfig, d: Dist):
    """FSDP2 shards (each encoder layer its own group; the root keeps the embeddings and heads, so the tied
    embedding/decoder matrix stays one parameter), DDP replicas over several processes, else the model."""
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model.hf.bert.encoder.layer:
            fully_shard(layer)
        fully_shard(model)
        model.fsdp = True
        return model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    return model


def full_state(model, optimizer, d: Dist) -> tuple[dict | None, dict]:
    """(model state dict or None, optimizer state dict), full tensors on CPU: the plain modules' own under
    DDP/single process; gathered from the shards under FSDP (a collective: every rank must call it)."""
    if not getattr(model, "fsdp", False):
        return None, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    return ({k.removeprefix("hf."): v for k, v in weights.items()},
            get_optimizer_state_dict(model, optimizer, options=options))


def load_optimizer_state(model, optimizer, saved: dict, cfg: PretrainConfig) -> None:
    """A checkpoint's full optimizer state into the optimizer (scattered to the shards under FSDP)."""
    if cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, saved, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(saved)
