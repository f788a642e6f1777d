"""Run a tool with a bounded wait: on timeout its whole process group is killed.

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
