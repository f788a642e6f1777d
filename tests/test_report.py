"""The report step: numbers, the report.json schema, report.md and the plots, built from step
outputs shaped by the contracts in picosparse/steps/{evaluate,export,lite,bench}.py."""

import json
import re

import pytest

from picosparse.steps import report as R

PNG = b"\x89PNG\r\n\x1a\n"


def eval_out(map_, sparsity, n_layers=8):
    layers = {f"backbone.{i}.conv.weight": sparsity for i in range(n_layers)}
    return {"mAP": map_, "mAP50": map_ + 0.2, "mAP75": map_, "mAP_small": 0.1,
            "mAP_medium": 0.3, "mAP_large": 0.5,
            "sparsity": {"overall": sparsity, "layers": layers}, "images": 100, "seconds": 3.0,
            "metrics": "/run/eval/metrics.json"}


def export_out(size=320):
    return {"model_dir": "/run/export", "model_file": "/run/export/model.pdmodel",
            "params_file": "/run/export/model.pdiparams", "infer_cfg": "/run/export/infer_cfg.yml",
            "input_size": size}


def opt_out(size_bytes, sparse):
    return {"nb": "/run/opt/model.nb", "size_bytes": size_bytes, "sparse_conv2d": 90 if sparse else 0,
            "conv1x1": 105, "valid_targets": "arm", "sparse": sparse}


def bench_out(latencies, threads=(1, 4)):
    """latencies: {variant: {threads: median ms}}, keyed by variant as the adapter does."""
    return {"runtime": "lite", "precision": "fp32", "threads": list(threads),
            "notes": ["sparse kernels: ARM only"], "results": "/run/bench/bench.json",
            "models": {name: {"name": name, "path": f"/run/{name}", "size_bytes": 1,
                              "latency_ms": {str(t): {"median": ms, "p90": ms * 1.1, "mean": ms}
                                             for t, ms in lat.items()}}
                       for name, lat in latencies.items()}}


SEED = {  # the seed's PicoDet-m table (SD835, Lite): mAP, .nb MB, 1 and 4 thread ms
    "dense": (0.309, 0.0, 8.9e6, 127, 43),
    "sparse75": (0.294, 0.75, 5.6e6, 80, 32),
    "sparse85": (0.276, 0.85, 4.1e6, 65, 27),
}


def seed_inputs():
    variants = {n: {"model": "PicoDet-m-1.0", "eval": eval_out(m, s), "export": export_out(),
                    "opt": opt_out(int(b), s > 0)} for n, (m, s, b, _, _) in SEED.items()}
    bench = bench_out({n: {1: l1, 4: l4} for n, (_, _, _, l1, l4) in SEED.items()})
    return variants, bench


def test_speedups_reproduce_the_seed_table():
    variants, bench = seed_inputs()
    rep = R.make_report(variants, bench, baseline="dense", title="seed")
    assert R.validate(rep) == []
    v = {x["name"]: x for x in rep["variants"]}
    # the seed's speed-up columns: 58% / 34% at 75%, 96% / 59% at 85%
    assert round(v["sparse75"]["speedup_fps_gain"]["1"], 2) == 0.59  # (127-80)/80 = 0.5875
    assert round(v["sparse75"]["speedup_fps_gain"]["4"], 2) == 0.34
    assert round(v["sparse85"]["speedup_fps_gain"]["1"], 2) == 0.95  # (127-65)/65
    assert round(v["sparse85"]["speedup_fps_gain"]["4"], 2) == 0.59
    assert v["sparse75"]["speedup_ratio"]["1"] == pytest.approx(127 / 80)
    assert v["dense"]["speedup_fps_gain"] == {"1": 0.0, "4": 0.0}
    assert v["sparse75"]["latency_ms"] == {"1": 80, "4": 32}
    assert v["sparse85"]["nb_size_bytes"] == 4_100_000 and v["sparse85"]["input_size"] == 320
    assert v["sparse85"]["sparsity"] == 0.85 and v["sparse85"]["mAP"] == 0.276
    assert rep["threads"] == [1, 4] and rep["runtime"] == "lite" and rep["baseline"] == "dense"
    assert set(rep["machine"]) >= {"platform", "machine", "cpu", "cpus", "python"}


def test_paired_ratios_from_bench_when_it_timed_against_the_same_baseline():
    """bench's speed-up is the median of per-round paired ratios, not the ratio of medians;
    the report shows bench's number when both use the same baseline."""
    variants, bench = seed_inputs()
    bench["models"]["sparse75"]["speedup_ratio"] = {"1": 1.7, "4": 1.3}
    bench["models"]["dense"]["speedup_ratio"] = {"1": 1.0, "4": 1.0}
    v = {x["name"]: x for x in R.make_report(variants, bench, baseline="dense")["variants"]}
    assert v["sparse75"]["speedup_ratio"] == {"1": 1.7, "4": 1.3}
    assert v["sparse75"]["speedup_fps_gain"]["1"] == pytest.approx(0.7)
    assert v["sparse85"]["speedup_ratio"]["1"] == pytest.approx(127 / 65)  # bench gave none
    # another baseline than bench's: ratios of this report's medians
    v = {x["name"]: x for x in R.make_report(variants, bench, baseline="sparse85")["variants"]}
    assert v["sparse75"]["speedup_ratio"]["1"] == pytest.approx(65 / 80)


def test_baseline_need_not_come_first():
    variants, bench = seed_inputs()
    variants = {"sparse75": variants["sparse75"], "dense": variants["dense"]}
    rep = R.make_report(variants, bench, baseline="dense")
    assert rep["variants"][0]["speedup_ratio"]["1"] == pytest.approx(127 / 80)
    assert R.make_report(variants, bench)["baseline"] == "sparse75"  # default: the first


def test_missing_steps_give_nulls_and_still_validate():
    variants = {"dense": {"eval": eval_out(0.3, 0.0)}, "sparse75": {"eval": eval_out(0.28, 0.75)}}
    rep = R.make_report(variants)
    assert R.validate(rep) == []
    v = rep["variants"][1]
    assert v["nb_size_bytes"] is None and v["latency_ms"] == {} and v["input_size"] is None
    cols, rows = R.table(rep)
    assert rows[1][:9] == ["sparse75", "-", "-", "FP32", "75%", "28.0", "48.0", "-", "-"]


@pytest.mark.parametrize("mutate,problem", [
    (lambda r: r.pop("variants"), r"\$: missing 'variants'"),
    (lambda r: r.update(variants=[]), r"\$\.variants: needs at least 1 item"),
    (lambda r: r["variants"][0].pop("latency_ms"), r"\$\.variants\[0\]: missing 'latency_ms'"),
    (lambda r: r["variants"][0].pop("speedup_fps_gain"), r"missing 'speedup_fps_gain'"),
    (lambda r: r["variants"][1].update(mAP="29.4"), r"\$\.variants\[1\]\.mAP: expected number or null, got str"),
    (lambda r: r["variants"][1].update(sparsity=75), r"\$\.variants\[1\]\.sparsity: 75 is above 1"),
    (lambda r: r["variants"][1].update(nb_size_bytes=True), r"nb_size_bytes: expected integer or null, got bool"),
    (lambda r: r["variants"][1]["latency_ms"].update({"1": "fast"}), r"\$\.variants\[1\]\.latency_ms\.1: expected number"),
    (lambda r: r.update(threads="1,4"), r"\$\.threads: expected array, got str"),
    (lambda r: r["variants"][0].pop("name"), r"\$\.variants\[0\]: missing 'name'"),
])
def test_validate_rejects_broken_reports(mutate, problem):
    variants, bench = seed_inputs()
    rep = R.make_report(variants, bench)
    mutate(rep)
    errors = R.validate(rep)
    assert errors and any(re.search(problem, e) for e in errors), errors


def test_schema_is_documented_in_the_module_docstring():
    doc = R.__doc__
    for key in list(R.REPORT_SCHEMA["properties"]) + \
            list(R.REPORT_SCHEMA["properties"]["variants"]["items"]["properties"]):
        assert f'"{key}"' in doc, key


def test_write_report_files(tmp_path):
    variants, bench = seed_inputs()
    out = R.write_report(tmp_path, variants, bench, baseline="dense", title="PicoDet-m 320")
    rep = json.loads((tmp_path / "report.json").read_text())
    assert R.validate(rep) == [] and rep["pipeline"] == "PicoDet-m 320"
    assert rep["plots"] == ["plots/latency.png", "plots/sparsity_sparse75.png",
                            "plots/sparsity_sparse85.png"]  # no per-layer chart for dense
    for p in rep["plots"]:
        assert (tmp_path / p).read_bytes()[:8] == PNG
    assert out["report_json"] == tmp_path / "report.json"
    md = (tmp_path / "report.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + 3 and len({ln.count("|") for ln in lines}) == 1
    assert "| Latency 1 thread (ms) | Speed-up 1 thread | Latency 4 threads (ms) |" in lines[0]
    assert lines[3].startswith("| sparse75 | PicoDet-m-1.0 | 320*320 | FP32 | 75% | 29.4 | 49.4 | "
                               "5.60 | 90 |")
    assert "| 80.00 | +59% (1.59x) | 32.00 | +34% (1.34x) |" in lines[3]
    assert "![latency](plots/latency.png)" in md and "sparse kernels: ARM only" in md
    assert not list(tmp_path.glob("**/*.tmp"))  # every file was renamed into place


def test_terminal_table(capsys):
    from picosparse.render import report_table
    variants, bench = seed_inputs()
    report_table(R.make_report(variants, bench, baseline="dense"))
    out = capsys.readouterr().out
    assert re.search(r"sparse85 +│ PicoDet-m-1\.0 +│ +320\*320 +│ +FP32 +│ +85% +│ +27\.6 +│", out)
    assert "+95% (1.95x)" in out


def test_int8_rows_precision_quantization_and_sparse_kernels():
    variants, bench = seed_inputs()
    del bench["models"]["sparse85"]
    int8_opt = dict(opt_out(1_570_000, True), precision="int8",
                    conv_precisions={"conv2d": {"int8": 1}, "sparse_conv2d": {"int8": 90}})
    variants["sparse75_int8"] = {
        "model": "PicoDet-m-1.0", "eval": eval_out(0.287, 0.75), "opt": int8_opt,
        "quant": {"precision": "int8", "backend": "paddle", "algo": "hist", "calib_images": 32}}
    variants["sparse75_qat"] = {
        "eval": eval_out(0.29, 0.75), "opt": int8_opt,
        "quant": {"precision": "int8", "backend": "paddle", "algo": "qat", "epochs": 2}}
    variants["sparse75"]["opt"]["conv_precisions"] = {"sparse_conv2d": {"fp32": 90}}
    rep = R.make_report(variants, bench, baseline="dense")
    assert R.validate(rep) == []
    v = {x["name"]: x for x in rep["variants"]}
    assert v["sparse75_int8"]["precision"] == "int8" == v["sparse75_qat"]["precision"]
    assert v["sparse75_int8"]["quantization"] == "PTQ hist, 32 images"
    assert v["sparse75_qat"]["quantization"] == "QAT, 2 epochs"
    assert v["sparse75_int8"]["sparse_conv2d_precision"] == "int8"
    assert v["sparse75"]["sparse_conv2d_precision"] == "fp32" and v["dense"]["precision"] == "fp32"
    assert v["dense"]["quantization"] is None and v["sparse75_int8"]["latency_ms"] == {
        "1": None, "4": None}
    cols, rows = R.table(rep)
    row = dict(zip(cols, rows[3]))
    assert row["Precision"] == "INT8 (PTQ hist, 32 images)"
    assert row["Sparse convs (.nb)"] == "90 INT8" and row["Size .nb (MB)"] == "1.57"
    assert dict(zip(cols, rows[1]))["Sparse convs (.nb)"] == "90 FP32"
    # the untimed INT8 rows are named in a note; sparse85 (FP32, not benched) is not
    note = [n for n in rep["notes"] if "INT8 for Paddle-Lite" in n]
    assert len(note) == 1 and note[0].startswith("sparse75_int8, sparse75_qat: ")



def test_int8_variants_get_no_second_sparsity_chart(tmp_path):
    variants, bench = seed_inputs()
    variants["sparse75_int8"] = dict(variants["sparse75"], quant={"precision": "int8"})
    rep = json.loads(R.write_report(tmp_path, variants, bench)["report_json"].read_text())
    assert rep["plots"] == ["plots/latency.png", "plots/sparsity_sparse75.png",
                            "plots/sparsity_sparse85.png"]
