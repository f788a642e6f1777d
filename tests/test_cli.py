"""The CLI's parameters come from the steps' dataclasses (picosparse/params.py): one default
per parameter, the same on the command line and in a pipeline; a bad value is named by the
flag the user typed; --json FILE (or '-') everywhere."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from picosparse import params
from picosparse.cli import cli
from picosparse.errors import ConfigError, ParamError
from picosparse.pipeline.schema import KINDS

from conftest import DEMO_CFG


def run(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def one_error(r):
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


# ------------------------------------------------------------------ one declaration

COMMANDS = {"train": "train", "eval": "eval", "export": "export", "opt": "opt",
            "quant": "quant", "qat": "qat", "data": "data synth"}


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_pipeline_keys_and_cli_flags_come_from_one_dataclass(kind):
    cls = KINDS[kind].params.cls
    both = [(f, s) for f, s in params.specs(cls) if s.only is None]
    assert both, cls
    help_text = run(*COMMANDS[kind].split(), "--help").output
    for f, spec in both:
        assert f.name in KINDS[kind].params  # the pipeline key
        assert params.flag_of(cls, f.name) in help_text  # the flag
        d = params.default_of(cls, f.name)
        p = KINDS[kind].params[f.name]
        assert p.default == (d if spec.pipeline is None else spec.pipeline["default"])


def test_defaults_are_the_dataclass_defaults_on_both_sides():
    from picosparse.steps.lite import OptParams
    from picosparse.steps.quant import QuantParams
    cmd = cli.commands["opt"]
    got = {o.name: o.default for o in cmd.params}
    assert got["sparse_threshold"] == OptParams().sparse_threshold == \
        KINDS["opt"].params["sparse_threshold"].default
    assert got["valid_targets"] == "arm" and got["sparse"] is True
    q = {o.name: o.default for o in cli.commands["quant"].params}
    assert q["calib_images"] == QuantParams().calib_images == 32
    assert {o.name: o.default for o in cli.commands["export"].params}["calib_images"] == 32


def test_instances_from_cli_kwargs_and_from_pipeline_mappings():
    from picosparse.steps.train import TrainParams
    kw = {"pretrained": None, "from_scratch": True, "eval": False, "resume": False,
          "seed": None, "device": "cpu", "nproc": 1, "other": 7}
    p = params.from_cli(TrainParams, kw)
    assert p.from_scratch and p.device == "cpu" and p.seed is None
    assert kw == {"other": 7}  # the command's own arguments are left
    # pipeline: unknown keys (config, overrides, ...) ignored, CLI-only fields at default
    p = params.from_mapping(TrainParams, {"config": "x.yml", "from_scratch": True, "seed": 3,
                                          "eval": True, "pretrained": None}, resume=True)
    assert (p.seed, p.eval, p.resume, p.device, p.nproc) == (3, True, True, "auto", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1


def test_param_error_spellings():
    from picosparse.steps.lite import OptParams
    with pytest.raises(ParamError) as e:
        OptParams(sparse_threshold=0)
    err = e.value
    assert isinstance(err, ConfigError) and err.field == "sparse_threshold"
    assert str(err) == "sparse_threshold 0: must be in (0, 1]"
    assert err.render(lambda n: params.flag_of(OptParams, n)) == \
        "--sparse-threshold 0: must be in (0, 1]"
    assert err.render(lambda n: n, where="p.yml: steps.opt") == \
        "p.yml: steps.opt.sparse_threshold: must be in (0, 1] (got 0)"


# ------------------------------------------------------------------ errors name the flag

def test_cli_names_the_flag_it_was_given(tmp_path):
    assert one_error(run("opt", "--model-dir", tmp_path, "--out", tmp_path / "x.nb",
                         "--sparse-threshold", "1.5")) == \
        "Error: --sparse-threshold 1.5: must be in (0, 1]"
    assert one_error(run("opt", "--model-dir", tmp_path, "--out", tmp_path / "x.nb",
                         "--fp16")).startswith("Error: --fp16 with --sparse: Paddle-Lite's ")
    assert one_error(run("opt", "--model-dir", tmp_path, "--out", tmp_path / "x.nb",
                         "--valid-targets", "mips", "--no-sparse")) == \
        "Error: --valid-targets mips: expected a comma list of arm, x86, opencl"
    assert one_error(run("data", "synth", "--out", tmp_path / "d", "--num-val", "0")) == \
        "Error: --num-val 0: must be >= 1"
    assert one_error(run("train", "-c", DEMO_CFG, "--from-scratch", "--pretrained", "w")) == \
        "Error: --from-scratch with --pretrained: they exclude each other"
    assert one_error(run("train", "-c", DEMO_CFG, "--nproc", "0")) == \
        "Error: --nproc 0: must be >= 1"
    assert one_error(run("qat", "-c", DEMO_CFG, "--weights", "w", "--out", tmp_path / "q",
                         "--input-size", "100")) == \
        "Error: --input-size 100: must be a positive multiple of 32 (PicoDet's largest FPN stride)"
    assert one_error(run("quant", "--model-dir", tmp_path, "--algo", "best")) == \
        "Error: --algo best: must be one of KL, hist, avg, mse, emd, abs_max"
    assert one_error(run("export", "-c", DEMO_CFG, "--weights", "w", "--out", tmp_path / "e",
                         "--int8", "--calib-images", "0")) == \
        "Error: --calib-images 0: must be >= 1"
    assert one_error(run("infer", "--model", tmp_path, "--image", tmp_path,
                         "--threads", "0")) == "Error: --threads 0: must be >= 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before writing


def test_error_raised_inside_a_step_names_the_flag(tiny_data):
    # the config has no pretrain_weights: train's own check, spelled as the CLI's flags
    assert one_error(run("train", "-c", DEMO_CFG, "-o",
                         f"TrainDataset.dataset_dir={tiny_data}")) == (
        "Error: --pretrained is required (converged dense weights; a path or URL) unless the "
        "config sets pretrain_weights or --from-scratch is given")


# ------------------------------------------------------------------ --json FILE everywhere

def test_json_is_a_file_or_stdout_in_every_command():
    for name, cmd in [*cli.commands.items(), *cli.commands["data"].commands.items()]:
        for o in getattr(cmd, "params", []):
            if "--json" in getattr(o, "opts", []):
                assert not o.is_flag and o.metavar == "FILE", name


def test_data_check_json_to_file_and_stdout(tiny_data, tmp_path):
    args = ["data", "check", "--ann", tiny_data / "val.json", "--images", tiny_data / "val"]
    r = run(*args, "--json", tmp_path / "check.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "check.json").read_text())["ok"] is True
    assert "ok: no errors" in r.output  # the table still prints when --json goes to a file
    r = run(*args, "--json", "-")
    assert r.exit_code == 0 and json.loads(r.output)["counts"]["images"] == 8
