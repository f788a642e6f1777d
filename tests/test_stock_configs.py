"""PaddleDetection's own configs as users bring them: tagged YAML (as data, never code), the
tutorial's pruner + slim files, `--sparsity` alone, and transfer from other-class weights."""

import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from picosparse.cli import cli
from picosparse.config import DEFAULT_RECIPE, load_detector
from picosparse.errors import ConfigError, DataError

from conftest import DEMO_CFG, ROOT

UP = ROOT / "tests" / "data" / "upstream" / "configs"
PRUNER_CFG = UP / "picodet" / "legacy_model" / "pruner" / "picodet_m_320_coco_pruner.yml"
SEED_SLIM = UP / "slim" / "prune" / "picodet_m_unstructured_prune_75.yml"
LCNET_CFG = ROOT / "configs" / "picodet" / "picodet_s_320_coco_lcnet.yml"
M_CFG = ROOT / "configs" / "picodet" / "picodet_m_320_coco.yml"
SEED_SKIPPED_M = {f"head.head_cls{i}.weight" for i in range(4)} | {
    f"backbone.{b}._se.conv{j}.weight" for b in ("2_3", "3_7", "4_3") for j in (1, 2)}


def _write(p, text):
    p.write_text(text)
    return p


# ------------------------------------------------------------------ YAML is data, never code

EVIL = '!!python/object/apply:os.system ["touch {marker}"]'


def test_pipeline_file_cannot_run_code_even_on_dry_run(tmp_path):
    marker = tmp_path / "PWNED"
    pipe = _write(tmp_path / "p.yml", "steps:\n  d: " + EVIL.format(marker=marker) + "\n")
    r = CliRunner().invoke(cli, ["run", str(pipe), "--dry-run", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2, r.output
    assert not marker.exists()
    line, = r.output.strip().splitlines()
    assert line.startswith(f"Error: {pipe}: not valid YAML (line 2): tag !!python/object/apply")
    assert "is not allowed" in line


def test_detector_config_cannot_run_code_and_callable_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    cfg = _write(tmp_path / "c.yml", f"_BASE_: [{DEMO_CFG}]\nx: {EVIL.format(marker=marker)}\n")
    r = CliRunner().invoke(cli, ["layers", "-c", str(cfg)])
    assert r.exit_code == 2 and not marker.exists()
    assert "is not allowed" in r.output and "Traceback" not in r.output
    # ppdet's own !Callable tag would call any function it names: refused too
    cfg = _write(tmp_path / "c2.yml", f"_BASE_: [{DEMO_CFG}]\nLearningRate:\n  schedulers:\n"
                 f"  - !Callable {{full_type: os.system, args: ['touch {marker}']}}\n")
    r = CliRunner().invoke(cli, ["layers", "-c", str(cfg)])
    assert r.exit_code == 2 and not marker.exists()
    assert r.output.strip() == ("Error: LearningRate.schedulers[0]: unknown tag !Callable (not a "
                                "PaddleDetection class a config can name)")


# ------------------------------------------------------------------ tagged configs

def test_tagged_values_merge_override_and_round_trip(tmp_path):
    from picosparse.yamlio import Tagged
    cfg = load_detector(PRUNER_CFG, overrides=["TrainDataset.dataset_dir=/data/coco",
                                               "LearningRate.schedulers.0.max_epochs=12"])
    ds = cfg.data["TrainDataset"]
    assert isinstance(ds, Tagged) and ds.tag == "COCODataSet"
    assert ds["dataset_dir"] == "/data/coco" and ds["image_dir"] == "train2017"
    sched = cfg.data["LearningRate"]["schedulers"]
    assert [s.tag for s in sched] == ["CosineDecay", "LinearWarmup"]
    assert sched[0]["max_epochs"] == 12
    # the resolved config.yml keeps the tags and loads back to the same data
    dumped = _write(tmp_path / "config.yml", cfg.dump())
    assert "TrainDataset: !COCODataSet" in dumped.read_text()
    again = load_detector(dumped)
    assert again.data["TrainDataset"] == ds and again.data["TrainDataset"].tag == "COCODataSet"
    # a later tagged value replaces the earlier one whole, as in PaddleDetection
    later = _write(tmp_path / "later.yml", f"_BASE_: [{PRUNER_CFG}]\n"
                   "TrainDataset: !COCODataSet {dataset_dir: /x, anno_path: a.json}\n")
    assert dict(load_detector(later).data["TrainDataset"]) == {"dataset_dir": "/x",
                                                               "anno_path": "a.json"}


def test_tagged_objects_are_what_ppdet_builds():
    from picosparse import paddle_env
    cfg = load_detector(PRUNER_CFG, slim_config=SEED_SLIM,
                        overrides=["TrainDataset.dataset_dir=/data/coco"])
    paddle_env.activate(cfg.data)
    ds = paddle_env.create("TrainDataset")()
    assert type(ds).__name__ == "COCODataSet" and ds.dataset_dir == "/data/coco"
    lr = paddle_env.create("LearningRate")
    assert [type(s).__name__ for s in lr.schedulers] == ["CosineDecay", "LinearWarmup"]
    assert lr.schedulers[1].steps == 34350 and lr.base_lr == 0.15


def test_lcnet_v2_tagged_config_builds_with_seed_policy_by_structure():
    from picosparse import paddle_env
    from picosparse.sparsity import policy
    cfg = load_detector(LCNET_CFG, sparsity=0.75)
    model = paddle_env.build_model(cfg)
    found = policy.structural(model)
    assert {f"head.head_cls_list.{i}.weight" for i in range(4)} <= found["head_outputs"]
    assert {f"head.head_reg_list.{i}.weight" for i in range(4)} <= found["head_outputs"]
    assert found["stage_last_se"] == {"backbone.blocks6.1.se.conv1.weight",
                                      "backbone.blocks6.1.se.conv2.weight"}
    d = {x.name: x for x in policy.decide(model, cfg.prune)}
    assert not d["head.head_cls_list.0.weight"].pruned
    assert d["backbone.blocks6.0.se.conv1.weight"].pruned  # not its stage's last block
    lr = paddle_env.create("LearningRate")(10)
    opt = paddle_env.create("OptimizerBuilder")(lr, model)
    assert opt.get_lr() == pytest.approx(0.32 * 0.1)


# ------------------------------------------------------------------ the tutorial's files

def test_seed_pruner_config_with_seed_slim_file():
    from picosparse import paddle_env
    from picosparse.sparsity import policy
    cfg = load_detector(PRUNER_CFG, slim_config=SEED_SLIM)
    p = cfg.prune
    assert (p.ratio, p.initial_ratio, p.pruning_epochs, p.tunning_epochs, p.pruning_steps) == \
        (0.75, 0.15, 150, 150, 300)
    assert cfg.get("pretrain_weights").endswith("picodet_m_320_coco.pdparams")
    # a slim file without `skip` gets the tutorial's skips (head outputs + 6 SE convs)
    model = paddle_env.build_model(cfg)
    skipped = {d.name for d in policy.decide(model, p) if d.reason.startswith("skip rule")}
    assert skipped == SEED_SKIPPED_M
    # `skip: []` still means: prune every 1x1 conv
    cfg = load_detector(PRUNER_CFG, slim_config=SEED_SLIM, overrides=["UnstructuredPruner.skip=[]"])
    assert not [d for d in policy.decide(model, cfg.prune) if d.reason.startswith("skip rule")]


def test_top_level_unstructured_prune_keys_are_a_recipe():
    cfg = load_detector(PRUNER_CFG)
    assert cfg.prune.ratio == 0.75 and cfg.prune.pruning_steps == 300
    assert cfg.prune.recipe.startswith("top-level")
    assert [r.structure for r in cfg.prune.skip] == ["head_outputs", "stage_last_se"]


# ------------------------------------------------------------------ --sparsity alone

def test_sparsity_alone_uses_default_recipe_written_to_config(tmp_path):
    cfg = load_detector(M_CFG, sparsity=0.85)
    p = cfg.prune
    assert p.recipe == DEFAULT_RECIPE
    assert (p.ratio, p.initial_ratio, p.stable_epochs, p.pruning_epochs, p.tunning_epochs,
            p.pruning_steps) == (0.85, 0.20, 0, 150, 150, 300)
    written = load_detector(_write(tmp_path / "config.yml", cfg.dump()))
    assert written.prune == p
    short = load_detector(M_CFG, sparsity=0.5, overrides=["epoch=5"])
    assert (short.prune.pruning_epochs, short.prune.tunning_epochs, short.prune.initial_ratio) \
        == (2, 3, 0.15)


def test_sparsity_below_initial_ratio_keeps_written_config_consistent(tmp_path):
    cfg = load_detector(M_CFG, slim_config=ROOT / "configs/prune/picodet_m_unstructured_prune_75.yml",
                        sparsity=0.1)
    assert cfg.prune.initial_ratio == 0.1
    written = load_detector(_write(tmp_path / "config.yml", cfg.dump()))
    assert written.prune.ratio == written.prune.initial_ratio == 0.1


def test_layers_states_the_default_recipe():
    r = CliRunner().invoke(cli, ["layers", "-c", str(M_CFG), "--sparsity", "0.75"])
    assert r.exit_code == 0, r.output
    assert "95 of" in r.output  # 105 1x1 convs less the seed's 10
    assert "recipe: built-in default" in r.output
    assert "dense: structure=head_outputs, structure=stage_last_se" in r.output


def test_bad_structure_rule_is_one_line(tmp_path):
    slim = _write(tmp_path / "s.yml", "UnstructuredPruner:\n  pruning_epochs: 1\n"
                  "  pruning_steps: 1\n  ratio: 0.5\n  skip:\n  - structure: neck\n")
    with pytest.raises(ConfigError, match=r"s.yml: UnstructuredPruner.skip\[0\].structure must "
                                          r"be one of head_outputs, stage_last_se, got 'neck'"):
        load_detector(DEMO_CFG, slim_config=slim)


# ------------------------------------------------------------------ every --help example

def _examples(text):
    """The `picosparse ...` command lines of a help text (backslash continuations joined)."""
    out, cur = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if cur is not None:
            cur += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                out.append(cur)
                cur = None
        elif line.startswith("picosparse "):
            if line.endswith("\\"):
                cur = line.rstrip("\\").strip()
            else:
                out.append(line)
    return out


def _all_help():
    texts = [CliRunner().invoke(cli, ["--help"]).output]
    for name, cmd in cli.commands.items():
        texts.append(CliRunner().invoke(cli, [name, "--help"]).output)
        for sub in getattr(cmd, "commands", {}):
            texts.append(CliRunner().invoke(cli, [name, sub, "--help"]).output)
    return [ex for t in texts for ex in _examples(t)]


def test_every_help_example_parses_and_its_config_resolves():
    """Each example is parsed by click as typed; where it names a detector config, that
    config (with its recipe, overrides and --sparsity) resolves, so no example can go stale."""
    examples = _all_help()
    assert len(examples) >= 15
    assert any(e.startswith("picosparse train") and "--sparsity 0.75" in e and
               "--slim-config" not in e for e in examples)
    for ex in examples:
        argv = shlex.split(ex.split(" | ")[0], comments=True)[1:]
        group, rest = cli, argv
        while isinstance(group, click.Group):
            group, rest = group.commands[rest[0]], rest[1:]
        try:
            ctx = group.make_context(argv[0], list(rest), resilient_parsing=False)
        except click.UsageError as e:
            pytest.fail(f"{ex}: {e}")
        p = ctx.params
        if p.get("config") and str(p["config"]).startswith("configs/"):
            cfg = load_detector(ROOT / p["config"], overrides=p.get("overrides", ()),
                                slim_config=p.get("slim_config") and ROOT / p["slim_config"],
                                sparsity=p.get("sparsity"))
            if "sparsity" in p and p["sparsity"]:
                assert cfg.prune is not None and cfg.prune.ratio == p["sparsity"], ex
        for key in ("slim_config", "pipeline"):
            if p.get(key) and str(p[key]).startswith(("configs/", "pipelines/")):
                assert (ROOT / p[key]).is_file(), ex


# ------------------------------------------------------------------ transfer learning

def test_pretrained_from_other_classes_skips_head_with_one_warning(tmp_path, capsys):
    from picosparse import paddle_env, weights as W
    src = load_detector(DEMO_CFG, overrides=["num_classes=7"])
    state = paddle_env.build_model(src).state_dict()
    W.save(state, tmp_path / "seven.pdparams")
    dst = load_detector(DEMO_CFG)  # the demo's own classes
    model = paddle_env.build_model(dst)
    res = W.load_pretrained(model, tmp_path / "seven.pdparams")
    assert res["skipped_shape"] and all(k.startswith("head.") for k in
                                        (s.split()[0] for s in res["skipped_shape"]))
    loaded = model.state_dict()
    same = [k for k in loaded if k.startswith("backbone.")]
    assert same and all((loaded[k].numpy() == state[k].numpy()).all() for k in same)
    err = capsys.readouterr().err
    assert err.count("warning: --pretrained seven.pdparams: loaded") == 1
    assert "of another shape: head." in err
    # strict loading (resume, eval --weights) still refuses it
    with pytest.raises(DataError, match="weights do not match the config"):
        W.load_into(paddle_env.build_model(dst), tmp_path / "seven.pdparams")


def test_backbone_only_weights_match_by_suffix(tmp_path):
    from picosparse import paddle_env, weights as W
    cfg = load_detector(DEMO_CFG)
    full = paddle_env.build_model(cfg).state_dict()
    backbone = {k[len("backbone."):]: v for k, v in full.items() if k.startswith("backbone.")}
    W.save(backbone, tmp_path / "imagenet.pdparams")
    model = paddle_env.build_model(cfg)
    res = W.load_pretrained(model, tmp_path / "imagenet.pdparams")
    assert res["loaded"] == len(backbone) and not res["skipped_shape"]
    got = model.state_dict()
    assert all((got["backbone." + k].numpy() == v.numpy()).all() for k, v in backbone.items())
    W.save({"unrelated.weight": full[next(iter(full))]}, tmp_path / "other.pdparams")
    with pytest.raises(DataError, match="no parameter fits the config's model"):
        W.load_pretrained(model, tmp_path / "other.pdparams")


# ------------------------------------------------------------------ end to end, as a user would

def _tiny(data, size=96):
    """-o overrides shrinking a 320 COCO config to the tiny generated dataset."""
    ov = []
    for split, sub in (("TrainDataset", "train"), ("EvalDataset", "val")):
        ov += [f"{split}.dataset_dir={data}", f"{split}.image_dir={sub}",
               f"{split}.anno_path={sub}.json"]
    return ov + ["num_classes=4", "epoch=2", "TrainReader.batch_size=4", "worker_num=0",
                 f"TrainReader.batch_transforms.0.BatchRandomResize.target_size=[{size}]",
                 f"EvalReader.sample_transforms.1.Resize.target_size=[{size},{size}]",
                 "LearningRate.schedulers.0.max_epochs=2", "snapshot_epoch=1", "log_iter=4"]


def _with_o(args, overrides):
    for o in overrides:
        args += ["-o", o]
    return args


def _run_cli(args):
    """The command as a user types it, in a process of its own."""
    import subprocess
    import sys
    from types import SimpleNamespace
    p = subprocess.run([sys.executable, "-m", "picosparse", *map(str, args)],
                       capture_output=True, text=True, timeout=900)
    return SimpleNamespace(exit_code=p.returncode, output=p.stdout + p.stderr, stderr=p.stderr)


@pytest.mark.slow
def test_seed_commands_on_upstream_layout_train_export_opt(tiny_data, tmp_path):
    """The tutorial's pruner config + slim file, as written (tags, top-level keys, no skip),
    with weights from `pretrain_weights` (an 80-class PicoDet-m file standing for the URL):
    train --eval, then export --run --lite, and the .nb has the sparse convs."""
    import numpy as np
    import paddle
    from picosparse import paddle_env, weights as W
    coco_m = tmp_path / "picodet_m_320_coco.pdparams"
    W.save(paddle_env.build_model(load_detector(M_CFG)).state_dict(), coco_m)
    run = tmp_path / "m75"
    args = _with_o(["train", "-c", str(PRUNER_CFG), "--slim-config", str(SEED_SLIM), "--eval",
                    "--out", str(run)],
                   _tiny(tiny_data) + [f"pretrain_weights={coco_m}",
                                       "UnstructuredPruner.pruning_epochs=1",
                                       "UnstructuredPruner.tunning_epochs=1",
                                       "UnstructuredPruner.pruning_steps=1",
                                       "TrainReader.batch_size=2"])
    r = _run_cli(args)
    assert r.exit_code == 0, r.output
    # 80-class head skipped (this data has 4 classes), said once
    assert r.stderr.count(f"warning: pretrain_weights {coco_m.name}: loaded") == 1
    state = paddle.load(str(run / "model_final.pdparams"))
    for name in SEED_SKIPPED_M:
        assert float((np.asarray(state[name]) == 0).mean()) < 0.05, name
    assert float((np.asarray(state["backbone.2_2._se.conv1.weight"]) == 0).mean()) == \
        pytest.approx(0.75, abs=0.01)
    r = _run_cli(["export", "--run", str(run), "--lite"])
    assert r.exit_code == 0, r.output
    assert "95 of 105 1x1 convs -> sparse_conv2d" in r.output


@pytest.mark.slow
def test_lcnet_v2_tagged_config_trains_sparse_alone_exports_and_converts(tiny_data, tmp_path):
    """An upstream-style tagged LCNet v2 config with `--sparsity` alone: train --eval (from
    scratch), export --lite with the sparse pass verified."""
    run = tmp_path / "lc75"
    ov = _tiny(tiny_data) + ["eval_size=[96,96]", "PicoHeadV2.static_assigner.topk=4",
                             "PicoHeadV2.assigner.topk=4", "epoch=4",
                             "LearningRate.schedulers.0.max_epochs=4"]
    r = _run_cli(_with_o(
        ["train", "-c", str(LCNET_CFG), "--sparsity", "0.75", "--from-scratch", "--eval",
         "--out", str(run)], ov))
    assert r.exit_code == 0, r.output
    assert "pruning_steps 4 -> 1" in r.stderr  # the built-in recipe fits its steps
    written = load_detector(run / "config.yml")
    assert written.prune.recipe == DEFAULT_RECIPE and written.prune.pruning_steps == 1
    r = _run_cli(["export", "--run", str(run), "--lite"])
    assert r.exit_code == 0, r.output
    assert "46 of 60 1x1 convs -> sparse_conv2d" in r.output
