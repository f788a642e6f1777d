"""The skip policy: the seed's PicoDet-m policy, rules by name/regex/shape, `picosparse layers`."""

import json

from click.testing import CliRunner

from picosparse import paddle_env
from picosparse.cli import cli
from picosparse.config import PruneSpec, SkipRule, load_detector
from picosparse.sparsity import policy

from conftest import ROOT

M_CFG = ROOT / "configs/picodet/picodet_m_320_coco.yml"
M_75 = ROOT / "configs/prune/picodet_m_unstructured_prune_75.yml"


def test_seed_policy_on_picodet_m():
    """105 1x1 convs (STACK.md): 4 head output convs + 6 SE convs skipped, 95 pruned."""
    r = CliRunner().invoke(cli, ["layers", "-c", str(M_CFG), "--slim-config", str(M_75),
                                 "--json", "-"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    conv1x1 = [x for x in rows if len(x["shape"]) == 4 and x["shape"][2:] == [1, 1]]
    assert len(conv1x1) == 105
    pruned = [x for x in rows if x["pruned"]]
    assert len(pruned) == 95 and all(x in conv1x1 for x in pruned)
    head = sorted(x["name"] for x in rows if "head.head_cls" in x["reason"])
    assert head == [f"head.head_cls{i}.weight" for i in range(4)]
    se = sorted(x["name"] for x in rows if "_se" in x["reason"])
    assert se == sorted(f"backbone.{b}._se.conv{i}.weight" for b in ("2_3", "3_7", "4_3")
                        for i in (1, 2))
    # these are the seed's build-order names conv2d_17/18, 56/57, 75/76 in a fresh build
    assert {x["paddle_name"].split(".")[0] for x in rows if x["name"] in se} == {
        "conv2d_17", "conv2d_18", "conv2d_56", "conv2d_57", "conv2d_75", "conv2d_76"}
    # fresh model: random init (a rare exact 0.0 draw happens with some seeds)
    assert all(x["zeros"] < 0.001 for x in pruned)


def test_rules_by_glob_regex_shape_and_prune_all():
    cfg = load_detector(ROOT / "configs/demo/picodet_demo.yml")
    model = paddle_env.build_model(cfg)
    spec = PruneSpec(ratio=0.5, pruning_epochs=1, pruning_steps=1, skip=[
        SkipRule(name="neck.*"), SkipRule(regex=r"^head\.conv_feat\.cls_conv_pw1\."),
        SkipRule(shape=[-1, 64, 1, 1])])
    d = {x.name: x for x in policy.decide(model, spec)}
    assert all(not x.pruned for n, x in d.items() if n.startswith("neck."))
    assert not d["head.conv_feat.cls_conv_pw1.0.conv.weight"].pruned
    assert all(not x.pruned for x in d.values() if x.shape[1:] == (64, 1, 1))
    assert any(x.pruned for x in d.values())
    everything = PruneSpec(ratio=0.5, pruning_epochs=1, pruning_steps=1, prune_params_type=None)
    e = policy.decide(model, everything)
    assert any(x.pruned and x.shape[2:] == (3, 3) for x in e)  # 3x3 convs too
    assert not any(x.pruned and len(x.shape) == 1 for x in e)
    assert all(not x.pruned for x in policy.decide(model, None))
