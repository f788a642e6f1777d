"""deploy/timing.py: rounds, the paired speed-up `picosparse bench` and benchmarks/ report, and
the child-process helper they run in (subproc.call_python)."""

import statistics
import subprocess
import time

import numpy as np
import pytest

from picosparse import subproc
from picosparse.deploy import timing
from picosparse.errors import ConfigError


def test_rounds_rotate_who_goes_first_and_take_the_median():
    calls = []
    runs = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    got = timing.time_rounds(runs, rounds=3, iters=2, warmup=1, rewarm=True)
    # warm-up a, b; then per round and model: one re-warm + 2 timed runs; first model rotates
    assert "".join(calls) == "ab" + "aaabbb" + "bbbaaa" + "aaabbb"
    assert [len(v) for v in got.wall.values()] == [3, 3]
    assert all(ms >= 0 for v in got.cpu.values() for ms in v)


def test_a_round_is_the_median_of_its_runs():
    sleeps = iter([0.001, 0.030, 0.002])  # one slow run in the round: not its value
    got = timing.time_rounds({"m": lambda: time.sleep(next(sleeps))}, rounds=1, iters=3)
    assert 1.5 < got.wall["m"][0] < 20


def test_speedup_is_the_median_of_paired_ratios():
    base, other = [10.0, 20.0, 12.0, 40.0], [5.0, 20.0, 4.0, 10.0]  # ratios 2, 1, 3, 4
    got = timing.paired_speedup(base, other)
    assert got["median"] == 2.5  # the ratio of medians would be 16 / 7.5 = 2.13
    assert got["p25"] == pytest.approx(np.percentile([2, 1, 3, 4], 25))
    assert got["p75"] == pytest.approx(np.percentile([2, 1, 3, 4], 75))
    assert timing.paired_speedup(base, base)["median"] == 1.0


def test_summary():
    s = timing.summary([3.0, 1.0, 2.0, 10.0])
    assert s == {"median": 2.5, "p90": 10.0, "mean": 4.0, "min": 1.0, "max": 10.0}
    assert timing.summary([7.0])["p90"] == 7.0 == statistics.median([7.0])


def test_child_result_and_user_errors_come_back():
    assert subproc.call_python("picosparse.sparsity.magnitude:zero_count",
                               {"ratio": 0.75, "n": 196}, 120) == 147
    with pytest.raises(ConfigError) as e:  # the same class and message
        subproc.call_python("picosparse.steps.export:check_input_size", {"size": 33}, 120)
    assert str(e.value) == "--input-size 33: must be a positive multiple of 32 (PicoDet's " \
        "largest FPN stride)"


def test_child_crash_and_hang():
    with pytest.raises(subproc.ChildCrashed) as e:
        subproc.call_python("os:abort", {}, 120)
    assert e.value.why == "signal 6"
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):  # the child and its own child are stopped
        subproc.call_python("subprocess:run", {"args": ["sleep", "60"]}, 2)
    assert time.monotonic() - t0 < 20
