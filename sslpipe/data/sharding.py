"""Source -> WebDataset shards: selection, parallel encoding, shard rotation, resume, manifest.

:func:`write_shards` selects the records (subset or key list), orders them (seeded shuffle, so
that shards mix classes), encodes them in worker processes (results come back in input order,
so the output does not depend on ``workers``), and fills shards that rotate by sample count
and/or bytes. After each finished shard a small journal (``.sslpipe-progress.json``) records it;
``resume=True`` checks the finished shards against the journal and continues after the last
good one (or starts again when a kill came before the journal's first write), so a run
interrupted at any instant ends with exactly the files of an uninterrupted one: the
temporaries a kill left (a partial shard, a half-written journal, manifest or index file) are
removed when a run starts or resumes in ``out``.
``manifest.json`` is written last.

Nothing is dropped or damaged silently: a file that cannot be read or decoded is left out and
listed under ``skipped``; a JPEG that libjpeg-turbo decodes only past damage (``"Corrupt JPEG
data: ..."``, which PIL passes over) is written and listed under ``damaged`` with its key, or,
with ``damaged="skip"``, left out and listed under ``skipped`` (a subset pick is then replaced
by the next image of its class, as an undecodable one is). The end summary and ``sslpipe shard
info`` count and name both.
"""

from __future__ import annotations

import contextlib
import glob
import json
import multiprocessing
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from sslpipe.atomic import atomic_write_text, remove_temporaries
from sslpipe.data.encode import Encoded, EncodeOptions, encode_record
from sslpipe.data.manifest import (
    FORMAT,
    MANIFEST,
    VERSION,
    read_manifest,
    write_manifest,
)
from sslpipe.data.sources.base import Record, Source
from sslpipe.data.subset import balanced_order, keys_subset, parse_subset
from sslpipe.data.writer import ShardFile, sample_bytes, sha256_of

JOURNAL = ".sslpipe-progress.json"
_SHARD_FIELDS = ("file", "index_file", "samples", "bytes", "sha256")


@dataclass(frozen=True)
class ShardOptions:
    """How a source is written to shards (the CLI fills this from its flags).

    Attributes:
        name: shard file prefix (default: the output directory's basename).
        subset: ``30k``, ``5000``, ``10%`` ... (class-balanced, see :mod:`sslpipe.data.subset`).
        keys: exact keys to write (``--keys-from``); excludes ``subset``.
        seed: seeds the subset and the shuffle.
        shuffle: write samples in a seeded random order (else in source order).
        encode: resize / format / quality.
        shard_size: most samples per shard (None: no limit).
        shard_bytes: most bytes per shard (None: no limit); a single larger sample gets a shard.
        workers: encoding processes (1: in this process).
        damaged: a JPEG libjpeg-turbo decodes only past damage (PIL, nvJPEG and DALI decode it
            in silence, parts may be garbage) is ``"use"``-d, as by the loader's default:
            written (its bytes kept, or re-encoded from what was decoded when resizing) and
            listed in the manifest under ``damaged``; or ``"skip"``-ped: left out and listed
            under ``skipped`` (reason ``"damaged: ..."``). Kept bytes are checked too.
        resume: continue an interrupted run in the same directory.
        overwrite: replace an existing shard set of the same name.
        progress: show a tqdm progress bar (images/s).
    """

    name: str | None = None
    subset: str | None = None
    keys: tuple[str, ...] | None = None
    seed: int = 0
    shuffle: bool = True
    encode: EncodeOptions = EncodeOptions()
    shard_size: int | None = 10_000
    shard_bytes: int | None = 1 << 30
    workers: int = 1
    damaged: str = "use"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


def write_shards(
    source: Source, out: str, options: ShardOptions = ShardOptions()
) -> dict[str, Any]:
    """Write ``source`` as shards into directory ``out``; returns the manifest written.

    Raises:
        ValueError: bad options, a subset that does not fit the data, duplicate keys, or an
            existing shard set in ``out`` without ``resume`` / ``overwrite``.
    """
    _check(options)
    name = options.name or os.path.basename(os.path.abspath(out))
    if "." in name or "/" in name or not name:
        raise ValueError(f"`name` must be a non-empty file prefix without dots. Got {name!r}")
    records, subset, spares = _select(source, options)
    os.makedirs(out, exist_ok=True)
    if options.resume and _complete(out):
        remove_temporaries(out, exclusive=True)
        print(f"{out}: already complete (manifest.json present); nothing to resume",
              file=sys.stderr)
        return read_manifest(out)
    fingerprint = _fingerprint(source, options, name, records)
    done = _prepare(out, name, options, fingerprint)
    # what a kill left mid-write (journal, manifest, index files): one job owns ``out``
    remove_temporaries(out, exclusive=True)
    stream = _Stream(records, spares)
    for skip in sorted(done["skipped"], key=lambda s: s["at"]):  # a resumed run's replacements
        stream.failed(skip["at"])
    encoded = _encoded(stream, options, done["next"])
    state = _fill(out, name, encoded, options, done, fingerprint, stream)
    if subset is not None:
        subset["replaced"] = stream.replaced
    labels = Counter(e for e in state["labels"])
    manifest = {
        "format": FORMAT, "version": VERSION, "name": name, "source": source.name,
        "root": source.root, "split": source.split, "classes": source.classes,
        "labeled": source.labeled, "num_samples": sum(s["samples"] for s in state["shards"]),
        "image_format": _format_name(source, options.encode),
        "resize": options.encode.resize, "quality": options.encode.quality, "subset": subset,
        "counts_per_class": {str(c): labels.get(c, 0) for c in range(len(source.classes))},
        "shards": [{k: s[k] for k in _SHARD_FIELDS} for s in state["shards"]],
        "skipped": source.skipped + state["skipped"],
        "damaged": state["damaged"],
        "created_by": f"sslpipe {_version()}",
    }
    if "image_size" in state:  # (H, W) of the smallest and largest images, elementwise
        manifest["image_size"] = state["image_size"]
    write_manifest(out, manifest)
    os.remove(os.path.join(out, JOURNAL))
    _summary(manifest, out)
    return manifest


def _complete(out: str) -> bool:
    return os.path.exists(os.path.join(out, MANIFEST)) and not os.path.exists(
        os.path.join(out, JOURNAL))


def _check(options: ShardOptions) -> None:
    for field in ("shard_size", "shard_bytes"):
        value = getattr(options, field)
        if value is not None and value <= 0:
            raise ValueError(f"`{field}` must be > 0 (or None for no limit). Got {value}")
    if options.workers < 1:
        raise ValueError(f"`workers` must be >= 1. Got {options.workers}")
    if options.subset is not None and options.keys is not None:
        raise ValueError("`subset` and `keys` (--keys-from) exclude each other. Got both")
    if options.damaged not in ("use", "skip"):
        raise ValueError(f"`damaged` must be one of ['use', 'skip']. Got {options.damaged!r}")


class _Stream:
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


def _select(source: Source, options: ShardOptions
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


def _fingerprint(source: Source, options: ShardOptions, name: str,
                 records: list[Record]) -> dict[str, Any]:
    import hashlib

    digest = hashlib.sha256("\n".join(r.key for r in records).encode()).hexdigest()
    return {
        "name": name, "source": source.name, "root": source.root, "split": source.split,
        "encode": asdict(options.encode), "shard_size": options.shard_size,
        "shard_bytes": options.shard_bytes, "damaged": options.damaged,
        "records_sha256": digest,
    }


def _prepare(out: str, name: str, options: ShardOptions,
             fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Clear or check what ``out`` holds; return the journal state to continue from."""
    journal = os.path.join(out, JOURNAL)
    existing = sorted(glob.glob(os.path.join(glob.escape(out), f"{glob.escape(name)}-*")))
    fresh = {"fingerprint": fingerprint, "next": 0, "shards": [], "skipped": [], "damaged": [],
             "labels": []}
    if options.overwrite:
        for path in [*existing, journal, os.path.join(out, MANIFEST)]:
            if os.path.exists(path):
                os.remove(path)
        return fresh
    if options.resume and not os.path.exists(journal) and not os.path.exists(
            os.path.join(out, MANIFEST)):
        # killed before the journal's first write (during or just after the first shard):
        # nothing is recorded, so the run starts again and rewrites the same files
        for path in existing:
            os.remove(path)
        return fresh
    if options.resume and os.path.exists(journal):
        with open(journal, encoding="utf-8") as f:
            state = json.load(f)
        state.setdefault("damaged", [])
        if state.get("fingerprint") != fingerprint:
            raise ValueError(
                f"`resume`: {out!r} was started with other options or data "
                f"({state.get('fingerprint')}); rerun with the same ones or use --overwrite"
            )
        return _drop_bad_shards(out, state)
    if existing or os.path.exists(os.path.join(out, MANIFEST)) or os.path.exists(journal):
        raise ValueError(
            f"{out!r} already holds shards named {name!r} (or a manifest): pass --resume to "
            "finish an interrupted run or --overwrite to replace them"
        )
    return fresh


def _drop_bad_shards(out: str, state: dict[str, Any]) -> dict[str, Any]:
    """Keep the journal's shards up to the first one that is missing or altered."""
    for i, shard in enumerate(state["shards"]):
        path = os.path.join(out, shard["file"])
        if not os.path.isfile(path) or sha256_of(path) != shard["sha256"]:
            state = {**state, "shards": state["shards"][:i], "next": shard["start"],
                     "skipped": [s for s in state["skipped"] if s["at"] < shard["start"]],
                     "damaged": [d for d in state["damaged"] if d["at"] < shard["start"]],
                     "labels": state["labels"][:shard["first_label"]]}
            break
    for path in glob.glob(os.path.join(glob.escape(out), "*.tmp")):
        os.remove(path)
    return state


def _encoded(stream: _Stream, options: ShardOptions, start: int) -> Iterator[Encoded]:
    """Encoded records from ``start`` on, in stream order; replacements the consumer queues
    while it reads (``stream.failed``) are encoded after the records, in turn."""
    work = partial(encode_record, options=options.encode)
    bar = _progress(len(stream.items), start, options.progress)
    threads = torch.get_num_threads()
    position = start
    try:
        # parallelism is across processes: torch's intra-op threads (the resize) would only
        # spin against the other workers
        torch.set_num_threads(1)
        pool: Any = None
        if options.workers > 1:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            pool = context.Pool(options.workers, initializer=_worker_init)
        with pool if pool is not None else contextlib.nullcontext():
            while position < len(stream.items):
                batch = stream.items[position:]
                # imap keeps input order, so the shards do not depend on the number of workers
                results = (map(work, batch) if pool is None
                           else pool.imap(work, batch, chunksize=16))
                for result in results:
                    position += 1
                    yield result
                    bar.total = max(bar.total, len(stream.items))
                    bar.update()
    finally:
        torch.set_num_threads(threads)
        bar.close()


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: only the parent acts on it (it ends the pool);
    # workers that raised KeyboardInterrupt themselves could leave Pool.terminate waiting
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)


def _fill(out: str, name: str, encoded: Iterator[Encoded], options: ShardOptions,
          state: dict[str, Any], fingerprint: dict[str, Any], stream: _Stream) -> dict[str, Any]:
    state = {**state, "fingerprint": fingerprint}
    position = state["next"]
    shard: ShardFile | None = None
    start, first_label = position, len(state["labels"])
    pending_labels: list[int] = []
    try:
        for item in encoded:
            position += 1
            skip = None
            if item.data is None:
                skip = str(item.reason)
            elif item.damage is not None and options.damaged == "skip":
                skip = f"damaged: {item.damage}"
            if skip is not None or item.data is None:
                state["skipped"].append({"path": item.where, "reason": skip, "at": position - 1})
                stream.failed(position - 1)  # a subset pick: its class's next spare follows
                continue
            files = [(item.ext, item.data)]
            if item.label is not None:
                files.append(("cls", str(item.label).encode("ascii")))
            if shard is not None and _full(shard, sample_bytes(files), options):
                _publish(out, shard, state, start, first_label, pending_labels, position - 1)
                shard, pending_labels = None, []
            if shard is None:
                start, first_label = position - 1, len(state["labels"])
                shard = ShardFile(out, name, len(state["shards"]))
            shard.add(item.key, files)
            if item.damage is not None:  # recorded with the shard it is in (a resume drops
                # what the journal's last shard does not hold)
                state["damaged"].append({"path": item.where, "key": item.key,
                                         "reason": item.damage, "at": position - 1})
            if item.label is not None:
                pending_labels.append(item.label)
            if item.size is not None:
                sizes = state.setdefault("image_size", {"min": list(item.size),
                                                        "max": list(item.size)})
                sizes["min"] = [min(a, b) for a, b in zip(sizes["min"], item.size)]
                sizes["max"] = [max(a, b) for a, b in zip(sizes["max"], item.size)]
        if shard is not None:
            _publish(out, shard, state, start, first_label, pending_labels, position)
            shard = None
        state["next"] = position
        _save_journal(out, state)
    finally:
        if shard is not None:
            shard.abort()
    state["skipped"] = [{"path": s["path"], "reason": s["reason"]} for s in state["skipped"]]
    state["damaged"] = [{k: d[k] for k in ("path", "key", "reason")} for d in state["damaged"]]
    return state


def _full(shard: ShardFile, incoming: int, options: ShardOptions) -> bool:
    if options.shard_size is not None and shard.samples >= options.shard_size:
        return True
    # 1024: the two zero blocks that end a tar
    limit = options.shard_bytes
    return limit is not None and shard.size + incoming + 1024 > limit


def _publish(out: str, shard: ShardFile, state: dict[str, Any], start: int, first_label: int,
             labels: list[int], next_position: int) -> None:
    entry = shard.close()
    state["shards"].append({**entry, "start": start, "first_label": first_label})
    state["labels"].extend(labels)
    state["next"] = next_position
    _save_journal(out, state)


def _save_journal(out: str, state: dict[str, Any]) -> None:
    atomic_write_text(os.path.join(out, JOURNAL), json.dumps(state))


def _progress(total: int, start: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="img", disable=not enabled, smoothing=0.1,
                desc="shard", dynamic_ncols=True)


def _format_name(source: Source, encode: EncodeOptions) -> str:
    if encode.image_format != "auto":
        return encode.image_format
    return encode.target(source.records[0])


def _summary(manifest: dict[str, Any], out: str) -> None:
    if not manifest["skipped"] and not manifest["num_samples"]:
        return
    reasons = Counter(s["reason"].split(":")[0] for s in manifest["skipped"])
    where = os.path.join(out, MANIFEST)
    print(f"wrote {manifest['num_samples']} images in {len(manifest['shards'])} shard(s) to "
          f"{out}", file=sys.stderr)
    if reasons:
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        print(f"skipped {len(manifest['skipped'])} input(s): {detail} (listed in {where} "
              "under \"skipped\")", file=sys.stderr)
    for line in _damaged_lines(manifest, where):
        print(line, file=sys.stderr)


def _damaged_lines(manifest: dict[str, Any], where: str, limit: int = 10) -> list[str]:
    """Lines that count and name the damaged images: those written (``damaged``) and those
    left out for it (``damaged="skip"``), at most ``limit`` of each by name."""
    used = manifest["damaged"]
    skipped = [s for s in manifest["skipped"] if s["reason"].startswith("damaged: ")]
    groups = (
        (used, f"wrote {len(used)} damaged image(s) that libjpeg-turbo decodes only past a "
               f"warning (listed in {where} under \"damaged\"; --damaged skip leaves them out):",
         lambda d: f"  {d['path']} (key {d['key']}): {d['reason']}"),
        (skipped, f"skipped {len(skipped)} damaged image(s) (--damaged skip):",
         lambda s: f"  {s['path']}: {s['reason'][len('damaged: '):]}"),
    )
    lines: list[str] = []
    for entries, head, line in groups:
        if entries:
            lines += [head, *map(line, entries[:limit])]
        if len(entries) > limit:
            lines.append(f"  ... and {len(entries) - limit} more (see {where})")
    return lines


def _version() -> str:
    from sslpipe import __version__

    return __version__
