"""Data-parallel training helpers (torch.distributed: DDP / FSDP under torchrun) and the launcher."""
from slimkit.parallel.dist import (
    all_reduce_mean,
    barrier,
    ensure_process_group,
    is_distributed,
    is_main_process,
    note_strategy,
    rank,
    shard_batch,
    training_device,
    unwrap_model,
    world_size,
    wrap_model,
)

__all__ = [
    "all_reduce_mean",
    "barrier",
    "ensure_process_group",
    "is_distributed",
    "is_main_process",
    "note_strategy",
    "rank",
    "shard_batch",
    "training_device",
    "unwrap_model",
    "world_size",
    "wrap_model",
]
