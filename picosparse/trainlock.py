"""One training per output folder: an exclusive fcntl lock on OUT/.train.lock.

The kernel drops the lock when its holder exits, however it exits (SIGKILL, power loss), so a
stale lock never blocks a `--resume`. The lock file itself stays; it holds the holder's pid.
"""

import contextlib
import fcntl
import os
from pathlib import Path

from picosparse.errors import DataError

NAME = ".train.lock"


def _busy(out, fd):
    try:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        pid = ""
    who = f" (pid {pid})" if pid.isdigit() else ""
    return DataError(f"--out {out}: another training is writing to this folder{who}; wait for "
                     "it to end or choose another --out")


@contextlib.contextmanager
def hold(out):
    """Hold OUT's lock for the block; DataError at once when another process holds it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(out, fd) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_free(out):
    """DataError now if a training holds OUT's lock (taken and released at once)."""
    if (Path(out) / NAME).exists():
        with hold(out):
            pass
