"""The records a shard set is written from, in order: :func:`select_records` (unique keys, a
class-balanced subset or a key list, a seeded shuffle so that shards mix classes) and
:class:`RecordStream` (those records, plus the subset's spares that replace a pick that turns
out undecodable).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from sslpipe.data.sources.base import Record, Source
from sslpipe.data.subset import balanced_order, keys_subset, parse_subset

if TYPE_CHECKING:
    from sslpipe.data.sharding import ShardOptions

__all__ = ["RecordStream", "select_records"]


class RecordStream:
    """The records to write, in order, and the subset's spares: a pick that turns out
    undecodable is replaced by the next spare of its class (appended at the end), so a subset
    keeps its per-class counts, and its nesting: each class holds the first ``quota``
    decodable items of its seeded order."""

    def __init__(self, records: list[Record], spares: dict[int, list[Record]]) -> None:
        self.items = list(records)
        self.spares = {k: list(v) for k, v in spares.items()}
        self.replaced: list[dict[str, str]] = []

    def failed(self, position: int) -> None:
        """The record at ``position`` could not be written: queue its class's next spare."""
        record = self.items[position]
        spares = self.spares.get(-1 if record.label is None else int(record.label))
        if spares:
            spare = spares.pop(0)
            self.items.append(spare)
            self.replaced.append({"path": str(record.path or record.key),
                                  "by": str(spare.path or spare.key)})


def select_records(source: Source, options: ShardOptions
            ) -> tuple[list[Record], dict[str, Any] | None, dict[int, list[Record]]]:
    records = source.records
    if not records:
        raise ValueError(f"{source.name}: no images found for split {source.split!r} in "
                         f"{source.root!r}")
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):  # the built-in sources make unique keys; others may not
        repeats = {k for k, n in Counter(keys).items() if n > 1}
        named = [f"{r.key} ({r.path or 'array'})" for r in records if r.key in repeats]
        raise ValueError(f"{source.name}: sample keys must be unique. Repeated: {named[:6]}")
    subset = None
    spares: dict[int, list[Record]] = {}
    if options.keys is not None:
        chosen = keys_subset(keys, list(options.keys), "`keys_from`")
        records = [records[i] for i in chosen]
        subset = {"rule": "keys", "seed": None, "size": len(records)}
    elif options.subset is not None:
        size = parse_subset(options.subset, len(records))
        chosen, spare_ids = balanced_order([r.label for r in records], size, options.seed)
        spares = {c: [records[i] for i in ids] for c, ids in spare_ids.items()}
        records = [records[i] for i in chosen]
        subset = {"rule": str(options.subset), "seed": options.seed, "size": size}
    if options.shuffle:
        order = np.random.default_rng([options.seed, 2]).permutation(len(records))
        records = [records[i] for i in order.tolist()]
    return records, subset, spares
