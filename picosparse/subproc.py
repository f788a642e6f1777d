"""Child processes: `run` a tool with a bounded wait (on timeout its whole process group is
killed), `call_python` a function in a fresh Python process.

`subprocess.run(..., timeout=)` kills only the direct child; a grandchild (a shell's
command, a compiler's cc1plus) keeps running and can hold the output pipes open, so the wait
never ends. Here the child gets its own session and the group goes on timeout or Ctrl-C.
"""

import os
import signal
import subprocess


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _text(data):
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def run(cmd, timeout, **kwargs):
    """-> CompletedProcess with text stdout/stderr; raises subprocess.TimeoutExpired (its
    `output` holds what was printed so far) after killing the process group."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            _kill_group(proc)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a process outside the group holds the pipes
                out, err = e.output, e.stderr
            raise subprocess.TimeoutExpired(cmd, timeout, output=_text(out),
                                            stderr=_text(err)) from None
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class ChildCrashed(Exception):
    """A child Python process ended without a result (crash, signal, exit code)."""

    def __init__(self, returncode, stderr):
        self.returncode = returncode
        self.lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
        super().__init__(f"{self.why}: {self.detail()}")

    @property
    def why(self):
        return f"signal {-self.returncode}" if self.returncode < 0 else \
            f"exit code {self.returncode}"

    def detail(self, prefer=()):
        """The last stderr line (the last one holding a word of `prefer`, if any), <= 200."""
        hits = [ln for ln in self.lines if any(w in ln for w in prefer)]
        line = (hits or self.lines or ["no output"])[-1]
        return line[:200]


def call_python(target, kwargs, timeout):
    """`target(**kwargs)` ("package.module:function") in a fresh Python process: for work
    that must not share this process (a runtime that can crash it, paddle already imported,
    a second `paddle.jit.to_static`). kwargs and the result travel as JSON (Paths as text).

    A PicosparseError raised there is raised here, same class and message; a crash raises
    ChildCrashed; no answer within `timeout` s raises subprocess.TimeoutExpired (the child's
    process group killed)."""
    import json
    import sys
    import tempfile
    from pathlib import Path

    from picosparse import errors
    with tempfile.TemporaryDirectory(prefix="picosparse-child-") as tmp:
        spec, result = Path(tmp) / "call.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"target": target, "kwargs": kwargs, "result": str(result)},
                                   default=str))
        r = run([sys.executable, "-m", "picosparse.subproc", str(spec)], timeout=timeout)
        if r.returncode != 0 or not result.is_file():
            raise ChildCrashed(r.returncode, r.stderr)
        got = json.loads(result.read_text())
    if "error" in got:
        cls = getattr(errors, got["type"], errors.PicosparseError)
        raise (cls if isinstance(cls, type) and issubclass(cls, errors.PicosparseError)
               else errors.PicosparseError)(got["error"])
    return got["result"]


def _child(spec_file):
    """The child side of call_python."""
    import importlib
    import json

    from picosparse.errors import PicosparseError
    with open(spec_file) as f:
        spec = json.load(f)
    module, name = spec["target"].split(":")
    try:
        out = {"result": getattr(importlib.import_module(module), name)(**spec["kwargs"])}
    except PicosparseError as e:
        out = {"error": str(e), "type": type(e).__name__}
    with open(spec["result"], "w") as f:
        json.dump(out, f, default=str)


if __name__ == "__main__":
    import sys
    _child(sys.argv[1])
