"""The loader a run reads its shards with: :func:`default_loader` (``sslpipe.data.create_loader``
over ``config.data`` or ``config.val``, this rank's share), and the type of a ``make_loader``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sslpipe.train.config import TrainConfig
from sslpipe.train.distributed import DistInfo
from sslpipe.train.logging import plural

__all__ = ["MakeLoader", "default_loader"]

# make_loader(config, task, split, info) -> loader; split is "train" or "val"
MakeLoader = Callable[[TrainConfig, Any, str, DistInfo], Any]


def default_loader(config: TrainConfig, task: Any, split: str, info: DistInfo) -> Any:
    """``sslpipe.data.create_loader`` over ``config.data`` (or ``config.val``) for this rank."""
    from sslpipe.data import create_loader

    train = split == "train"
    data = config.data if train else config.val
    per_rank = config.batch_size // info.world_size
    drop_last = config.drop_last
    if train and drop_last:
        from sslpipe.data.shard_source import resolve_shards

        samples = resolve_shards(data).num_samples
        if samples is not None and samples // info.world_size < per_rank:
            drop_last = False
            if info.main:
                print(f"data: {plural(samples, 'sample')} hold less than one batch of "
                      f"{per_rank} per process: drop_last (--drop-last) would leave no step, so "
                      "this run trains in partial batches (drop_last off)", flush=True)
    # validation reads every sample once (ranks may then run different step counts, which
    # _validate allows: it reduces over ranks once, at the end)
    return create_loader(
        data, task, per_rank,
        device=info.device, backend=config.backend, num_workers=config.num_workers,
        seed=config.seed, rank=info.rank, world_size=info.world_size, drop_last=drop_last,
        single_pass=not train, shuffle_buffer=1000 if train else 0,
        hw_decoder_load=config.hw_decoder_load, cpu_decode_share=config.cpu_decode_share,
    )
