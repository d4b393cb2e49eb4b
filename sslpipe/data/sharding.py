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

This module holds the options and the shard filling; beside it: :mod:`~sslpipe.data.selection`
(which records, in which order, and the subset's spares), :mod:`~sslpipe.data.shard_journal`
(the journal, resume and overwrite) and :func:`sslpipe.data.encode.encode_stream` (encoding in
worker processes, in input order). ``JOURNAL`` is re-exported here.

Nothing is dropped or damaged silently: a file that cannot be read or decoded is left out and
listed under ``skipped``; a JPEG that libjpeg-turbo decodes only past damage (``"Corrupt JPEG
data: ..."``, which PIL passes over) is written and listed under ``damaged`` with its key, or,
with ``damaged="skip"``, left out and listed under ``skipped`` (a subset pick is then replaced
by the next image of its class, as an undecodable one is). The end summary and ``sslpipe shard
info`` count and name both.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sslpipe.atomic import remove_temporaries
from sslpipe.data.encode import Encoded, EncodeOptions, encode_stream
from sslpipe.data.manifest import (
    FORMAT,
    MANIFEST,
    VERSION,
    read_manifest,
    write_manifest,
)
from sslpipe.data.selection import RecordStream, select_records
from sslpipe.data.shard_journal import JOURNAL, is_complete, prepare, run_fingerprint, save_journal
from sslpipe.data.sources.base import Source
from sslpipe.data.writer import ShardFile, sample_bytes

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
    records, subset, spares = select_records(source, options)
    os.makedirs(out, exist_ok=True)
    if options.resume and is_complete(out):
        remove_temporaries(out, exclusive=True)
        print(f"{out}: already complete (manifest.json present); nothing to resume",
              file=sys.stderr)
        return read_manifest(out)
    fingerprint = run_fingerprint(source, options, name, records)
    done = prepare(out, name, options, fingerprint)
    # what a kill left mid-write (journal, manifest, index files): one job owns ``out``
    remove_temporaries(out, exclusive=True)
    stream = RecordStream(records, spares)
    for skip in sorted(done["skipped"], key=lambda s: s["at"]):  # a resumed run's replacements
        stream.failed(skip["at"])
    encoded = encode_stream(stream, options, done["next"])
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


def _fill(out: str, name: str, encoded: Iterator[Encoded], options: ShardOptions,
          state: dict[str, Any], fingerprint: dict[str, Any], stream: RecordStream
          ) -> dict[str, Any]:
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
        save_journal(out, state)
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
    save_journal(out, state)


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
