"""benchmarks/x86_sparse.py's pure parts (variant names, bench order, rows, the table) on a fake
`picosparse bench --json` result: no models, no timing."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "x86_sparse.py"


@pytest.fixture(scope="module")
def xs():
    spec = importlib.util.spec_from_file_location("bench_x86_sparse", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# variant -> (bench row name, precision, per-round ms at 1 thread)
FAKE = {
    "dense": ("dense", "fp32", [10.0, 12.0, 11.0, 10.0]),
    "dense@bf16": ("dense@bf16", "bf16", [8.0, 9.0, 8.0, 8.0]),
    "dense_int8": ("dense_int8", "int8", [7.0, 8.0, 7.5, 7.0]),
    "sparse75": ("m/sparse75/x86_sparse", "fp32", [6.0, 7.0, 6.5, 6.0]),
    "sparse75@bf16": ("m/sparse75/x86_sparse@bf16", "bf16", [5.5, 6.5, 6.0, 5.5]),
    "block75": ("m/block75/x86_sparse", "fp32", [6.5, 7.5, 7.0, 6.5]),
    "block75@bf16": ("m/block75/x86_sparse@bf16", "bf16", [3.5, 4.0, 4.0, 3.5]),
}


def fake_bench(xs, fake=FAKE):
    from picosparse.deploy.timing import paired_speedup, summary
    base = fake["dense"][2]
    return {"threads": [1], "models": [
        {"name": name, "precision": prec, "latency_ms": {"1": summary(ms)},
         "samples_ms": {"1": ms}, "speedup_ratio": {"1": paired_speedup(base, ms)["median"]}}
        for name, prec, ms in fake.values()]}


def test_variant_names(xs):
    assert {xs.variant(name): v for v, (name, _, _) in FAKE.items()} == \
        {v: v for v in FAKE}
    assert xs.variant("runs/x/sparse85/x86_sparse") == "sparse85"
    assert [xs.sparsity_of(v) for v in FAKE] == [None, None, None, 75, 75, 75, 75]


def test_models_in_bench_order(xs):
    arts = {"dense": "w/dense", "dense_int8": "w/dense_int8",
            "sparse75": "w/sparse75/x86_sparse", "block75": "w/block75/x86_sparse",
            "sparse85": "w/sparse85/x86_sparse", "block85": "w/block85/x86_sparse"}
    got = xs.models_of(arts, [0.75, 0.85], bf16=True, sparse_bf16=True)
    assert list(got) == ["dense", "dense@bf16", "dense_int8",
                         "sparse75", "sparse75@bf16", "block75", "block75@bf16",
                         "sparse85", "sparse85@bf16", "block85", "block85@bf16"]
    assert got["block75@bf16"] == "w/block75/x86_sparse@bf16"
    # PICOSPARSE_ISA=avx2: no @bf16 at all
    got = xs.models_of(arts, [0.75], bf16=False, sparse_bf16=False)
    assert list(got) == ["dense", "dense_int8", "sparse75", "block75"]


def test_rows_best_dense_best_sparse_and_targets(xs):
    (row,) = xs.rows_of("m", fake_bench(xs), [0.75])
    assert row["best_dense"] == "dense_int8"
    assert set(row["ms"]) == set(FAKE)
    assert set(row["vs_best"]) == set(row["spread_vs_f32"]) == set(row["spread_vs_best"]) == \
        {"sparse75", "sparse75@bf16", "block75", "block75@bf16"}
    # paired per-round ratios: dense / sparse75 = 10/6, 12/7, 11/6.5, 10/6
    assert row["vs_f32"]["sparse75"] == pytest.approx((10 / 6 + 11 / 6.5) / 2, abs=1e-3)
    lo, hi = row["spread_vs_f32"]["sparse75"]
    assert lo <= row["vs_f32"]["sparse75"] <= hi
    best = row["best_sparse"]["0.75"]
    assert best["variant"] == "block75@bf16" and best["precision"] == "bf16"
    # dense_int8 / block75@bf16 = 2.0, 2.0, 1.875, 2.0
    assert best["vs_best"] == pytest.approx(2.0)
    assert best["spread_vs_best"][0] <= best["vs_best"] <= best["spread_vs_best"][1]
    t = row["targets"]["0.75"]
    assert t["f32_variant"] == "sparse75" and t["f32_met"]   # 1.68 >= 1.6
    assert t["best_variant"] == "block75@bf16" and t["best_met"]  # 2.0 >= 1.3
    json.dumps(row)  # the --json output


def test_rows_without_bf16(xs):
    fake = {k: v for k, v in FAKE.items() if "@" not in k}
    (row,) = xs.rows_of("m", fake_bench(xs, fake), [0.75])
    assert row["best_dense"] == "dense_int8"
    assert row["best_sparse"]["0.75"]["variant"] == "sparse75"
    assert not row["targets"]["0.75"]["best_met"]  # 7.0/6.0 ... < 1.3


def test_markdown_table(xs):
    rows = xs.rows_of("m", fake_bench(xs), [0.75])
    md = xs.markdown(rows, {"m": {"dense": 0.301, "block75@bf16": 0.25}})
    lines = md.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head == ["model", "thr", "dense FP32 ms", "BF16 ms", "INT8 ms", "sparse75",
                    "sparse75@bf16", "block75", "block75@bf16", "75% best"]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert len(cells) == len(head)
    assert cells[:3] == ["PicoDet-m 320", "1", "10.50"]
    assert cells[4] == "7.25 (1.45x)"  # INT8: 10/7, 12/8, 11/7.5, 10/7 -> median 1.45
    assert cells[5] == "6.25 (1.68x)"
    assert cells[-1].startswith("block75@bf16 **2.00x** vs dense_int8 (")
    assert lines[-1] == ("mAP on the 128 real COCO images, PicoDet-m 320: dense 0.301, "
                         "block75@bf16 0.250")
