"""Write-then-rename helpers: an output path either holds a complete result or nothing.

The temp file (or every file of a temp folder) is fsynced before the rename and the parent
folder after it, so a power loss leaves the old result or the new one, never an empty file
under the final name.
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_file(path):
    """Flush a file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    """Flush a folder's entries (a rename or a new file in it) to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # a filesystem that cannot open folders has nothing to flush
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and platforms) refuse fsync on a folder: best effort
    finally:
        os.close(fd)


def fsync_tree(root):
    """fsync every file and folder under `root` (files first, then their folders)."""
    for d, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(d, name)
            if not os.path.islink(p):
                fsync_file(p)
        fsync_dir(d)


@contextlib.contextmanager
def atomic_path(dest, durable=True):
    """Yield a temp path beside `dest`; rename it onto `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make results private
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, dest)
        if durable:
            fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(dest, durable=True):
    """Yield a temp directory beside `dest`; it replaces `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make results private
    try:
        yield tmp
        if durable:
            fsync_tree(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            if durable:
                fsync_dir(dest.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
            if durable:
                fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(dest, text, durable=True):
    with atomic_path(dest, durable) as tmp:
        tmp.write_text(text)


def write_json(dest, obj, durable=True):
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", durable)
