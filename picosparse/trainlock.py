"""One training per output folder: an exclusive fcntl (POSIX record) lock on OUT/.train.lock.

The kernel drops the lock when its holder exits, however it exits (SIGKILL, power loss), so a
stale lock never blocks a `--resume`. A POSIX lock belongs to the process, not to the open
file: the data loader's worker processes, forked with the descriptor, do not hold it after the
trainer is killed (an flock would stay held until the last of them exits). The lock file
itself stays; it holds the holder's pid.
"""

import contextlib
import errno
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


_HELD = set()  # lock files this process holds: POSIX locks do not conflict within a process,
# and closing any descriptor of the file would drop them


@contextlib.contextmanager
def hold(out):
    """Hold OUT's lock for the block; DataError at once when another process (or another
    training in this one) holds it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = (out / NAME).resolve()
    if path in _HELD:
        raise DataError(f"--out {out}: another training is writing to this folder (pid "
                        f"{os.getpid()}); wait for it to end or choose another --out")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise _busy(out, fd) from None
        _HELD.add(path)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            _HELD.discard(path)
    finally:
        os.close(fd)  # releases the lock


def check_free(out):
    """DataError now if a training holds OUT's lock (taken and released at once)."""
    if (Path(out) / NAME).exists() or (Path(out) / NAME).resolve() in _HELD:
        with hold(out):
            pass
