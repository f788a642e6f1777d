"""`picosparse env`: the Paddle build, its GPUs, what --device auto picks, one Paddle wheel."""

import json

from click.testing import CliRunner

from picosparse import envcheck
from picosparse.cli import cli


def test_device_report_for_each_build():
    cpu = envcheck.device_report({"cuda_build": False, "cuda_version": None, "gpus": 0})
    assert cpu == {"paddle_build": "CPU", "gpus": 0, "auto": "cpu",
                   "auto_reason": "auto: this Paddle build has no CUDA"}
    gpu = envcheck.device_report({"cuda_build": True, "cuda_version": "12.0", "gpus": 2})
    assert (gpu["paddle_build"], gpu["auto"]) == ("CUDA 12.0", "gpu:0")
    blind = envcheck.device_report({"cuda_build": True, "cuda_version": "12.0", "gpus": 0})
    assert blind["auto"] == "cpu" and "no GPU is visible" in blind["auto_reason"]
    assert envcheck.device_report(None) is None


def test_env_json_on_this_machine(monkeypatch):
    r = CliRunner().invoke(cli, ["env", "--json", "-"])
    rep = json.loads(r.output)
    assert r.exit_code == (0 if rep["ok"] else 1)
    one = next(c for c in rep["checks"] if c["name"] == "one Paddle wheel")
    assert one["ok"] and one["detail"] == "paddlepaddle 2.6.2"  # `make install`'s CPU build
    assert rep["device"] == {"paddle_build": "CPU", "gpus": 0, "auto": "cpu",
                             "auto_reason": "auto: this Paddle build has no CUDA"}
    # both builds installed would shadow each other: the check fails and names them
    real = envcheck.paddle_env.version
    monkeypatch.setattr(envcheck.paddle_env, "version",
                        lambda d: "2.6.2" if d == "paddlepaddle-gpu" else real(d))
    two = next(c for c in envcheck.report()["checks"] if c["name"] == "one Paddle wheel")
    assert not two["ok"] and two["detail"] == "paddlepaddle 2.6.2, paddlepaddle-gpu 2.6.2"
