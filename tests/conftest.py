"""Shared fixtures: a tiny generated dataset and the demo config shrunk for tests."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_CFG = ROOT / "configs" / "demo" / "picodet_demo.yml"
DEMO_PRUNE = ROOT / "configs" / "demo" / "prune_demo_75.yml"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """32 train / 8 val images of 96 px, made once per test session."""
    from picosparse.data.synth import DataParams, synthesize
    out = tmp_path_factory.mktemp("data") / "shapes"
    synthesize(out, DataParams(seed=0, num_train=32, num_val=8, size=96))
    return out


def tiny_overrides(data_dir, epochs=2):
    """-o overrides that make the demo config train in seconds on `data_dir`."""
    return [f"TrainDataset.dataset_dir={data_dir}", f"EvalDataset.dataset_dir={data_dir}",
            f"epoch={epochs}", "TrainReader.batch_size=4", "EvalReader.batch_size=4",
            "TrainReader.batch_transforms.0.BatchRandomResize.target_size=[64,96]",
            "EvalReader.sample_transforms.1.Resize.target_size=[96,96]",
            f"LearningRate.schedulers.0.max_epochs={epochs}", "log_iter=1", "snapshot_epoch=1"]


# ---------------------------------------------------------------- pipeline tests (`run`)
# test_pipeline.py / test_pipeline_safety.py: `pytestmark = pytest.mark.usefixtures("at_root")`
# and `from conftest import invoke, run_ok, error_line, manifest`

@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # pipelines name configs relative to the repo root


@pytest.fixture
def fakes(monkeypatch):
    from pipeline_fakes import Fakes
    return Fakes().install(monkeypatch)


def invoke(*args):
    from click.testing import CliRunner
    from picosparse.cli import cli
    return CliRunner().invoke(cli, ["-q", *map(str, args)], catch_exceptions=True)


def run_ok(*args):
    r = invoke("run", *args)
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def error_line(r):
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


def manifest(run_dir):
    import json
    return json.loads((Path(run_dir) / "manifest.json").read_text())
