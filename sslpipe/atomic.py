"""Every file sslpipe writes is written whole or not at all, with the user's umask, and a full
disk is said in one line that names the file.

:func:`atomic_write` creates the file under a temporary name beside it (``.NAME.PID.tmp``),
gives it the mode a plain ``open`` would (``0o666 & ~umask``: ``tempfile.mkstemp``'s 0600 left
reports and charts unreadable to the group), and renames it into place; on any failure the
temporary is removed. A process killed mid-write (SIGKILL, power loss) cannot remove it:
:func:`remove_temporaries` tidies such leftovers when a job resumes in (or starts again in) its
directory. A write that fails for lack of space (``ENOSPC``, ``EDQUOT``, or
torch's "unexpected pos" when its zip writer runs out) raises :class:`WriteError` naming the
file and the space left, so the run can be resumed once space is freed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["WriteError", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "remove_temporaries", "temporary_path", "umask_mode", "write_error"]

_UMASK = os.umask(0)
os.umask(_UMASK)
_FULL = (errno.ENOSPC, errno.EDQUOT)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")  # what temporary_path makes


class WriteError(OSError):
    """A file could not be written (the message names it, why, and the space left)."""


def umask_mode() -> int:
    """The mode a new file gets from ``open``: ``0o666`` less the process umask."""
    return 0o666 & ~_UMASK


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Make ``path`` by calling ``write(tmp)`` on a temporary path beside it, then renaming.

    Raises:
        WriteError: the disk is full (or a quota is reached) while writing.
        Exception: whatever ``write`` raises otherwise; the temporary is gone either way.
    """
    path = os.fspath(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, Exception) and _disk_full(err):
            raise write_error(path, err) from err
        raise


def temporary_path(path: str | os.PathLike[str]) -> str:
    """The temporary :func:`atomic_write` fills for ``path``: ``DIR/.NAME.PID.tmp``."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    return os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")


def remove_temporaries(directory: str | os.PathLike[str], *, exclusive: bool = False
                       ) -> list[str]:
    """Remove what :func:`atomic_write` left in ``directory`` when its process was killed.

    Call it when this process has no atomic write in flight in ``directory`` (a job starting
    or resuming). A temporary (``.NAME.PID.tmp``) is removed when its process is gone, or is
    this one; one whose PID is another running process is kept (another writer may be at
    work), unless ``exclusive``: the caller owns the directory (``sslpipe shard --out``), so
    every temporary in it is stale, even where a new process reuses a dead writer's PID (as
    in containers, where PIDs start again from 1). Files of other names are never touched.

    Returns:
        the paths removed.
    """
    folder = os.fspath(directory)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    removed = []
    for name in sorted(names):
        match = _TEMPORARY.match(name)
        if match is None or (not exclusive and _running(int(match.group("pid")))):
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


def _running(pid: int) -> bool:
    """True when ``pid`` is a running process other than this one (where that cannot be
    told, as on Windows, it is taken to be running)."""
    if pid == os.getpid():
        return False
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (synced to disk before the rename)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_error(path: str | os.PathLike[str], err: Exception) -> WriteError:
    """A :class:`WriteError` for ``path``: what failed, and the free space on its disk."""
    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:,.0f} MB free there"
    except OSError:
        free = "free space unknown"
    full = _disk_full(err)
    what = "the disk is full" if full else f"{type(err).__name__}: {err}"
    code = errno.ENOSPC if full else getattr(err, "errno", None) or errno.EIO
    hint = "; free some space and run again (--resume continues a shard or train run)"
    return WriteError(code, f"cannot write {os.fspath(path)}: {what} ({free}){hint}")


def _disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in _FULL:
        return True
    # torch.save's zip writer reports a short write as "unexpected pos" / "file write failed"
    text = str(err)
    return isinstance(err, RuntimeError) and ("unexpected pos" in text
                                              or "file write failed" in text)
