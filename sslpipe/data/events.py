"""What a loader met on its way: the bad samples and shards, as events and counts.

An event is ``(kind, where, why)``: ``kind`` one of ``"corrupt"``, ``"damaged"``,
``"damaged-used"``, ``"truncated"``, ``"unreadable"``, ``"short-batch"``; ``where`` the shard
(and key); ``why`` what was wrong. Readers and workers append them as they go, the loader sums
them in :class:`LoaderStats`: nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Event", "LoaderStats", "report_short"]

Event = tuple[str, str, str]


def report_short(keys: list[str], min_batch: int, events: list[Event]) -> None:
    """A (last) batch with fewer samples than the collator needs: each sample is reported."""
    for key in keys:
        events.append(("short-batch", key, f"the last batch holds {len(keys)} sample(s); "
                       f"the task needs at least {min_batch} per batch"))


@dataclass
class LoaderStats:
    """What a loader met: counts by kind and the events.

    Attributes:
        batches, samples: delivered so far (all epochs).
        skipped: counts by kind of what was left out: ``"corrupt"`` (a sample that could not
            be decoded or collated, or lacked its image or label), ``"damaged"`` (an image a
            decoder reported damaged, under ``damaged="skip"``), ``"truncated"`` (a shard that
            ended early: mid-file, at a damaged header, or short of its manifest count),
            ``"unreadable"`` (a shard that could not be opened).
        used_damaged: images a decoder reported damaged and that were used
            (``damaged="use"``).
        events: ``(kind, where, why)`` of every one, ``where`` naming the shard (and key);
            a used damaged image's kind is ``"damaged-used"``.
    """

    batches: int = 0
    samples: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    used_damaged: int = 0
    events: list[Event] = field(default_factory=list)

    def add(self, events: list[Event]) -> None:
        for event in events:
            if event[0] == "damaged-used":
                self.used_damaged += 1
            else:
                self.skipped[event[0]] += 1
            self.events.append(tuple(event))  # type: ignore[arg-type]
