"""Keep the thread's signal stack across OpenVINO compiles.

OpenVINO's CPU plugin (2026.4) installs a signal stack of its own on the thread that compiles a
model, and when its Core is destroyed puts back the one it found then. Two Cores destroyed in
the order they were made leave the thread on the first one's freed stack; the next Python
signal handler (CPython installs them with SA_ONSTACK: a child's SIGCHLD under Paddle's
DataLoader, Ctrl-C) then kills the process with SIGSEGV. Every compile in picosparse runs
inside `kept()`, which puts the thread's own stack back at once, so every Core finds, and
later restores, a stack that stays valid.
"""

import contextlib
import ctypes
import gc
import sys


class _Stack(ctypes.Structure):  # stack_t
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int),
                ("ss_size", ctypes.c_size_t)]


def _sigaltstack():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None


def current():
    """(address, flags, size) of the calling thread's signal stack, or None off Linux."""
    fn = _sigaltstack()
    st = _Stack()
    if fn is None or fn(None, ctypes.byref(st)) != 0:
        return None
    return st.ss_sp or 0, st.ss_flags, st.ss_size


@contextlib.contextmanager
def kept(collect=False):
    """Run the block, then give the thread back the signal stack it had before. collect:
    also collect garbage first (Cores a library made and dropped inside the block die
    there, restoring their stacks before ours is put back)."""
    fn = _sigaltstack()
    old = _Stack()
    if fn is None or fn(None, ctypes.byref(old)) != 0:
        yield
        return
    try:
        yield
    finally:
        if collect:
            gc.collect()
        old.ss_flags &= ~1  # SS_ONSTACK is a status bit, not a request
        fn(ctypes.byref(old), None)
