"""OpenVINO's CPU plugin swaps the compiling thread's signal stack and puts back a stale one
when Cores die in the order they were made; picosparse's compiles keep the thread's own
(picosparse/deploy/sigstack.py). Without that a long process that had run two OpenVINO models
and a Paddle DataLoader died with SIGSEGV when its next child process exited."""

import subprocess
import sys
import textwrap

import deploy_helpers as h
from picosparse.deploy import sigstack

SCRIPT = textwrap.dedent("""
    import gc, signal, subprocess, sys
    from picosparse.deploy.runtimes import OpenVINORunner
    a = OpenVINORunner(sys.argv[1], 1)
    b = OpenVINORunner(sys.argv[1], 1)
    del a; gc.collect()
    del b; gc.collect()   # the order that left the thread on a freed stack
    signal.signal(signal.SIGCHLD, lambda *_: None)  # as Paddle's DataLoader installs one
    subprocess.run(["true"])
    print("alive")
""")


def test_compiles_leave_the_threads_signal_stack_alone():
    model = h.exported("dense", postprocess=False)
    before = sigstack.current()
    from picosparse.deploy.runtimes import OpenVINORunner
    runners = [OpenVINORunner(model, 1), OpenVINORunner(model, 1, "bf16")]
    assert sigstack.current() == before
    del runners


def test_two_models_then_a_signal_handler_does_not_crash():
    model = h.exported("dense", postprocess=False)
    for flags in ([], ["-X", "faulthandler"]):  # pytest runs with faulthandler's stack on
        p = subprocess.run([sys.executable, *flags, "-c", SCRIPT, str(model)],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0 and p.stdout.strip() == "alive", (flags, p.returncode,
                                                                   p.stderr[-1500:])
