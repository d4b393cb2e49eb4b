"""The dali backend: DALI reads the shards and decodes; the torch collator does the rest.

``fn.readers.webdataset`` reads the local shards through their ``.idx`` index files (DALI
builds the index itself where a shard has none), sharded by rank (``shard_id`` /
``num_shards``) with DALI's own shuffle buffer; ``fn.decoders.image`` decodes on the GPU
(``device="mixed"``: nvJPEG, with ``hw_decoder_load`` of the work on the hardware JPEG decoder
where the GPU has one) or on the CPU. The decoded ``H x W x 3`` uint8 images reach torch
without a copy through DLPack, as a ragged list of ``3 x H x W`` views, and the task's
collator makes the Batch on the same device.

DALI is optional (``pip install 'sslpipe[dali]'``) and imported only when this backend is used.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from sslpipe.batch import Batch
from sslpipe.data.backends.workers import Event, step_generator
from sslpipe.data.prefetch import run_ahead
from sslpipe.data.reading import ReadPlan, ShardSource

INSTALL_HINT = "pip install 'sslpipe[dali]'"


def dali_available() -> bool:
    """True when NVIDIA DALI can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def require_dali() -> Any:
    """Import ``nvidia.dali`` or raise ImportError saying how to install it."""
    try:
        import nvidia.dali as dali
    except ImportError as err:
        raise ImportError(
            f"backend='dali' needs NVIDIA DALI, which is not installed: {INSTALL_HINT} "
            "(or use backend='nvjpeg' / 'cpu')"
        ) from err
    return dali


class DaliBackend:
    """One DALI pipeline per loader, built on first use and reused across epochs.

    Args:
        num_threads: DALI CPU threads.
        hw_decoder_load: share of JPEG decoding given to the hardware decoder (GPU only).
        shuffle_buffer: DALI's ``initial_fill``; 0 or 1 reads in shard order.

    DALI's reader has no skip policy for undecodable images: a corrupt sample stops the
    pipeline, which is reported as a ValueError naming the failure (use the cpu or nvjpeg
    backend for streams with bad samples).
    """

    name = "dali"
    on_device = True

    def __init__(
        self, collate: Callable[..., Batch], device: torch.device, source: ShardSource,
        num_threads: int, hw_decoder_load: float, shuffle_buffer: int,
    ) -> None:
        require_dali()
        if not source.local:
            remote = next(u for u in source.urls if not u.endswith(".tar") or "://" in u)
            raise ValueError(
                "backend='dali' reads local shard files only (its reader memory-maps them). "
                f"Got {remote!r}; use backend='nvjpeg' or 'cpu' for pipe:/http(s) shards"
            )
        self.collate = collate
        self.device = device
        self.source = source
        self.num_threads = num_threads
        self.hw_decoder_load = hw_decoder_load
        self.shuffle_buffer = shuffle_buffer
        self._pipe: Any = None
        self._consumed: torch.cuda.Event | None = None

    def batches(self, plan: ReadPlan) -> Iterator[tuple[Batch | None, list[Event]]]:
        # each step (pipe.run and the collator) on one background thread and its own CUDA
        # stream, so the collator's work on batch i + 1 overlaps the training step on batch i
        yield from run_ahead(self._jobs(plan), self.device)

    def _jobs(self, plan: ReadPlan) -> Iterator[Callable[[], tuple[Batch | None, list[Event]]]]:
        if plan.single_pass:
            # a fresh pipeline starts at the first sample of this rank's part, in order
            self._pipe = None
        pipe = self._pipeline(plan)
        per_rank = plan.per_rank
        if plan.single_pass:
            per_rank = dali_rank_samples(pipe.reader_meta("reader")["epoch_size"], plan.rank,
                                         plan.world_size)
        self._consumed = None
        for step in range(math.ceil(per_rank / plan.batch_size)):
            size = min(plan.batch_size, per_rank - step * plan.batch_size)
            yield functools.partial(self._step, pipe, plan, step, size)

    def _step(self, pipe: Any, plan: ReadPlan, step: int, size: int
              ) -> tuple[Batch | None, list[Event]]:
        if self._consumed is not None:
            # run() hands the previous outputs' memory back to DALI: the collator's kernels
            # reading it (queued on this thread's stream) must have run first
            self._consumed.synchronize()
        try:
            outputs = pipe.run()
        except RuntimeError as err:
            raise ValueError(
                f"DALI pipeline failed at step {step} (the dali backend cannot skip "
                "corrupt samples: find them with `sslpipe shard verify DIR --decode`, or use "
                f"backend='cpu' or 'nvjpeg', which skip and count them): {err}"
            ) from err
        images = _to_torch(outputs[0], size)
        labels = _labels(outputs[1], size) if len(outputs) > 1 else None
        samples: list[Any] = images if labels is None else list(zip(images, labels))
        gen = step_generator(plan.seed, plan.epoch, plan.rank, step)
        batch = self.collate(samples, generator=gen)
        if self.device.type == "cuda":
            self._consumed = torch.cuda.Event()
            self._consumed.record(torch.cuda.current_stream(self.device))
        return batch, []

    def _pipeline(self, plan: ReadPlan) -> Any:
        if self._pipe is None:
            self._pipe = build_pipeline(
                self.source, plan.batch_size, self.device, rank=plan.rank,
                world_size=plan.world_size, seed=plan.seed, num_threads=self.num_threads,
                shuffle_buffer=self.shuffle_buffer, hw_decoder_load=self.hw_decoder_load,
                single_pass=plan.single_pass,
            )
        return self._pipe


def dali_rank_samples(total: int, rank: int, world_size: int) -> int:
    """Samples DALI's reader gives shard ``rank`` of ``world_size`` (it splits by sample)."""
    return total * (rank + 1) // world_size - total * rank // world_size


def build_pipeline(
    source: ShardSource, batch_size: int, device: torch.device, *, rank: int = 0,
    world_size: int = 1, seed: int = 0, num_threads: int = 2, shuffle_buffer: int = 1000,
    hw_decoder_load: float = 0.65, single_pass: bool = False,
) -> Any:
    """The DALI pipeline: webdataset reader, image decoder; outputs ``(images[, cls])``.

    ``images`` are ``H x W x 3`` uint8 RGB (ragged), ``cls`` the ASCII bytes of the class
    index (only when the shards are labeled). ``single_pass``: the reader stays on its rank's
    part and pads the last batch (the padding is dropped by the backend), for reading every
    sample once.
    """
    require_dali()
    from nvidia.dali import fn, types
    from nvidia.dali.pipeline import Pipeline

    gpu = device.type == "cuda"
    pipe = Pipeline(
        batch_size=batch_size, num_threads=num_threads, seed=seed % (2**31),
        device_id=(device.index or 0) if gpu else None, prefetch_queue_depth=2,
    )
    labeled = source.labeled is not False
    index = [i for i in source.index_files if i] if all(source.index_files) else None
    with pipe:
        outputs: Any = fn.readers.webdataset(
            paths=list(source.urls), index_paths=index,
            ext=["jpg;jpeg;png;webp", "cls"] if labeled else ["jpg;jpeg;png;webp"],
            missing_component_behavior="error", case_sensitive_extensions=False,
            shard_id=rank, num_shards=world_size, random_shuffle=shuffle_buffer > 1,
            initial_fill=max(1, shuffle_buffer), seed=seed % (2**31), name="reader",
            pad_last_batch=single_pass, stick_to_shard=single_pass,
        )
        encoded = outputs[0] if labeled else outputs
        decode_args: dict[str, Any] = {"hw_decoder_load": hw_decoder_load} if gpu else {}
        images = fn.decoders.image(
            encoded, device="mixed" if gpu else "cpu", output_type=types.RGB,  # type: ignore[attr-defined]
            **decode_args,
        )
        pipe.set_outputs(images, outputs[1]) if labeled else pipe.set_outputs(images)
    pipe.build()
    return pipe


def _to_torch(tensor_list: Any, size: int) -> list[torch.Tensor]:
    # Zero-copy views of DALI's buffers: valid until the next pipe.run(), which happens only
    # after the collator's work on them has run (see DaliBackend.batches).
    return [torch.from_dlpack(tensor_list[i]).permute(2, 0, 1) for i in range(size)]


def _labels(tensor_list: Any, size: int) -> list[int]:
    import numpy as np

    cpu = tensor_list.as_cpu() if hasattr(tensor_list, "as_cpu") else tensor_list
    out = []
    for i in range(size):
        raw = bytes(np.asarray(cpu[i]).tobytes())
        try:
            out.append(int(raw.decode("ascii").strip()))
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(f".cls must be an ASCII class index. Got {raw!r}") from err
    return out
