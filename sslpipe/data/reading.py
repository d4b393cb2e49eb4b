"""Reading WebDataset shards as a stream of encoded samples (DESIGN.md, "Data flow").

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

Samples are dicts ``{"__key__", "__url__", ext: bytes}`` as webdataset yields them. Shards
are opened with webdataset's ``gopen`` (local paths, ``pipe:`` commands, http(s), ``gs://``
through gsutil, ...); a URL scheme that webdataset does not know (``s3://``, ``az://``,
``memory://``, ...) is opened through fsspec when it is installed.
"""

from __future__ import annotations

import dataclasses
import heapq
import http.client
import importlib
import math
import os
import random
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from webdataset.shardlists import expand_urls

from sslpipe.data.manifest import MANIFEST, parse_manifest, read_manifest, read_manifest_bytes

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
LABEL_EXT = "cls"
# set by iter_shard on a sample whose members are not a well-formed group: why (a str)
MALFORMED = "__malformed__"


@dataclass(frozen=True)
class ShardSource:
    """The shards of a loader: URLs, and what is known of them.

    Attributes:
        urls: one URL or path per shard.
        samples: samples per shard where a manifest says so, else None.
        index_files: the DALI ``.idx`` file of each local shard where it exists, else None.
        labeled: the manifest's ``labeled`` flag, or None when unknown.
        damaged_keys: keys of the images the manifest records as damaged (``sslpipe shard``
            checks every image as it writes it), or None when no manifest records damage
            (then the nvjpeg and dali workers check each JPEG themselves).
    """

    urls: tuple[str, ...]
    samples: tuple[int | None, ...]
    index_files: tuple[str | None, ...]
    labeled: bool | None = None
    damaged_keys: frozenset[str] | None = None

    @property
    def num_samples(self) -> int | None:
        """Total samples when every shard's count is known, else None."""
        if any(n is None for n in self.samples):
            return None
        return sum(n for n in self.samples if n is not None)

    @property
    def local(self) -> bool:
        """True when every shard is a local file (DALI reads only those)."""
        return all(os.path.isfile(u) for u in self.urls)


def resolve_shards(shards: Any) -> ShardSource:
    """Turn the ``shards`` argument of :func:`~sslpipe.data.create_loader` into a ShardSource.

    Args:
        shards: a shard directory (read through its manifest.json), the path or URL of a
            shard directory's manifest.json (``"https://host/in60k/manifest.json"``,
            ``"s3://bucket/in60k/manifest.json"``: shard URLs and sample counts are read from
            it), a path or URL with brace ranges (``"in60k-{000000..000099}.tar"``,
            ``"pipe:cat a-{0..3}.tar"``, ``"http://host/a-{0..3}.tar"``), several joined with
            ``::``, or a list of these.

    Raises:
        ValueError: nothing matched, or a local shard does not exist.
    """
    if isinstance(shards, (str, os.PathLike)) and os.path.isdir(shards):
        return _from_directory(os.fspath(shards))
    if isinstance(shards, (str, os.PathLike)) and os.fspath(shards).endswith(MANIFEST):
        where = os.fspath(shards)
        if _is_local(where):
            return _from_directory(os.path.dirname(where) or ".")
        return _from_manifest_url(where)
    if isinstance(shards, (str, os.PathLike)):
        urls = expand_urls(os.fspath(shards))
    elif isinstance(shards, Sequence) and all(isinstance(s, (str, os.PathLike)) for s in shards):
        urls = [u for s in shards for u in expand_urls(os.fspath(s))]
    else:
        raise ValueError(
            "shards must be a shard directory, a path/URL pattern such as "
            f"'data-{{000000..000009}}.tar', or a list of them. Got {type(shards).__name__}"
        )
    if not urls:
        raise ValueError(f"shards: no shard matched {shards!r}")
    for url in urls:
        if _is_local(url) and not os.path.isfile(url):
            raise ValueError(f"shards: {url!r} does not exist (expected a .tar shard)")
    counts, labeled = _counts_from_manifests(urls)
    index = tuple(_index_file(u) for u in urls)
    return ShardSource(tuple(urls), counts, index, labeled)


def peek_labeled(source: ShardSource) -> ShardSource:
    """``source`` with ``labeled`` decided, for shards without a manifest, from the first sample
    of the first shard (``cls`` present or not), so that every rank and worker of every backend
    reads the same way; the other samples are then checked against it. An unreadable first
    shard leaves it undecided (None: each reader decides from its first sample)."""
    if source.labeled is not None:
        return source
    events: list[tuple[str, str, str]] = []
    for sample in iter_shard(source.urls[0], events):
        if any(ext in sample for ext in IMAGE_EXTS):
            return dataclasses.replace(source, labeled=LABEL_EXT in sample)
        break
    return source


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


def iter_shard(url: str, events: list[tuple[str, str, str]], expected: int | None = None
               ) -> Iterator[dict[str, Any]]:
    """Samples of one tar shard, grouped by key, in file order.

    A shard that cannot be opened is recorded as ``("unreadable", url, why)``. One that ends
    early is recorded as ``("truncated", url, why)`` after the samples before the damage are
    yielded: the stream ends mid-member, a header is damaged (Python's tarfile takes a bad
    header for the end of the archive, silently), the archive has no end-of-archive marker
    (cut at a member boundary), or it holds fewer samples than ``expected`` (the manifest's
    count).
    """
    try:
        raw = _gopen(url)
    except Exception as err:  # gopen raises whatever the scheme's opener raises
        events.append(("unreadable", url, f"{type(err).__name__}: {err}"))
        return
    stream = _TailRecorder(raw)
    current: dict[str, Any] | None = None
    count = 0
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:  # type: ignore[call-overload]
            for member in tar:
                if not member.isreg():
                    continue
                key, ext = _split_name(member.name)
                if key is None:
                    continue
                data = tar.extractfile(member).read()
                if len(data) < member.size:
                    raise tarfile.ReadError(f"unexpected end of data in {member.name}")
                if current is not None and current["__key__"] != key:
                    count += 1
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": url}
                    if key in seen:  # webdataset groups adjacent members: this is a fragment
                        current[MALFORMED] = (f"key {key!r} appears again after other keys "
                                              "(a sample's members must be adjacent)")
                    seen.add(key)
                if ext in current:
                    current[MALFORMED] = f"member {member.name!r} appears twice"
                current[ext] = data
            problem = stream.end_problem(tar.offset)
        _close(raw)
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        _close_quietly(raw)
        events.append(("truncated" if count or current else "unreadable", url,
                       f"after {count} sample(s): {type(err).__name__}: {err}"))
        # The sample being assembled when the shard broke may miss its image or label.
        return
    if current is not None:
        count += 1
        yield current
    if problem is None and expected is not None and count < expected:
        problem = f"holds {count} sample(s), the manifest lists {expected}"
    if problem is not None:
        events.append(("truncated", url, f"after {count} sample(s): {problem}"))


class _TailRecorder:
    """A read-only stream that counts what is read and keeps the last bytes, so that the end of
    a tar can be checked once tarfile has stopped reading: after the last member there must be
    only zero blocks, at least the two of the end-of-archive marker."""

    KEEP = 1 << 16  # more than tarfile's 10 KiB record buffer

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.position = 0  # bytes read from raw
        self.tail = bytearray()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.position += len(data)
        self.tail += data
        if len(self.tail) > self.KEEP:
            del self.tail[: len(self.tail) - self.KEEP]
        return data

    def end_problem(self, offset: int) -> str | None:
        """What is wrong with the archive's end, the next header being at ``offset``; None when
        the two zero blocks of the end-of-archive marker follow (what comes after them is
        ignored, as tar ignores it)."""
        start = self.position - len(self.tail)
        if offset < start:  # not expected: tarfile reads at most a record past the header
            return None
        marker = bytes(self.tail[offset - start: offset - start + 1024])
        while len(marker) < 1024:
            more = self.raw.read(1024 - len(marker))
            if not more:
                break
            marker += more
        while self.raw.read(1 << 16):  # drain: a pipe: command must be able to exit
            pass
        if marker.strip(b"\x00"):
            return f"a damaged tar header at byte {offset} (tarfile stops reading there)"
        if len(marker) < 1024:
            return (f"no end-of-archive marker after byte {offset}: the shard was cut at a "
                    "member boundary")
        return None


def _gopen(url: str) -> Any:
    """Open ``url`` for reading: http(s) with timeouts and retries (:class:`HttpStream`),
    webdataset's other schemes, else fsspec's."""
    # ``webdataset.gopen`` is both a module and the function it re-exports; take the module.
    module = importlib.import_module("webdataset.gopen")
    scheme = urlparse(url).scheme
    if scheme in ("http", "https"):
        return HttpStream(url)
    if len(scheme) > 1 and scheme not in module.gopen_schemes and scheme != "file":
        return _fsspec_open(url, scheme)
    return module.gopen(url, "rb")


# A remote read that stalls this long is retried; ``SSLPIPE_HTTP_TIMEOUT`` / ``_RETRIES`` set them.
HTTP_TIMEOUT = float(os.environ.get("SSLPIPE_HTTP_TIMEOUT", "60"))
HTTP_RETRIES = int(os.environ.get("SSLPIPE_HTTP_RETRIES", "4"))


class HttpStream:
    """A file-like reader of an http(s) URL that never hangs.

    Every connect and read waits at most ``timeout`` seconds (a server that stops answering
    without closing the connection, which ``curl`` waits on forever). A failed or stalled read
    is retried from the byte it stopped at (an HTTP Range request), up to ``retries`` times in
    a row with exponential backoff (1, 2, 4, ... s); then an OSError names the URL, the byte
    and the last error, which the reader reports as a truncated or unreadable shard.
    """

    def __init__(self, url: str, timeout: float | None = None, retries: int | None = None
                 ) -> None:
        self.url = url
        self.timeout = HTTP_TIMEOUT if timeout is None else timeout
        self.retries = HTTP_RETRIES if retries is None else retries
        self.position = 0
        self._response: Any = None
        self._open()

    def read(self, size: int = -1) -> bytes:
        failures = 0
        while True:
            try:
                data = self._response.read(size)
            except (OSError, http.client.HTTPException) as err:  # timeouts, resets
                failures += 1
                self._retry(failures, err)
                continue
            self.position += len(data)
            return data

    def close(self) -> None:
        if self._response is not None:
            self._response.close()

    def _open(self) -> None:
        failures = 0
        while True:
            try:
                headers = {"Range": f"bytes={self.position}-"} if self.position else {}
                request = urllib.request.Request(self.url, headers=headers)
                response = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310
                if self.position and response.status != 206:  # Range ignored: skip ahead
                    skip = self.position
                    while skip > 0:
                        chunk = response.read(min(skip, 1 << 20))
                        if not chunk:
                            break
                        skip -= len(chunk)
                self._response = response
                return
            except urllib.error.HTTPError as err:
                if err.code < 500 and err.code != 429:  # 404, 403: asking again will not help
                    raise OSError(f"{self.url}: HTTP {err.code} {err.reason}") from err
                failures += 1
                self._retry(failures, err, reopen=False)
            except (OSError, http.client.HTTPException) as err:
                failures += 1
                self._retry(failures, err, reopen=False)

    def _retry(self, failures: int, err: Exception, reopen: bool = True) -> None:
        if failures > self.retries:
            raise OSError(
                f"{self.url}: no data after {failures} attempt(s) at byte {self.position} "
                f"(each waits {self.timeout:g} s): {type(err).__name__}: {err}"
            ) from err
        _backoff(failures)
        if reopen:
            self.close()
            self._open()


def _backoff(failures: int) -> None:
    time.sleep(min(30.0, 2.0 ** (failures - 1)))


def _fsspec_open(url: str, scheme: str) -> Any:
    try:
        import fsspec
    except ImportError as err:
        raise ValueError(
            f"{url!r}: the {scheme}:// scheme is opened through fsspec, which is not installed "
            "(pip install fsspec, and the filesystem's own package, e.g. s3fs for s3://)"
        ) from err
    return fsspec.open(url, "rb").open()


def load_manifest(where: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a shard directory, given as the directory, its manifest.json, or the
    URL of that file (any scheme :func:`iter_shard` opens).

    Raises:
        ValueError: it cannot be read or is not a valid manifest (the message names it).
    """
    return parse_manifest(*fetch_manifest(where))


def fetch_manifest(where: str | os.PathLike[str]) -> tuple[bytes, str]:
    """The unparsed bytes of a shard directory's manifest.json (the directory, the file or
    its URL), e.g. to hash them, and where they were read (for messages)."""
    where = os.fspath(where)
    if _is_local(where):
        if where.endswith(MANIFEST):
            where = os.path.dirname(where) or "."
        return read_manifest_bytes(where)
    if not where.endswith(MANIFEST):
        raise ValueError(f"{where!r}: a remote shard directory is given by the URL of its "
                         f"{MANIFEST} (e.g. 'https://host/in60k/{MANIFEST}')")
    try:
        stream = _gopen(where)
        try:
            return bytes(stream.read()), where
        finally:
            _close(stream)
    except Exception as err:  # whatever the scheme's opener raises
        raise ValueError(f"shards: cannot read the manifest {where!r}: "
                         f"{type(err).__name__}: {err}") from err


def _from_manifest_url(url: str) -> ShardSource:
    """A ShardSource from a remote shard directory's manifest.json."""
    manifest = load_manifest(url)
    base = url[: -len(MANIFEST)]
    urls = tuple(base + shard["file"] for shard in manifest["shards"])
    if not urls:
        raise ValueError(f"shards: the manifest {url!r} lists no shard")
    counts = tuple(int(shard["samples"]) for shard in manifest["shards"])
    return ShardSource(urls, counts, (None,) * len(urls), bool(manifest["labeled"]),
                       recorded_damage(manifest))


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


def _split_name(name: str) -> tuple[str | None, str]:
    base = os.path.basename(name)
    if base.startswith(".") or "." not in base:
        return None, ""
    head, _, _ = base.partition(".")
    prefix = name[: len(name) - len(base)] + head
    return prefix, base[len(head) + 1 :].lower()


def _close(stream: Any) -> None:
    # A pipe: command's exit status is only checked on close (webdataset's Pipe raises).
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _close_quietly(stream: Any) -> None:
    try:
        _close(stream)
    except Exception:  # the original error is what gets reported
        return


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def _index_file(url: str) -> str | None:
    if not _is_local(url):
        return None
    idx = os.path.splitext(url)[0] + ".idx"
    return idx if os.path.isfile(idx) else None


def _from_directory(directory: str) -> ShardSource:
    manifest = read_manifest(directory)
    urls, counts, index = [], [], []
    for shard in manifest["shards"]:
        urls.append(os.path.join(directory, shard["file"]))
        counts.append(int(shard["samples"]))
        idx = os.path.join(directory, shard["index_file"]) if shard.get("index_file") else None
        index.append(idx if idx and os.path.isfile(idx) else None)
    if not urls:
        raise ValueError(f"shards: the manifest of {directory!r} lists no shard")
    return ShardSource(tuple(urls), tuple(counts), tuple(index), bool(manifest["labeled"]),
                       recorded_damage(manifest))


def recorded_damage(manifest: dict[str, Any]) -> frozenset[str] | None:
    """The keys of the damaged images a manifest lists, None when it does not record damage
    (written by an sslpipe before that, or by another tool)."""
    damaged = manifest.get("damaged")
    if not isinstance(damaged, list):
        return None
    return frozenset(str(d["key"]) for d in damaged if isinstance(d, dict) and "key" in d)


def _counts_from_manifests(urls: list[str]) -> tuple[tuple[int | None, ...], bool | None]:
    """Sample counts of local shards whose directory has a manifest that lists them."""
    known: dict[str, tuple[int, bool]] = {}
    for directory in {os.path.dirname(os.path.abspath(u)) for u in urls if _is_local(u)}:
        if not os.path.isfile(os.path.join(directory, MANIFEST)):
            continue
        try:
            manifest = read_manifest(directory)
        except ValueError:
            continue
        for shard in manifest["shards"]:
            path = os.path.join(directory, shard["file"])
            known[path] = (int(shard["samples"]), bool(manifest["labeled"]))
    counts = tuple(known.get(os.path.abspath(u), (None, None))[0] for u in urls)
    flags = {known[os.path.abspath(u)][1] for u in urls if os.path.abspath(u) in known}
    return counts, (flags.pop() if len(flags) == 1 else None)
