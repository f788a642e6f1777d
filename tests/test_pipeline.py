"""`picosparse run`: validation, caching, failures, --force/--from/--only, the manifest.

The heavy steps are replaced by contract-shaped fakes (tests/pipeline_fakes.py) that write
real files; the data step (picosparse data synth) and the report step are the real ones.
"""

import fcntl
import json
import re
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from picosparse.cli import cli
from picosparse.pipeline import load_pipeline, plan_pipeline, run_pipeline
from picosparse.pipeline.runner import StepFailed
from picosparse.steps.report import validate
from conftest import error_line, invoke, manifest, run_ok

ROOT = Path(__file__).resolve().parents[1]
MINI = "tests/data/mini.yml"
SHIPPED = sorted((ROOT / "pipelines").glob("*.yml")) + sorted((ROOT / "tests/data").glob("*.yml"))
ALL_STEPS = {"data", "dense", "sparse75", "eval_dense", "eval_sparse75", "export_dense",
             "export_sparse75", "opt_dense", "opt_sparse75", "bench", "report"}
SPARSE_SIDE = {"sparse75", "eval_sparse75", "export_sparse75", "opt_sparse75", "bench", "report"}


pytestmark = pytest.mark.usefixtures("at_root")  # conftest.py: the fixtures and helpers


# ------------------------------------------------------------------ shipped pipelines

@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_pipeline_validates_and_dry_runs(path, tmp_path, monkeypatch):
    import urllib.request

    def no_network(*a, **k):
        raise AssertionError("a dry run must not download anything")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    header = path.read_text().split("\nname:")[0]  # the leading comment block
    assert header.startswith("#") and f"picosparse run {path.relative_to(ROOT)}" in header
    p = load_pipeline(path)
    assert p.steps and {s.kind for s in p.steps.values()} >= {"eval", "export", "opt", "bench", "report"}
    r = run_ok(path.relative_to(ROOT), "--out", tmp_path / "run", "--dry-run")
    for name in p.steps:
        assert f"{name} (" in r.output
    assert f"would run {len(p.steps)}," in r.output
    assert not (tmp_path / "run").exists(), "a dry run writes nothing"


def test_coco_pipelines_take_the_dataset_root_and_published_weights(tmp_path):
    for r in (75, 85):
        p = load_pipeline(ROOT / f"pipelines/picodet_m_320_coco_sparse{r}.yml",
                          overrides=["vars.dataset_root=/data/coco"])
        train = p.steps[f"sparse{r}"].params
        assert train["pretrained"].startswith("https://paddledet.bj.bcebos.com/models/picodet_m_320")
        assert f"prune/picodet_m_unstructured_prune_{r}.yml" in train["slim_config"]
        assert "TrainDataset.dataset_dir=/data/coco" in train["overrides"]
        assert p.steps["eval_dense"].params["weights"] == train["pretrained"]  # dense baseline


def test_demo_pipeline_shape():
    p = load_pipeline(ROOT / "pipelines/demo.yml")
    assert p.steps["dense"].params["from_scratch"] is True
    assert p.steps["dense"].params["config"] == "configs/demo/picodet_demo.yml"
    assert p.steps["sparse75"].params["slim_config"] == "configs/demo/prune_demo_75.yml"
    assert p.steps["sparse75"].params["pretrained"] == "${steps.dense.weights}"
    assert p.steps["opt_dense"].params["sparse"] is False
    assert p.steps["opt_sparse75"].params["sparse"] is True
    assert p.steps["bench"].params["threads"] == [1, 2]
    # x86: the sparse model on picosparse's op against every dense OpenVINO precision
    bench = p.steps["bench"].params
    assert bench["runtime"] == "openvino"
    assert bench["models"] == {
        "dense": "${steps.export_dense_x86.model_dir}",
        "dense_bf16": "${steps.export_dense_x86.model_dir}@bf16",
        "dense_int8_ov": "${steps.quant_dense_ov.model_dir}",
        "sparse75_x86": "${steps.x86_sparse75.out_dir}",
        "sparse75_x86_bf16": "${steps.x86_sparse75.out_dir}@bf16",
        "sparse75_block_x86_bf16": "${steps.x86_sparse75_block.out_dir}@bf16"}
    # the same GMP in 1x2 blocks, for the BF16 kernel: its accuracy cost is in the report
    assert p.steps["sparse75_block"].params["sparse_block"] == [1, 2]
    assert p.steps["sparse75_block"].params["slim_config"] == \
        p.steps["sparse75"].params["slim_config"]
    assert p.steps["eval_sparse75_block_x86_bf16"].params["model"] == \
        "${steps.x86_sparse75_block.out_dir}@bf16"
    assert p.steps["export_sparse75_x86"].params["postprocess"] is False
    assert p.steps["quant_dense_ov"].params["backend"] == "openvino"
    assert set(bench["models"]) <= set(p.steps["report"].params["variants"])
    assert list(p.steps)[-1] == "report" and list(p.steps)[0] == "data"


# ------------------------------------------------------------------ malformed files

BASE = yaml.safe_load((ROOT / MINI).read_text())


def _mutate(fn):
    doc = json.loads(json.dumps(BASE))
    fn(doc)
    return doc


MALFORMED = {
    "unknown kind": (lambda d: d["steps"]["bench"].update(kind="benchmark"),
                     r"steps\.bench\.kind: unknown step kind 'benchmark' \(kinds: data, train"),
    "unknown key": (lambda d: d["steps"]["dense"].update(seeed=1),
                    r"steps\.dense\.seeed: unknown key \(known: config, overrides"),
    "missing step": (lambda d: d["steps"]["eval_dense"].update(weights="${steps.densse.weights}"),
                     r"steps\.eval_dense\.weights: \$\{steps\.densse\.weights\} names no step 'densse'"),
    "missing output": (lambda d: d["steps"]["eval_dense"].update(weights="${steps.dense.weightz}"),
                       r"step 'dense' \(train\) has no output 'weightz' \(outputs: weights"),
    "missing required": (lambda d: d["steps"]["opt_dense"].pop("model_dir"),
                         r"steps\.opt_dense\.model_dir: is required"),
    "cycle": (lambda d: d["steps"]["dense"].update(pretrained="${steps.eval_sparse75.metrics}",
                                                   from_scratch=False),
              r"steps: cycle (\w+ -> )+\w+"),
    "self reference": (lambda d: d["steps"]["dense"].update(from_scratch=False,
                                                            pretrained="${steps.dense.weights}"),
                       r"steps\.dense: refers to its own outputs"),
    "wrong type": (lambda d: d["steps"]["bench"].update(threads="1,2"),
                   r"steps\.bench\.threads: must be a list of integers, got '1,2'"),
    "wrong item type": (lambda d: d["steps"]["bench"].update(threads=[1, "two"]),
                        r"steps\.bench\.threads\[1\]: must be an integer"),
    "bool for int": (lambda d: d["steps"]["data"].update(num_train=True),
                     r"steps\.data\.num_train: must be an integer, got True"),
    "wrong ref type": (lambda d: d["steps"]["eval_dense"].update(weights="${steps.dense.seconds}"),
                       r"steps\.eval_dense\.weights: \$\{steps\.dense\.seconds\} is a number, "
                       r"expected a path or URL"),
    "bad model precision": (lambda d: d["steps"]["bench"]["models"].update(
                                dense="${steps.export_dense.model_dir}@f16"),
                            r"steps\.bench\.models\.dense: unknown precision @f16 \(expected "
                            r"@f32 or @bf16\)"),
    "bad choice": (lambda d: d["steps"]["bench"].update(runtime="tensorrt"),
                   r"steps\.bench\.runtime: must be one of paddle, lite, openvino"),
    "unknown var": (lambda d: d["steps"]["dense"].update(config="${cfg}"),
                    r"steps\.dense: unknown var \$\{cfg\} \(vars: config, input_size\)"),
    "missing file": (lambda d: d["steps"]["sparse75"].update(slim_config="configs/nope.yml"),
                     r"steps\.sparse75\.slim_config: configs/nope\.yml does not exist"),
    "top-level key": (lambda d: d.update(stages={}),
                      r"unknown top-level key 'stages'"),
    "no steps": (lambda d: d.update(steps={}),
                 r"steps must be a non-empty mapping"),
    "two reports": (lambda d: d["steps"].update(report2=d["steps"]["report"]),
                    r"steps\.report2: only one report step"),
    "bad variant key": (lambda d: d["steps"]["report"]["variants"]["dense"].update(evl="x"),
                        r"steps\.report\.variants\.dense\.evl: unknown key"),
    "bad baseline": (lambda d: d["steps"]["report"].update(baseline="dense2"),
                     r"steps\.report\.baseline: 'dense2' is not a variant"),
    "bad config key": (lambda d: d["steps"]["sparse75"]["overrides"].append(
                           "UnstructuredPruner.ratio=1.5"),
                       r"steps\.sparse75: .*UnstructuredPruner\.ratio must be a number in \[0, 1\)"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_pipeline_rejected_before_anything_runs(case, fakes, tmp_path):
    mutate, pattern = MALFORMED[case]
    f = tmp_path / "bad.yml"
    f.write_text(yaml.safe_dump(_mutate(mutate), sort_keys=False))
    r = invoke("run", f, "--out", tmp_path / "run")
    assert r.exit_code == 2, r.output
    line = error_line(r)
    assert line.startswith(f"Error: {f}: "), line
    assert re.search(pattern, line), line
    assert not fakes.calls and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,pattern", [
    (["-o", "nosuch.seed=1"], r"-o nosuch\.seed=1: no step 'nosuch' \(steps: data, dense"),
    (["-o", "dense.sed=1"], r"-o dense\.sed=1: unknown key 'sed' for a train step"),
    (["-o", "vars.confg=x"], r"-o vars\.confg=x: no var 'confg' \(vars: config, input_size\)"),
    (["-o", "dense"], r"-o dense: expected STEP\.KEY=VALUE"),
    (["-o", "dense.seed+=1"], r"\+= appends to a list parameter only"),
    (["--from", "nosuch"], r"--from nosuch: no such step in tests/data/mini\.yml"),
    (["--from", "dense", "--only", "dense"], r"--from and --only cannot be combined"),
])
def test_bad_flags_rejected(args, pattern, fakes, tmp_path):
    r = invoke("run", MINI, "--out", tmp_path / "run", *args)
    assert r.exit_code == 2
    assert re.search(pattern, error_line(r)), r.output
    assert not fakes.calls


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "x.yml"
    bad.write_text("steps: [\n")
    r = invoke("run", bad)
    assert r.exit_code == 2 and "not valid YAML" in error_line(r)
    r = invoke("run", tmp_path / "nope.yml")
    assert r.exit_code == 2 and "pipeline file does not exist" in error_line(r)


# ------------------------------------------------------------------ caching

def test_full_run_then_everything_cached(fakes, tmp_path):
    run = tmp_path / "run"
    r = run_ok(MINI, "--out", run)
    assert fakes.ran() == ALL_STEPS - {"data", "report"}  # data and report are real
    m = manifest(run)
    assert {n: s["status"] for n, s in m["steps"].items()} == {n: "done" for n in ALL_STEPS}
    assert (run / "report.md").is_file() and (run / "report.json").is_file()
    table = r.output[r.output.index("speed-up vs dense"):]  # the report table, last
    assert re.search(r"│ sparse75 +│ PicoDet-demo +│ +160\*160 +│ +FP32 +│ +75% +│ +38\.\d +│", table), table
    assert "+33% (1.33x)" in table and "Speed-up" in table

    fakes.reset()
    t0 = time.monotonic()
    r = run_ok(MINI, "--out", run)
    assert time.monotonic() - t0 < 10
    assert not fakes.calls
    assert r.output.count("cached") >= len(ALL_STEPS)
    assert manifest(run)["steps"]["report"]["finished"] == m["steps"]["report"]["finished"]


def test_one_param_change_reruns_only_that_step_and_dependents(fakes, tmp_path):
    run = tmp_path / "run"
    run_ok(MINI, "--out", run)
    before = manifest(run)["steps"]
    report_mtime = (run / "report.json").stat().st_mtime_ns
    fakes.reset()
    run_ok(MINI, "--out", run, "-o", "sparse75.seed=1")
    after = manifest(run)["steps"]
    # keys, not timestamps: two fast runs can finish within one timestamp tick
    changed = {n for n in ALL_STEPS if after[n]["cache_key"] != before[n]["cache_key"]}
    assert changed == SPARSE_SIDE
    assert (run / "report.json").stat().st_mtime_ns != report_mtime
    assert fakes.ran() == SPARSE_SIDE - {"report"}
    assert after["sparse75"]["params"]["seed"] == 1 and after["sparse75"]["seed"] == 1
    assert after["dense"]["cache_key"] == before["dense"]["cache_key"]

    # a report-only change reruns the report alone
    fakes.reset()
    run_ok(MINI, "--out", run, "-o", "sparse75.seed=1", "-o", "report.title=Other")
    assert not fakes.calls
    assert json.loads((run / "report.json").read_text())["pipeline"] == "Other"


def test_config_files_are_inputs_with_their_base_chain(fakes, tmp_path):
    import shutil
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    cfg = tmp_path / "configs/demo/picodet_demo.yml"
    run = tmp_path / "run"
    run_ok(MINI, "--out", run, "-o", f"vars.config={cfg}")
    keys = {n: s["cache_key"] for n, s in manifest(run)["steps"].items()}
    fakes.reset()
    base = tmp_path / "configs/picodet/_base_/picodet_esnet.yml"
    base.write_text(base.read_text() + "\n# edited\n")  # a _BASE_ file, not the config itself
    run_ok(MINI, "--out", run, "-o", f"vars.config={cfg}")
    assert {"dense", "sparse75"} <= fakes.ran()
    assert manifest(run)["steps"]["dense"]["cache_key"] != keys["dense"]
    assert "config<-../picodet/_base_/picodet_esnet.yml" in manifest(run)["steps"]["dense"]["inputs"]


def test_deleted_output_reruns_that_step_and_same_bytes_stop_the_ripple(fakes, tmp_path):
    run = tmp_path / "run"
    run_ok(MINI, "--out", run)
    (run / "opt_dense" / "model.nb").unlink()
    fakes.reset()
    r = run_ok(MINI, "--out", run, "--dry-run")
    assert re.search(r"opt_dense \(opt\): run - output missing: .*model\.nb", r.output)
    run_ok(MINI, "--out", run)
    # the rerun wrote identical bytes, so the report (which reads it) stays cached
    assert fakes.ran() == {"opt_dense"}
    assert manifest(run)["steps"]["report"]["status"] == "done"


def test_dry_run_shows_what_would_run_and_changes_nothing(fakes, tmp_path):
    run = tmp_path / "run"
    run_ok(MINI, "--out", run)
    before = (run / "manifest.json").read_text()
    fakes.reset()
    r = run_ok(MINI, "--out", run, "--dry-run", "-o", "sparse75.seed=2")
    assert "sparse75 (train): run - params or inputs changed" in r.output
    assert "eval_sparse75 (eval): run - after sparse75" in r.output
    assert "dense (train): cached - unchanged" in r.output
    assert "would run 6, skip 5 cached" in r.output
    assert "input config<-../picodet/_base_/runtime.yml: sha256:" in r.output
    assert not fakes.calls and (run / "manifest.json").read_text() == before


# ------------------------------------------------------------------ failures and resume

def test_failing_step_stops_the_run_and_a_rerun_continues_from_it(fakes, tmp_path):
    from picosparse.errors import DataError
    run = tmp_path / "run"
    fakes.fail["eval_sparse75"] = DataError("weights x.pdparams: not a state dict")
    r = invoke("run", MINI, "--out", run)
    assert r.exit_code == 2
    assert error_line(r) == ("Error: step 'eval_sparse75' (eval) failed: "
                             "weights x.pdparams: not a state dict")
    m = manifest(run)["steps"]
    assert m["eval_sparse75"]["status"] == "failed" and m["eval_sparse75"]["lock"] is None
    assert "not a state dict" in m["eval_sparse75"]["error"]
    assert "report" not in m and "export_sparse75" not in m  # the run stopped there
    assert not (run / "eval_sparse75").exists(), "a failed step leaves no half-written folder"

    fakes.reset()
    run_ok(MINI, "--out", run)
    # from the failed step on; export_dense and opt_dense come after it in the plan
    assert fakes.ran() == {"eval_sparse75", "export_dense", "export_sparse75", "opt_dense",
                           "opt_sparse75", "bench"}
    assert manifest(run)["steps"]["eval_sparse75"]["status"] == "done"


def test_a_steps_input_error_names_the_key_not_the_flag(fakes, tmp_path):
    from picosparse.errors import DataError
    fakes.fail["opt_dense"] = DataError("--model-dir /x/inference: no model.pdmodel")
    r = invoke("run", MINI, "--out", tmp_path / "run")
    assert error_line(r) == ("Error: step 'opt_dense' (opt) failed: model_dir /x/inference: "
                             "no model.pdmodel")
    fakes.fail["opt_dense"] = DataError("--benchmark-bin b: not a flag of opt")
    r = invoke("run", MINI, "--out", tmp_path / "run")
    assert error_line(r).endswith("failed: --benchmark-bin b: not a flag of opt")


def test_unexpected_exception_one_line_exit_1_traceback_with_debug(fakes, tmp_path):
    fakes.fail["opt_dense"] = ZeroDivisionError("division by zero")
    r = invoke("run", MINI, "--out", tmp_path / "run")
    assert r.exit_code == 1
    assert error_line(r) == "Error: step 'opt_dense' (opt) failed: ZeroDivisionError: division by zero"
    assert "Traceback" not in r.output

    fakes.fail["opt_dense"] = ZeroDivisionError("division by zero")
    r = CliRunner().invoke(cli, ["-q", "--debug", "run", MINI, "--out", str(tmp_path / "run")])
    assert isinstance(r.exception, StepFailed)
    assert isinstance(r.exception.__cause__, ZeroDivisionError)


def test_killed_train_step_is_not_done_and_resumes_from_its_checkpoint(fakes, tmp_path):
    run = tmp_path / "run"
    run_ok(MINI, "--out", run)
    # what SIGKILL leaves: the step was marked running (before it started) and never finished
    m = manifest(run)
    m["steps"]["sparse75"].update(status="running", lock=None)
    (run / "manifest.json").write_text(json.dumps(m))
    fakes.reset()
    r = run_ok(MINI, "--out", run, "--dry-run")
    assert "sparse75 (train): run - interrupted last time" in r.output
    run_ok(MINI, "--out", run)
    assert fakes.resumed == {"sparse75": True}
    assert manifest(run)["steps"]["sparse75"]["resumed"] is True
    # same bytes again, so nothing downstream of it reran
    assert fakes.ran() == {"sparse75"}


def test_failed_train_resumes_only_with_the_same_key(fakes, tmp_path):
    run = tmp_path / "run"
    fakes.checkpoint_then_fail.add("dense")
    assert invoke("run", MINI, "--out", run).exit_code == 2
    assert (run / "dense" / "checkpoints" / "latest").is_file()
    # different params: the old checkpoint belongs to another run, start afresh
    fakes.checkpoint_then_fail.add("dense")
    invoke("run", MINI, "--out", run, "-o", "dense.seed=5")
    assert fakes.resumed["dense"] is False
    fakes.reset()
    run_ok(MINI, "--out", run, "-o", "dense.seed=5")
    assert fakes.resumed["dense"] is True


def test_interrupt_marks_the_step_failed(fakes, tmp_path):
    run = tmp_path / "run"
    fakes.fail["export_dense"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(MINI, run_dir=run)
    rec = manifest(run)["steps"]["export_dense"]
    assert rec["status"] == "failed" and rec["error"] == "interrupted" and rec["lock"] is None


# ------------------------------------------------------------------ --force, --from, --only

def test_force_reruns_everything(fakes, tmp_path):
    run = tmp_path / "run"
    run_ok(MINI, "--out", run)
    before = manifest(run)["steps"]
    fakes.reset()
    run_ok(MINI, "--out", run, "--force")
    after = manifest(run)["steps"]
    assert fakes.ran() == ALL_STEPS - {"data", "report"}
    assert all(after[n]["finished"] >= before[n]["finished"] for n in ALL_STEPS)
    assert all(after[n]["lock"]["key"] == before[n]["lock"]["key"] for n in ALL_STEPS)


def test_from_reruns_the_step_and_its_dependents_only(fakes, tmp_path):
    run = tmp_path / "run"
    run_ok(MINI, "--out", run)
    before = manifest(run)["steps"]
    fakes.reset()
    run_ok(MINI, "--out", run, "--from", "export_dense")
    after = manifest(run)["steps"]
    assert fakes.ran() == {"export_dense", "opt_dense", "bench"}
    # same bytes from the rerun steps, so the report's inputs did not change
    assert [n for n in ALL_STEPS if after[n]["finished"] != before[n]["finished"]] != []
    assert after["eval_dense"]["finished"] == before["eval_dense"]["finished"]


def test_only_runs_one_step_and_needs_its_inputs(fakes, tmp_path):
    run = tmp_path / "run"
    r = invoke("run", MINI, "--out", run, "--only", "eval_dense")
    assert r.exit_code == 2
    assert error_line(r) == (f"Error: --only eval_dense: step 'dense' has no finished outputs in "
                             f"{run}; run the pipeline without --only first")
    run_ok(MINI, "--out", run)
    fakes.reset()
    run_ok(MINI, "--out", run, "--only", "eval_dense")
    assert not fakes.calls  # unchanged: still cached
    run_ok(MINI, "--out", run, "--only", "eval_dense", "--force")
    assert fakes.ran() == {"eval_dense"}
    r = run_ok(MINI, "--out", run, "--only", "opt_sparse75", "--dry-run", "-o", "opt_sparse75.sparse_threshold=0.5")
    assert "opt_sparse75 (opt): run - params or inputs changed" in r.output
    assert "would run 1, skip 0 cached, 10 not selected" in r.output


# ------------------------------------------------------------------ manifest and run dir

def test_manifest_records_what_ran_with_what(fakes, tmp_path):
    run = tmp_path / "run"
    run_ok(MINI, "--out", run, "-o", "dense.overrides+=epoch=3")
    m = manifest(run)
    assert m["command"] == ["picosparse", "run", MINI, "--out", str(run), "-o",
                            "dense.overrides+=epoch=3"]
    assert m["pipeline"]["file"] == MINI and len(m["pipeline"]["sha256"]) == 64
    assert m["pipeline"]["overrides"] == ["dense.overrides+=epoch=3"]
    assert m["pipeline"]["resolved"]["steps"]["dense"]["overrides"][-1] == "epoch=3"
    assert {"python", "picosparse", "paddlepaddle", "paddleslim", "paddlelite"} <= set(m["versions"])
    dense = m["steps"]["dense"]
    assert dense["params"]["pretrained"] is None and dense["seed"] == 0
    assert dense["resolved"]["overrides"][0] == f"TrainDataset.dataset_dir={run / 'data'}"
    assert set(dense["inputs"]) >= {"config", "${steps.data.out}"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in dense["inputs"].values())
    assert dense["lock"]["key"] == dense["cache_key"] and dense["seconds"] >= 0
    assert dense["outputs"]["weights"] == str(run / "dense" / "model_final.pdparams")
    ev = m["steps"]["eval_sparse75"]
    assert ev["metrics"]["mAP"] == pytest.approx(0.385, abs=0.003)
    assert ev["metrics"]["sparsity"] == 0.75
    assert (run / "eval_sparse75" / "metrics.json").is_file()
    assert json.loads((run / "bench" / "bench.json").read_text())["models"]["sparse75"]["name"] == "sparse75"


def test_bench_models_at_another_precision(fakes, tmp_path):
    """`DIR@bf16` in a bench step's models: validated, hashed as DIR, passed to bench as is."""
    doc = _mutate(lambda d: d["steps"]["bench"]["models"].update(
        dense_bf16="${steps.export_dense.model_dir}@bf16"))
    f = tmp_path / "p.yml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    run = tmp_path / "run"
    run_ok(f, "--out", run)
    got = json.loads((run / "bench" / "bench.json").read_text())["models"]
    assert set(got) == {"dense", "sparse75", "dense_bf16"}
    assert got["dense_bf16"]["precision"] == "bf16" and got["dense"]["precision"] == "fp32"
    m = json.loads((run / "manifest.json").read_text())["steps"]["bench"]
    assert m["inputs"]["models.dense_bf16"] == m["inputs"]["models.dense"]  # the same files


def test_run_dir_is_locked_against_a_second_run(fakes, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = invoke("run", MINI, "--out", run)
    assert r.exit_code == 2 and "another `picosparse run` is using this run folder" in r.output


def test_library_api(fakes, tmp_path):
    plan = plan_pipeline(MINI, run_dir=tmp_path / "run")
    assert [s.name for s in plan.steps][:2] == ["data", "dense"] and plan.dry_run
    res = run_pipeline(MINI, run_dir=tmp_path / "run")
    assert res.report["baseline"] == "dense" and not validate(res.report)
    assert {s.action for s in res.steps} == {"run"}


# ------------------------------------------------------------------ parameter errors name the key

def test_bad_parameter_value_is_named_by_its_key_before_anything_runs(fakes, tmp_path):
    """A literal value is checked by the step's parameter dataclass when the file loads:
    --dry-run refuses it, naming the key as the pipeline writes it (not a CLI flag)."""
    r = invoke("run", MINI, "--out", tmp_path / "run", "--dry-run",
               "-o", "opt_sparse75.sparse_threshold=1.5")
    assert r.exit_code == 2
    assert error_line(r) == (f"Error: {MINI}: steps.opt_sparse75.sparse_threshold: must be in "
                             "(0, 1] (got 1.5)")
    # a combination the dataclass refuses, also at load time
    r = invoke("run", MINI, "--out", tmp_path / "run", "--dry-run",
               "-o", "opt_sparse75.fp16=true")
    assert error_line(r) == (f"Error: {MINI}: steps.opt_sparse75.fp16: with sparse: Paddle-Lite's "
                             "sparse_conv2d kernels are FP32/INT8 only (the seed: do not enable "
                             "FP16 for sparse models); turn off fp16 or sparse")
    r = invoke("run", MINI, "--out", tmp_path / "run", "-o", "data.size=32")
    assert error_line(r) == f"Error: {MINI}: steps.data.size: must be in [64, 4096] (got 32)"
    assert not fakes.ran() and not (tmp_path / "run").exists()


def test_bad_parameter_value_from_another_step_is_named_by_its_key_when_it_runs(fakes, tmp_path):
    """A value that comes from another step's outputs is checked when the step runs: the
    runner names the key path, and the step is recorded failed."""
    r = invoke("run", MINI, "--out", tmp_path / "run",
               "-o", "opt_dense.sparse_threshold=${steps.dense.epochs}")  # the fake trains 2
    assert r.exit_code == 2
    assert error_line(r) == (f"Error: {MINI}: steps.opt_dense.sparse_threshold: must be in "
                             "(0, 1] (got 2)")
    step = manifest(tmp_path / "run")["steps"]["opt_dense"]
    assert step["status"] == "failed" and "steps.opt_dense.sparse_threshold" in step["error"]
    assert "opt_dense" in fakes.ran() and not (tmp_path / "run" / "opt_dense").exists()


# ------------------------------------------------------------------ the real thing (slow)

@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tmp_path):
    """tests/data/tiny.yml: demo.yml's shape at minimal sizes, every step real."""
    run = tmp_path / "run"
    res = run_pipeline("tests/data/tiny.yml", run_dir=run)
    rep = res.report
    assert not validate(rep)
    names = [v["name"] for v in rep["variants"]]
    assert names == ["dense", "sparse75"]
    sparse = rep["variants"][1]
    assert sparse["sparsity"] > 0.5 and sparse["nb_size_bytes"] < rep["variants"][0]["nb_size_bytes"]
    assert all(sparse["latency_ms"][t] for t in ("1",))
    assert (run / "report.md").is_file() and (run / "plots" / "latency.png").is_file()
    t0 = time.monotonic()
    again = run_pipeline("tests/data/tiny.yml", run_dir=run)
    assert {s.action for s in again.steps} == {"cached"} and time.monotonic() - t0 < 30
