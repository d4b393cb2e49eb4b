"""Reading WebDataset shards as a stream of encoded samples (docs/design.md, "Data flow").

A reader is one ``(rank, worker)`` pair. Every epoch, the shard list is shuffled with a seed
that depends only on ``(seed, epoch)`` (the same permutation on every rank), then dealt out
round-robin over ``world_size x num_workers`` readers, so ranks and workers read disjoint
shards. Each reader streams its shards through a seeded sample-shuffle buffer and stops after
a fixed number of samples, so every rank runs the same number of steps per epoch and no
data-parallel rank ever waits on another. A reader that runs out of samples before its quota
starts another (reshuffled) pass over its own shards; with ``resample=True`` a reader instead
draws shards with replacement from the whole list, which also serves more readers than shards.

A *single-pass* plan (evaluation, feature extraction) reads every sample exactly once instead:
shards in their given order, dealt round-robin over the readers, no repeat, and each reader's
last batch partial; a rank then runs as many steps as its shards fill
(:func:`single_pass_steps`), so step counts may differ between ranks.

This module holds the plan (:class:`ReadPlan`, the step counts); the rest of reading is below
it, one concern each: :mod:`sslpipe.data.shard_source` (which shards: :func:`resolve_shards`,
manifests), :mod:`sslpipe.data.tar_samples` (samples out of one shard, dicts ``{"__key__",
"__url__", ext: bytes}`` as webdataset yields them, damage recorded as events) and
:mod:`sslpipe.data.urls` (opening local, ``pipe:``, http(s), webdataset and fsspec URLs).
``resolve_shards``, ``load_manifest`` and ``fetch_manifest`` are re-exported here.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sslpipe.data.shard_source import ShardSource, fetch_manifest, load_manifest, resolve_shards
from sslpipe.data.tar_samples import iter_shard

__all__ = ["ReadPlan", "ShardSource", "fetch_manifest", "load_manifest", "rank_quota",
           "resolve_shards", "single_pass_steps", "split_steps", "steps_per_epoch",
           "worker_steps"]


def steps_per_epoch(epoch_size: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Steps every rank runs per epoch (the same on all ranks).

    Each rank gets ``epoch_size / world_size`` samples (rounded down with ``drop_last``, else
    up, repeating a few samples as DistributedSampler pads), in batches of ``batch_size``; the
    last batch is partial only when ``drop_last`` is False.
    """
    per_rank = rank_quota(epoch_size, world_size, drop_last)
    steps = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    if steps < 1:
        raise ValueError(
            f"epoch_size {epoch_size} over {world_size} rank(s) leaves {per_rank} samples per "
            f"rank, fewer than one batch of batch_size={batch_size}; lower batch_size or pass "
            "drop_last=False"
        )
    return steps


def rank_quota(epoch_size: int, world_size: int, drop_last: bool) -> int:
    """Samples each rank reads per epoch."""
    return epoch_size // world_size if drop_last else math.ceil(epoch_size / world_size)


def single_pass_steps(
    source: ShardSource, batch_size: int, rank: int, world_size: int, num_workers: int
) -> int | None:
    """Steps of one rank in a single pass, or None when a shard's sample count is unknown.

    Every reader (``rank x worker``) makes ``ceil(samples of its shards / batch_size)`` batches.
    """
    if any(n is None for n in source.samples):
        return None
    workers = max(1, num_workers)
    plan = ReadPlan(source, batch_size, None, 0, rank, world_size, single_pass=True)
    mine = plan._assignment(workers)[rank * workers : (rank + 1) * workers]
    return sum(math.ceil(sum(source.samples[i] or 0 for i in shards) / batch_size)
               for shards in mine)


def split_steps(steps: int, samples: Sequence[int]) -> list[int]:
    """Batches per worker: ``steps`` shared in proportion to each worker's ``samples``
    (largest remainders; ties to the lower worker), so that no worker has to repeat or skip
    more than a batch's worth of its own samples."""
    total = sum(samples)
    if total == 0:
        return [len(range(w, steps, len(samples))) for w in range(len(samples))]
    ideal = [steps * n / total for n in samples]
    counts = [math.floor(x) for x in ideal]
    order = sorted(range(len(samples)), key=lambda w: (counts[w] - ideal[w], w))
    for w in order[: steps - sum(counts)]:
        counts[w] += 1
    return counts


def worker_steps(
    batches: Sequence[int], per_rank: int, batch_size: int
) -> list[list[tuple[int, int]]]:
    """``(step, size)`` of each worker's batches, given how many batches each makes.

    A DataLoader takes batches from its workers in turn and passes over a worker that has
    finished, so worker ``w``'s ``k``-th batch arrives as step ``sum(min(b_v, k)) + #{v < w :
    b_v > k}``. Numbering the steps so lets every batch draw its augmentations from a generator
    of its step, whichever worker makes it, and puts the partial batch (``per_rank`` not a
    multiple of ``batch_size``) last.
    """
    out: list[list[tuple[int, int]]] = [[] for _ in batches]
    step, k = 0, 0
    while step < sum(batches):
        for w, count in enumerate(batches):
            if count > k:
                out[w].append((step, min(batch_size, per_rank - step * batch_size)))
                step += 1
        k += 1
    return out


@dataclass
class ReadPlan:
    """What one rank reads in one epoch (picklable: it travels to DataLoader workers).

    ``steps`` is None only for a single-pass plan over shards of unknown size.
    """

    source: ShardSource
    batch_size: int
    steps: int | None
    per_rank: int
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    epoch: int = 0
    shuffle_buffer: int = 1000
    resample: bool = False
    single_pass: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def check_readers(self, num_workers: int) -> None:
        """Fewer shards than readers cannot be split without repeats: say so, unless resampling."""
        readers = self.world_size * max(1, num_workers)
        if not self.resample and len(self.source.urls) < readers:
            raise ValueError(
                f"shards: {len(self.source.urls)} shard(s) cannot be split over "
                f"{self.world_size} rank(s) x {max(1, num_workers)} worker(s) = {readers} "
                "readers; pass resample=True (shards drawn with replacement), lower num_workers, "
                "or write more, smaller shards"
            )

    def shards_for(self, worker: int, num_workers: int) -> list[str]:
        """This reader's shards for the epoch (the same assignment on every rank)."""
        return [self.source.urls[i] for i in self._assignment(num_workers)[
            self.rank * num_workers + worker]]

    def worker_steps(self, worker: int, num_workers: int) -> list[tuple[int, int]]:
        """``(step, size)`` of the batches ``worker`` makes this epoch (not single pass).

        With known shard sizes the rank's steps are shared in proportion to the samples of
        each worker's shards, so that uneven shards cost at most a batch of repeats or skips
        per worker; otherwise evenly.
        """
        assert self.steps is not None  # only a single pass may have an unknown length
        num_workers = max(1, num_workers)
        counts = self._reader_counts(num_workers)
        if counts is None:
            batches = [len(range(w, self.steps, num_workers)) for w in range(num_workers)]
        else:
            mine = counts[self.rank * num_workers : (self.rank + 1) * num_workers]
            batches = split_steps(self.steps, mine)
        return worker_steps(batches, self.per_rank, self.batch_size)[worker]

    def _assignment(self, num_workers: int) -> list[list[int]]:
        """Shard indices per reader (``rank * num_workers + worker``) for this epoch.

        A single pass deals the shards in their order, round-robin. An epoch shuffles them
        with ``(seed, epoch)`` and, when every shard's size is known, gives them out largest
        first (equal sizes in the shuffled order) each to the reader holding the fewest samples
        so far: readers (and ranks) end up within one shard of each other, so the last,
        shorter shard of a dataset does not make one reader repeat samples while the others
        skip some.
        """
        readers = self.world_size * max(1, num_workers)
        order = list(range(len(self.source.urls)))
        if self.single_pass:
            return [order[r::readers] for r in range(readers)]
        random.Random(f"shards-{self.seed}-{self.epoch}").shuffle(order)
        counts = self.source.samples
        if self.resample or any(n is None for n in counts):
            return [order[r::readers] for r in range(readers)]
        least = [(0, r) for r in range(readers)]  # (samples held, reader): a heap
        out: list[list[int]] = [[] for _ in range(readers)]
        for i in sorted(order, key=lambda i: -(counts[i] or 0)):  # stable: keeps the shuffle
            held, r = heapq.heappop(least)
            out[r].append(i)
            heapq.heappush(least, (held + (counts[i] or 0), r))
        return out

    def _reader_counts(self, num_workers: int) -> list[int] | None:
        if self.resample or any(n is None for n in self.source.samples):
            return None
        return [sum(self.source.samples[i] or 0 for i in shards)
                for shards in self._assignment(num_workers)]

    def samples(self, worker: int, num_workers: int) -> Iterator[dict[str, Any]]:
        """Endless stream of this reader's samples, each pass shuffled through the buffer
        (a single-pass plan: one pass, then the stream ends).

        The buffer is flushed at the end of every pass over the reader's shards, so one pass
        holds each of its samples exactly once. Unreadable and truncated shards are recorded
        in ``events``; a pass that yields no sample at all raises, so a reader never spins.
        """
        rng = random.Random(f"samples-{self.seed}-{self.epoch}-{self.rank}-{worker}")
        own = self.shards_for(worker, num_workers)
        if self.single_pass:  # once through this reader's shards, then the stream ends
            yield from _shuffle(self._read(own), self.shuffle_buffer, rng)
            return
        passes = 0
        while True:
            if self.resample:
                urls = [rng.choice(self.source.urls) for _ in range(max(1, len(own)))]
            else:
                urls = own[:]
                if passes:  # a repeat pass (reader quota larger than its shards) reshuffles
                    rng.shuffle(urls)
            passes += 1
            count = 0
            for sample in _shuffle(self._read(urls), self.shuffle_buffer, rng):
                count += 1
                yield sample
            if count == 0:
                last = self.events[-1] if self.events else ("", "", "no samples")
                raise ValueError(
                    f"shards: reader {self.rank}/{worker} read no sample from {len(urls)} "
                    f"shard(s) ({', '.join(urls[:3])}{', ...' if len(urls) > 3 else ''}); "
                    f"last error: {last[0]} {last[1]}: {last[2]}"
                )

    def _read(self, urls: list[str]) -> Iterator[dict[str, Any]]:
        counts = dict(zip(self.source.urls, self.source.samples))
        for url in urls:
            yield from iter_shard(url, self.events, counts.get(url))


def _shuffle(samples: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    if size <= 1:
        yield from samples
        return
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.randrange(size)
        buffer[i], sample = sample, buffer[i]
        yield sample
    rng.shuffle(buffer)
    yield from buffer
