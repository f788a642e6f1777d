"""The x86 op library's build and cache: no compiler needed once it is cached, one cache env
var for every cache, a bounded compiler run with a one-line error."""

import os
import time
from pathlib import Path

import pytest

from picosparse import weights
from picosparse.errors import StackError
from picosparse.x86 import build


@pytest.fixture
def no_compiler(tmp_path, monkeypatch):
    """A machine without g++: PATH has nothing in it, CXX is unset."""
    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CXX", raising=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv("PICOSPARSE_CACHE_DIR", raising=False)
    monkeypatch.setenv("PICOSPARSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cached_library_is_used_without_a_compiler(cache, no_compiler):
    key, _ = build.build_key()
    lib = cache / f"ops-{key}" / build.LIB_NAME
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"\x7fELF prebuilt")
    assert build.library_path() == lib
    from picosparse.x86 import runtime
    assert runtime.library() == lib  # what load_model falls back to for a foreign bundle


def test_without_compiler_and_cache_one_line_error(cache, no_compiler):
    with pytest.raises(StackError, match=r"^no C\+\+ compiler found \(set CXX or install g\+\+\)"):
        build.library_path()


def test_one_cache_folder_for_weights_and_the_op(tmp_path, monkeypatch):
    monkeypatch.delenv("PICOSPARSE_CACHE_DIR", raising=False)
    monkeypatch.setenv("PICOSPARSE_CACHE", str(tmp_path / "c"))
    assert weights.cache_dir() == build.cache_root() == tmp_path / "c"
    monkeypatch.delenv("PICOSPARSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == build.cache_root() == tmp_path / "xdg" / "picosparse"
    monkeypatch.setenv("PICOSPARSE_CACHE_DIR", str(tmp_path / "old"))  # the older name
    assert weights.cache_dir() == build.cache_root() == tmp_path / "old"


def _fake_compiler(tmp_path, body):
    cxx = tmp_path / "fake-g++"
    cxx.write_text("#!/bin/sh\n" + body)
    cxx.chmod(0o755)
    return cxx


def test_compiler_that_hangs_is_stopped(cache, tmp_path, monkeypatch):
    pidfile = tmp_path / "cc1plus.pid"
    cxx = _fake_compiler(tmp_path, 'if [ "$1" = --version ]; then echo "g++ (fake) 1"; exit 0; fi\n'
                                   f'sleep 60 &\necho $! > {pidfile}\nwait\n')
    monkeypatch.setenv("CXX", str(cxx))
    monkeypatch.setattr(build, "BUILD_TIMEOUT", 1, raising=False)
    t0 = time.monotonic()
    with pytest.raises(StackError) as e:
        build.library_path(verbose=False)
    assert time.monotonic() - t0 < 15
    assert str(e.value) == (f"building the sparse op with {cxx} did not finish within 1 s and "
                            "was stopped")
    _assert_gone(int(pidfile.read_text()))  # the compiler's own child too
    key, _ = build.build_key()
    assert not list((cache / f"ops-{key}").iterdir())  # no library, no temp file


def test_compiler_version_that_hangs_is_stopped(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(_fake_compiler(tmp_path, "sleep 60\n")))
    monkeypatch.setattr(build, "VERSION_TIMEOUT", 1, raising=False)
    with pytest.raises(StackError, match=r"`--version` did not answer within 1 s$"):
        build.library_path(verbose=False)


def _assert_gone(pid):
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return  # killed, waiting for init to reap it
        time.sleep(0.1)
    os.kill(pid, 9)
    raise AssertionError(f"process {pid} still runs")
