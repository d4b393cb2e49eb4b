"""Datasets to WebDataset shards and back (DESIGN.md, "Shards").

Writing: :func:`open_source` reads a dataset in its own format, :func:`write_shards` writes it
as shards with a manifest, :func:`verify_shards` checks a shard directory. Reading:
:func:`read_manifest` and :func:`shard_paths` describe a shard directory; :func:`sample_path`
locates the embedded FashionMNIST sample.
"""

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
