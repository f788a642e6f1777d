"""picosparse.atomic: results are flushed to the disk before and after the rename, so a power
loss leaves the old result or the new one under the final name, never an empty file."""

import os
from pathlib import Path

import pytest

from picosparse import atomic


@pytest.fixture
def log(monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_file_is_flushed_before_the_rename_and_its_folder_after(tmp_path, log):
    dest = tmp_path / "out.json"
    atomic.write_json(dest, {"a": 1})
    (_, tmp), (_, src, dst), (_, folder) = log
    assert tmp == src and Path(src).parent == tmp_path and dst == str(dest)
    assert folder == str(tmp_path)
    assert dest.read_text() == '{\n  "a": 1\n}\n'


def test_folder_is_flushed_whole_before_the_rename(tmp_path, log):
    dest = tmp_path / "step"
    with atomic.atomic_dir(dest) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"x")
        (tmp / "a.txt").write_text("a")
    renamed = next(i for i, e in enumerate(log) if e[0] == "replace")
    flushed = {e[1] for e in log[:renamed]}
    assert {str(tmp / "sub" / "w.bin"), str(tmp / "a.txt"), str(tmp / "sub"), str(tmp)} <= flushed
    assert log[renamed + 1:] == [("fsync", str(tmp_path))]
    assert (dest / "sub" / "w.bin").read_bytes() == b"x"


def test_not_durable_skips_the_flush(tmp_path, log):
    atomic.write_text(tmp_path / "memo.json", "{}", durable=False)
    assert [e[0] for e in log] == ["replace"]
