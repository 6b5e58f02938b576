"""Atomic file output: a file is either absent or complete, never half-written.

Everything ganfast writes that a later run relies on (checkpoints, sample shards) goes through
``atomic_write``: the bytes go to a hidden temporary file in the same directory, are flushed and fsynced,
and the temporary file is renamed over the target (``os.replace`` is atomic on POSIX and Windows).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

TMP_MARK = ".tmp-"


def temp_path(path: Path) -> Path:
    """The hidden temporary sibling of ``path`` used while writing it (unique per process)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Calls ``write(fileobj)`` on a temporary file, then renames it to ``path``; on any error the temporary
    file is removed and ``path`` is left as it was. Parent directories are created. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
    """Deletes the temporary files that killed runs left under ``directory`` (those whose writing process no
    longer exists on this host; a concurrent writer's files are kept). Returns how many were removed."""
    removed = 0
    for tmp in Path(directory).rglob(f".*{TMP_MARK}*"):
        pid = tmp.name.rpartition(TMP_MARK)[2]
        if tmp.is_file() and pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
