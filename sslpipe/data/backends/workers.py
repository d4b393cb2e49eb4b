"""DataLoader-worker side of the cpu and nvjpeg backends: samples to batches.

:class:`BatchStream` is the IterableDataset each worker runs. It reads its share of the shards
(:class:`~sslpipe.data.reading.ReadPlan`), checks each sample's structure (an image and, for
labeled data, a class index), and makes exactly the batches the plan gives it. With a collator
(cpu backend) it decodes and augments in the worker; without one (nvjpeg backend) it hands
the encoded bytes on. Every item it yields is ``(payload, events)``: the events are the bad
samples and shards met since the previous item, for the loader's statistics
(:mod:`sslpipe.data.events`). What a batch is on its way out (:class:`EncodedBatch`) and the
rules both sides share (the step's generator, the collator's fewest images) are in
:mod:`sslpipe.data.backends.batches`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from sslpipe.data.backends.batches import (
    EncodedBatch,
    gpu_decodable,
    step_generator,
)
from sslpipe.data.events import Event, report_short
from sslpipe.data.reading import ReadPlan
from sslpipe.data.tar_samples import IMAGE_EXTS, LABEL_EXT, MALFORMED
from sslpipe.ops.decoding import DamagedImageWarning, decode
from sslpipe.ops.images import sample_index
from sslpipe.ops.jpeg import jpeg_damage


class BatchStream(IterableDataset):
    """One rank's batches for one epoch, made in DataLoader workers.

    Args:
        plan: what this rank reads this epoch.
        collate: the collator or its host stage (cpu backend), or None to yield
            :class:`EncodedBatch`.
        on_error: ``"skip"`` (count bad samples and shards, go on) or ``"raise"``.
        damaged: what to do with an image a decoder reported damaged but decoded past
            (:class:`~sslpipe.ops.images.DamagedImageWarning`): ``"use"`` it (a
            ``"damaged-used"`` event) or ``"skip"`` it (a ``"damaged"`` event, like any bad
            sample); ``on_error="raise"`` raises.
        cpu_decode_share: without a collator, decode in the worker every image that is not a
            JPEG and this share (0..1) of the JPEGs, spread evenly over the batch, so the
            worker's cores decode alongside the GPU; None decodes nothing here. nvJPEG and DALI
            decode past damage in silence, so a damaged JPEG is decoded here, by the CPU
            decoder, as the cpu backend decodes it: a damaged image is met, counted, named,
            used or skipped the same way on every backend. Which JPEGs are damaged: those the
            shards' manifest records (``sslpipe shard`` checked each image as it wrote it;
            ``sslpipe shard verify --decode`` finds damage done since), else each JPEG left to
            the GPU is checked here with libjpeg-turbo (:func:`~sslpipe.ops.jpeg.jpeg_damage`,
            a 1/8-scale decode: about a quarter of a full CPU decode).
    """

    def __init__(self, plan: ReadPlan, collate: Callable[..., Any] | None, on_error: str,
                 cpu_decode_share: float | None = None, damaged: str = "use",
                 min_batch: int = 1) -> None:
        super().__init__()
        self.plan = plan
        self.collate = collate
        self.on_error = on_error
        self.cpu_decode_share = cpu_decode_share
        self.damaged = damaged
        self.min_batch = min_batch

    def __iter__(self) -> Iterator[tuple[Any, list[Event]]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self.plan
        self._stream = plan.samples(worker, num_workers)
        self._labeled = plan.source.labeled
        for step, size in self._steps(worker, num_workers):
            encoded = self._take(size)
            encoded.step = step
            if not encoded.data:  # a single pass ran out of samples
                break
            if len(encoded.data) < self.min_batch:  # a last batch the task cannot use
                report_short(encoded.keys, self.min_batch, self.plan.events)
                break
            if self.collate is not None:
                payload = self._collate(encoded, step, size)
            elif self.cpu_decode_share is not None:
                payload = self._predecode(encoded, size, self.cpu_decode_share)
            else:
                payload = encoded
            if payload is None:  # the last samples of a single pass were all bad
                break
            yield payload, self._drain()
        events = self._drain()
        if events:  # what the end of a single pass met still reaches the loader's statistics
            yield None, events

    def _steps(self, worker: int, num_workers: int) -> Iterator[tuple[int, int]]:
        """``(step, batch size)`` of this worker's batches: a fixed list for a training epoch,
        full batches until the stream ends for a single pass."""
        plan = self.plan
        if plan.single_pass:
            step = worker
            while True:
                yield step, plan.batch_size
                step += num_workers
        yield from plan.worker_steps(worker, num_workers)

    def _take(self, size: int) -> EncodedBatch:
        data: list[bytes] = []
        labels: list[int] = []
        keys: list[str] = []
        while len(data) < size:
            try:
                sample = next(self._stream)
            except StopIteration:  # only a single pass ends; a training stream is endless
                self._check_events()
                break
            self._check_events()
            parsed = self._parse(sample)
            if parsed is None:
                continue
            data.append(parsed[0])
            keys.append(parsed[2])
            if parsed[1] is not None:
                labels.append(parsed[1])
        return EncodedBatch(data, labels if self._labeled else None, keys)

    def _parse(self, sample: dict[str, Any]) -> tuple[bytes, int | None, str] | None:
        where = f"{sample['__url__']}:{sample['__key__']}"
        if MALFORMED in sample:
            self._bad(where, sample[MALFORMED])
            return None
        image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
        if image is None:
            self._bad(where, f"no image (expected one of .{', .'.join(IMAGE_EXTS)}); "
                             f"has {sorted(k for k in sample if not k.startswith('__'))}")
            return None
        if self._labeled is None:
            self._labeled = LABEL_EXT in sample
        if not self._labeled:
            return image, None, where
        raw = sample.get(LABEL_EXT)
        try:
            return image, int(raw.decode("ascii").strip()), where  # type: ignore[union-attr]
        except (AttributeError, UnicodeDecodeError, ValueError):
            self._bad(where, f".{LABEL_EXT} must be an ASCII class index. Got {raw!r}")
            return None

    def _collate(self, encoded: EncodedBatch, step: int, size: int) -> Any | None:
        plan, collate = self.plan, self.collate
        assert collate is not None  # only called with a collator
        gen = step_generator(plan.seed, plan.epoch, plan.rank, step)
        while True:
            if len(encoded.data) < self.min_batch:  # bad samples left too few, none to refill
                report_short(encoded.keys, self.min_batch, self.plan.events)
                return None
            state = gen.get_state()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DamagedImageWarning)
                    out = collate(encoded.samples(), generator=gen)
            except ValueError:
                bad = self._find_bad(encoded)
                if not bad:
                    raise
            else:
                bad = self._damaged(encoded, caught)
                if not bad:
                    return out
            if not self._replace_bad(encoded, bad, size):
                return None
            gen.set_state(state)

    def _predecode(self, encoded: EncodedBatch, size: int, share: float) -> EncodedBatch | None:
        """Decode here what the CPU should (see ``cpu_decode_share``); a sample that fails is
        reported and replaced by the next one of the stream, as the cpu backend does."""
        while True:
            bad = []
            k = 0  # JPEGs seen: the k-th goes to the CPU when k * share crosses an integer
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DamagedImageWarning)
                for i, item in enumerate(encoded.data):
                    if isinstance(item, torch.Tensor):
                        continue
                    if gpu_decodable(item):
                        k += 1
                        if (math.floor(k * share) == math.floor((k - 1) * share)
                                and not self._is_damaged(encoded.keys[i], item)):
                            continue  # a clean JPEG left to the GPU
                    try:
                        encoded.data[i] = decode(bytes(item), where=f"samples[{i}]")
                    except ValueError as err:
                        bad.append((i, str(err)))
            bad = sorted(bad + self._damaged(encoded, caught))
            if not bad:
                return encoded
            if not self._replace_bad(encoded, bad, size):
                return None

    def _is_damaged(self, where: str, data: Any) -> bool:
        """Whether the JPEG ``data`` of sample ``where`` (``"url:key"``) is damaged: as its
        manifest records, or else as libjpeg-turbo finds."""
        recorded = self.plan.source.damaged_keys
        if recorded is not None:
            return where.rpartition(":")[2] in recorded
        return jpeg_damage(bytes(data)) is not None

    def _damaged(self, encoded: EncodedBatch, caught: list[warnings.WarningMessage]
                 ) -> list[tuple[int, str]]:
        """Report the damaged images among ``caught`` and those the shards' manifest records
        (:attr:`~sslpipe.data.shard_source.ShardSource.damaged_keys`): the ``(index, why)`` to
        skip under ``damaged="skip"``, none under ``"use"`` (each is a ``"damaged"`` event
        instead)."""
        found = []
        for w in caught:
            if not isinstance(w.message, DamagedImageWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                continue
            index = sample_index(w.message.where)
            if index is not None and index < len(encoded.keys):
                found.append((index, f"damaged: {w.message.why}"))
        recorded = self.plan.source.damaged_keys
        if recorded:  # damage the manifest records, seen or not in these bytes (re-encoded)
            met = {i for i, _ in found}
            found += [(i, "damaged: recorded so in the shards' manifest.json")
                      for i, where in enumerate(encoded.keys)
                      if i not in met and where.rpartition(":")[2] in recorded]
            found.sort()
        if self.damaged == "skip" or self.on_error == "raise":
            return found
        for i, why in found:
            self.plan.events.append(("damaged-used", encoded.keys[i], why[len("damaged: "):]))
        return []

    def _replace_bad(self, encoded: EncodedBatch, bad: list[tuple[int, str]], size: int) -> bool:
        """Report the ``(index, why)`` samples, drop them and refill the batch to ``size``
        from the stream; False when nothing is left (the end of a single pass)."""
        for i, why in bad:  # reported in sample order
            self._bad(encoded.keys[i], why)
        for i, _ in reversed(bad):
            del encoded.data[i], encoded.keys[i]
            if encoded.labels is not None:
                del encoded.labels[i]
        refill = self._take(size - len(encoded.data))
        encoded.data += refill.data
        encoded.keys += refill.keys
        if encoded.labels is not None and refill.labels is not None:
            encoded.labels += refill.labels
        return bool(encoded.data)

    def _find_bad(self, encoded: EncodedBatch) -> list[tuple[int, str]]:
        """``(index, why)`` of the samples that fail to collate on their own."""
        bad = []
        collate: Any = self.collate
        with warnings.catch_warnings():
            # a damaged image is reported by the retry that follows, once, not here
            warnings.simplefilter("ignore", DamagedImageWarning)
            for i, sample in enumerate(encoded.samples()):
                try:
                    collate([sample], generator=torch.Generator().manual_seed(0))
                except ValueError as err:
                    bad.append((i, str(err)))
        return bad

    def _bad(self, where: str, why: str) -> None:
        if self.on_error == "raise":
            raise ValueError(f"bad sample {where}: {why} (on_error='raise')")
        kind = "damaged" if why.startswith("damaged: ") else "corrupt"
        self.plan.events.append((kind, where, why))

    def _check_events(self) -> None:
        if self.on_error == "raise" and self.plan.events:
            kind, where, why = self.plan.events[0]
            raise ValueError(f"{kind} shard {where}: {why} (on_error='raise')")

    def _drain(self) -> list[Event]:
        events = list(self.plan.events)
        self.plan.events.clear()
        return events
