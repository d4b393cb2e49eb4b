"""The journal that makes ``sslpipe shard`` resumable: ``.sslpipe-progress.json`` in ``out``.

After each finished shard :func:`save_journal` records it (with the run's :func:`run_fingerprint`:
source, options, the records' keys); :func:`prepare` clears ``out`` (``overwrite``), checks it
against the journal and keeps the finished shards up to the first missing or altered one
(``resume``), or refuses to mix two shard sets. :func:`is_complete`: the manifest is written
and the journal gone.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sslpipe.atomic import atomic_write_text
from sslpipe.data.manifest import MANIFEST
from sslpipe.data.sources.base import Record, Source
from sslpipe.data.writer import sha256_of

if TYPE_CHECKING:
    from sslpipe.data.sharding import ShardOptions

__all__ = ["JOURNAL", "is_complete", "prepare", "run_fingerprint", "save_journal"]

JOURNAL = ".sslpipe-progress.json"


def is_complete(out: str) -> bool:
    return os.path.exists(os.path.join(out, MANIFEST)) and not os.path.exists(
        os.path.join(out, JOURNAL))


def run_fingerprint(source: Source, options: ShardOptions, name: str,
                 records: list[Record]) -> dict[str, Any]:
    digest = hashlib.sha256("\n".join(r.key for r in records).encode()).hexdigest()
    return {
        "name": name, "source": source.name, "root": source.root, "split": source.split,
        "encode": asdict(options.encode), "shard_size": options.shard_size,
        "shard_bytes": options.shard_bytes, "damaged": options.damaged,
        "records_sha256": digest,
    }


def prepare(out: str, name: str, options: ShardOptions,
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


def save_journal(out: str, state: dict[str, Any]) -> None:
    atomic_write_text(os.path.join(out, JOURNAL), json.dumps(state))
