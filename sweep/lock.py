"""File locks of the sweep: one driver per sweep folder, one creator of a new MLflow store at a time.

Both are `fcntl.flock` locks: the kernel releases them when their process ends in any way (a clean
exit, a signal, SIGKILL, a crash), so a lock whose owner is gone is free and the next driver takes it
over; the lock file only says who holds it (host, PID, start time) for the line that refuses a second
driver. A lock file on a network file system is as good as its flock there (NFSv4 and Lustre share
it between hosts).
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from models.config import ConfigError

DRIVER_LOCK = "driver.lock"
_held: dict[Path, int] = {}  # lock file -> file descriptor, for the locks this process holds


class Locked(ConfigError):
    """Another driver runs the sweep; the message names it."""


def _flock(path: Path, blocking: bool) -> int | None:
    """A descriptor of `path` (created if absent) holding its exclusive flock, or None when another process
    holds it (never, when `blocking`). The file is opened again when it was replaced while we waited."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the holder we waited for may have removed the file: lock the one now at `path`
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def owner(path: Path) -> str:
    """Who holds the lock, as its file says: 'PID 123 on host h since 2026-11-29 20:41:03 UTC'."""
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info["since"]))
        return f"PID {info['pid']} on host {info['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"


def hold_sweep(sweep_dir: Path) -> Path:
    """Take the driver lock of `sweep_dir` for the rest of this process (a second call is a no-op), or raise
    Locked naming the driver that holds it. Returns the lock file."""
    path = Path(sweep_dir) / DRIVER_LOCK
    if path in _held:
        return path
    fd = _flock(path, blocking=False)
    if fd is None:
        raise Locked(f"--resume {sweep_dir}: another driver runs this sweep ({owner(path)}; lock {path}); "
                     "allowed: one driver per sweep folder: wait for it to end, or stop it (its lock is "
                     "released when it exits)")
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode())
    _held[path] = fd
    return path


def release_sweep(sweep_dir: Path) -> None:
    """Give the driver lock of `sweep_dir` back (the file is removed while still locked, so that no
    waiting process locks a file that is gone)."""
    fd = _held.pop(Path(sweep_dir) / DRIVER_LOCK, None)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(sweep_dir) / DRIVER_LOCK)
        os.close(fd)


@atexit.register
def _release_all() -> None:
    """On a normal exit (a refusal after the lock was taken included) the lock files go too; on any other
    end the kernel releases the flocks and the next driver takes the stale files over."""
    for path in list(_held):
        release_sweep(path.parent)


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold the flock of `path` (waiting for it) for the duration of the block; the file stays (it is empty)."""
    fd = _flock(Path(path), blocking=True)
    try:
        yield
    finally:
        os.close(fd)
