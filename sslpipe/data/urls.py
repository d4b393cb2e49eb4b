"""Opening shard URLs for reading: local paths, webdataset's schemes, http(s), fsspec.

:func:`open_url` opens a shard or a manifest: http(s) through :class:`HttpStream` (timeouts,
retries from the byte a read stopped at), the other schemes webdataset's ``gopen`` knows
(local paths, ``pipe:`` commands, ``gs://`` through gsutil, ...), and a scheme webdataset does
not know (``s3://``, ``az://``, ``memory://``, ...) through fsspec when it is installed.
"""

from __future__ import annotations

import http.client
import importlib
import os
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

__all__ = ["HTTP_RETRIES", "HTTP_TIMEOUT", "HttpStream", "close_quietly", "close_stream",
           "is_local", "open_url"]


def open_url(url: str) -> Any:
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


def close_stream(stream: Any) -> None:
    # A pipe: command's exit status is only checked on close (webdataset's Pipe raises).
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def close_quietly(stream: Any) -> None:
    try:
        close_stream(stream)
    except Exception:  # the original error is what gets reported
        return


def is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")
