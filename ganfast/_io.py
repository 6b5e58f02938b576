"""Atomic file output: a file is either absent or complete, never half-written.

Everything ganfast writes that a later run relies on (checkpoints, sample shards) goes through
``atomic_write``: the bytes go to a hidden temporary file in the same directory, are flushed and fsynced,
and the temporary file is renamed over the target (``os.replace`` is atomic on POSIX and Windows).
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import BinaryIO, Callable

TMP_MARK = ".tmp-"


def _host() -> str:
    """This machine's name as it appears in temporary file names (no '-', which separates it from the pid)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def temp_path(path: Path) -> Path:
    """The hidden temporary sibling of ``path`` used while writing it: unique per process and machine (ranks on
    several machines may share a folder), ``.<name>.tmp-<host>-<pid>``."""
    return path.with_name(f".{path.name}{TMP_MARK}{_host()}-{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], exclusive: bool = False) -> Path:
    """Calls ``write(fileobj)`` on a temporary file, then renames it to ``path``; on any error the temporary
    file is removed and ``path`` is left as it was. Parent directories are created. Returns ``path``.
    ``exclusive``: the finished file is hard-linked to ``path`` instead, which raises FileExistsError when
    ``path`` exists (of several writers, exactly one creates it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:  # e.g. a full disk: same errno (and OSError subclass), with the file named
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"could not write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Creates the output directory ``path`` if needed, checks that it is writable and removes the temporary
    files killed runs left in it; a clear ``OSError`` when it cannot be used."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the output directory {path}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"the output directory {path} is not writable")
    remove_stale_temps(path)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Deletes the temporary files that killed runs left under ``directory``: those written on this machine by a
    process that no longer exists (another machine's files, and a live writer's, are kept). Returns how many
    were removed."""
    removed = 0
    for tmp in Path(directory).rglob(f".*{TMP_MARK}*"):
        host, _, pid = tmp.name.rpartition(TMP_MARK)[2].rpartition("-")
        if tmp.is_file() and host in ("", _host()) and pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
