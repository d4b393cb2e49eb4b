"""Datasets to WebDataset shards and back (docs/design.md, "Shards").

Writing: :func:`open_source` reads a dataset in its own format, :func:`write_shards` writes it
as shards with a manifest, :func:`verify_shards` checks a shard directory. Reading:
:func:`read_manifest` and :func:`shard_paths` describe a shard directory; :func:`sample_path`
locates the embedded FashionMNIST sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sslpipe._lazy import lazy_names

if TYPE_CHECKING:
    from sslpipe.data.embedded import sample_path
    from sslpipe.data.encode import EncodeOptions
    from sslpipe.data.loader import Loader, create_loader
    from sslpipe.data.manifest import index_paths, read_manifest, shard_paths
    from sslpipe.data.sharding import ShardOptions, write_shards
    from sslpipe.data.sources import Record, Source, list_sources, open_source
    from sslpipe.data.subset import balanced_subset
    from sslpipe.data.verify import verify_shards

__all__ = [
    "EncodeOptions", "Loader", "Record", "ShardOptions", "Source", "balanced_subset",
    "create_loader", "index_paths",
    "list_sources", "open_source", "read_manifest", "sample_path", "shard_paths",
    "verify_shards", "write_shards",
]

__getattr__, __dir__ = lazy_names(__name__, {
    "EncodeOptions": "sslpipe.data.encode",
    "Loader": "sslpipe.data.loader",
    "Record": "sslpipe.data.sources",
    "ShardOptions": "sslpipe.data.sharding",
    "Source": "sslpipe.data.sources",
    "balanced_subset": "sslpipe.data.subset",
    "create_loader": "sslpipe.data.loader",
    "index_paths": "sslpipe.data.manifest",
    "list_sources": "sslpipe.data.sources",
    "open_source": "sslpipe.data.sources",
    "read_manifest": "sslpipe.data.manifest",
    "sample_path": "sslpipe.data.embedded",
    "shard_paths": "sslpipe.data.manifest",
    "verify_shards": "sslpipe.data.verify",
    "write_shards": "sslpipe.data.sharding",
})
