"""Config loading: _BASE_ chains, -o overrides, our pruning section's validation, CLI errors."""

import pytest
from click.testing import CliRunner

from picosparse.cli import cli
from picosparse.config import load_detector
from picosparse.errors import ConfigError

from conftest import DEMO_CFG, DEMO_PRUNE, ROOT

M_CFG = ROOT / "configs/picodet/picodet_m_320_coco.yml"
S_CFG = ROOT / "configs/picodet/picodet_s_320_coco.yml"
M_75 = ROOT / "configs/prune/picodet_m_unstructured_prune_75.yml"
M_85 = ROOT / "configs/prune/picodet_m_unstructured_prune_85.yml"


def write(p, text):
    p.write_text(text)
    return p


def test_shipped_configs_resolve():
    m = load_detector(M_CFG, slim_config=M_75)
    assert m.data["architecture"] == "PicoDet"
    assert m.data["ESNet"]["scale"] == 1.0 and m.data["CSPPAN"]["out_channels"] == 128
    assert m.data["num_classes"] == 80 and m.data["use_ema"] is True
    p = m.prune
    assert (p.stable_epochs, p.pruning_epochs, p.tunning_epochs, p.pruning_steps) == (0, 150, 150, 300)
    assert (p.ratio, p.initial_ratio, p.prune_params_type) == (0.75, 0.15, "conv1x1_only")
    assert m.data["LearningRate"]["base_lr"] == 0.15
    p85 = load_detector(M_CFG, slim_config=M_85).prune
    assert (p85.ratio, p85.initial_ratio) == (0.85, 0.20)
    s = load_detector(S_CFG)
    assert s.data["ESNet"]["scale"] == 0.75 and s.data["PicoHead"]["feat_in_chan"] == 96
    assert s.prune is None
    demo = load_detector(DEMO_CFG, slim_config=DEMO_PRUNE)
    assert demo.prune.ratio == 0.75 and demo.data["epoch"] == 8


def test_base_later_wins_and_file_wins(tmp_path):
    write(tmp_path / "a.yml", "x: 1\nnest: {a: 1, b: 1}\narchitecture: PicoDet\n")
    write(tmp_path / "b.yml", "x: 2\nnest: {b: 2}\n")
    cfg = write(tmp_path / "c.yml", "_BASE_: [a.yml, b.yml]\nnest: {c: 3}\n")
    data = load_detector(cfg).data
    assert data["x"] == 2 and data["nest"] == {"a": 1, "b": 2, "c": 3}


def test_overrides_precedence_and_list_index():
    cfg = load_detector(DEMO_CFG, slim_config=DEMO_PRUNE, sparsity=0.5,
                        overrides=["TrainReader.batch_size=3", "UnstructuredPruner.ratio=0.6",
                                   "LearningRate.schedulers.0.max_epochs=7"])
    assert cfg.data["TrainReader"]["batch_size"] == 3
    assert cfg.data["LearningRate"]["schedulers"][0]["max_epochs"] == 7
    assert cfg.prune.ratio == 0.5  # flag beats -o beats slim file
    assert load_detector(DEMO_CFG, slim_config=DEMO_PRUNE, sparsity=0).prune is None


@pytest.mark.parametrize("body,needle", [
    ("UnstructuredPruner: {ratio: 0.75, pruning_epochs: 3, pruning_steps: 2, bogus: 1}",
     "unknown key UnstructuredPruner.bogus"),
    ("UnstructuredPruner: {ratio: 1.5, pruning_epochs: 3, pruning_steps: 2}",
     "UnstructuredPruner.ratio must be a number in [0, 1)"),
    ("UnstructuredPruner: {ratio: 0.5, pruning_epochs: -1, pruning_steps: 2}",
     "UnstructuredPruner.pruning_epochs must be an integer >= 0"),
    ("UnstructuredPruner: {ratio: 0.5, pruning_epochs: three, pruning_steps: 2}",
     "UnstructuredPruner.pruning_epochs must be an integer >= 0, got 'three'"),
    ("UnstructuredPruner: {ratio: 0.5, pruning_epochs: 3}", "UnstructuredPruner.pruning_steps is required"),
    ("UnstructuredPruner: {ratio: 0.5, pruning_epochs: 3, pruning_steps: 2, skip: [{nam: x}]}",
     "unknown key UnstructuredPruner.skip[0].nam"),
    ("UnstructuredPruner: {ratio: 0.5, pruning_epochs: 3, pruning_steps: 2, skip: [{regex: '('}]}",
     "UnstructuredPruner.skip[0].regex is not a valid regex"),
    ("epoch: -2", "epoch must be an integer >= 0"),
])
def test_prune_section_errors_name_file_and_key(tmp_path, body, needle):
    slim = write(tmp_path / "slim.yml", body + "\n")
    with pytest.raises(ConfigError) as e:
        load_detector(DEMO_CFG, slim_config=slim)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_base_and_file(tmp_path):
    bad = write(tmp_path / "bad.yml", "_BASE_: [nope.yml]\narchitecture: PicoDet\n")
    with pytest.raises(ConfigError, match=r"bad.yml: _BASE_ entry 'nope.yml' does not exist"):
        load_detector(bad)
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_detector(tmp_path / "absent.yml")
    with pytest.raises(ConfigError, match=r"--sparsity must be in \[0, 1\)"):
        load_detector(DEMO_CFG, slim_config=DEMO_PRUNE, sparsity=1.0)
    with pytest.raises(ConfigError, match="not a PaddleDetection class|unknown tag"):
        from picosparse import paddle_env
        paddle_env.activate(load_detector(write(tmp_path / "t.yml", (
            f"_BASE_: [{DEMO_CFG}]\nTrainDataset: !NoSuchDataSet {{dataset_dir: x}}\n"))).data)


def test_cli_config_errors_are_one_line_exit_2(tmp_path):
    bad = write(tmp_path / "broken.yml", "_BASE_: [missing.yml]\n")
    r = CliRunner().invoke(cli, ["layers", "-c", str(bad)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        f"Error: {bad}: _BASE_ entry 'missing.yml' does not exist ({tmp_path / 'missing.yml'})"]
    garbage = write(tmp_path / "garbage.yml", "a: [1, 2\n")
    r = CliRunner().invoke(cli, ["train", "-c", str(garbage), "--from-scratch"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.startswith(f"Error: {garbage}: not valid YAML")
    r = CliRunner().invoke(cli, ["train", "-c", str(DEMO_CFG), "--slim-config", str(DEMO_PRUNE),
                                 "--sparsity", "1.2", "--from-scratch"])
    assert r.exit_code == 2 and "--sparsity must be in [0, 1), got 1.2" in r.output


def test_cli_help_lists_commands_with_examples():
    r = CliRunner().invoke(cli, ["--help"])
    for cmd in ("train", "eval", "export", "opt", "bench", "run", "data", "layers", "env", "prune"):
        assert f"  {cmd} " in r.output
    for cmd in ("train", "eval", "export", "opt", "bench", "run", "layers", "env", "prune"):
        h = CliRunner().invoke(cli, [cmd, "--help"])
        assert h.exit_code == 0 and "Example" in h.output, cmd
    v = CliRunner().invoke(cli, ["--version"])
    assert v.exit_code == 0 and "picosparse, version" in v.output


@pytest.mark.parametrize("config,slim", [
    (M_CFG, None), (M_CFG, M_75), (M_CFG, M_85), (S_CFG, None), (DEMO_CFG, None),
    (DEMO_CFG, DEMO_PRUNE), (ROOT / "configs/picodet/picodet_s_320_coco_lcnet.yml", None)])
def test_shipped_configs_build_model_lr_and_optimizer(config, slim):
    """Every shipped config combination builds in PaddleDetection (model, LR, optimizer)."""
    from picosparse import paddle_env
    cfg = load_detector(config, slim_config=slim)
    model = paddle_env.build_model(cfg)
    lr = paddle_env.create("LearningRate")(10)
    opt = paddle_env.create("OptimizerBuilder")(lr, model)
    assert opt.get_lr() > 0
    want = cfg.data["LearningRate"]["base_lr"]
    warm = [s for s in cfg.data["LearningRate"]["schedulers"]
            if (getattr(s, "tag", None) or s.get("name")) == "LinearWarmup"]
    if warm:
        want *= warm[0]["start_factor"]
    assert opt.get_lr() == pytest.approx(want)


# ---------------------------------------------------------------- sparse_block

@pytest.mark.parametrize("value", ["[0, 2]", "[1]", "[1, 2, 1]", "'1x2'", "[1, 2.0]",
                                   "[true, 2]", "null"])
def test_sparse_block_errors_name_file_and_key(tmp_path, value):
    slim = write(tmp_path / "slim.yml", "UnstructuredPruner: {ratio: 0.5, pruning_epochs: 3, "
                                        f"pruning_steps: 2, sparse_block: {value}}}\n")
    with pytest.raises(ConfigError) as e:
        load_detector(DEMO_CFG, slim_config=slim)
    msg = str(e.value)
    assert msg.startswith(f"{slim}: UnstructuredPruner.sparse_block must be [m, n], two "
                          "integers >= 1") and "\n" not in msg


def test_sparse_block_default_recipe_file_and_flag_precedence(tmp_path):
    assert load_detector(DEMO_CFG, sparsity=0.75).prune.sparse_block == [1, 1]
    assert not load_detector(DEMO_CFG, sparsity=0.75).prune.blocked
    built_in = load_detector(DEMO_CFG, sparsity=0.75, sparse_block=[1, 2])
    assert built_in.prune.sparse_block == [1, 2] and built_in.prune.blocked
    assert built_in.data["UnstructuredPruner"]["sparse_block"] == [1, 2]  # config.yml says it
    from picosparse import yamlio
    assert yamlio.load(built_in.dump(), tags=True)["UnstructuredPruner"]["sparse_block"] == [1, 2]
    slim = write(tmp_path / "slim.yml", "UnstructuredPruner: {ratio: 0.5, pruning_epochs: 3, "
                                        "pruning_steps: 2, sparse_block: [2, 2]}\n")
    assert load_detector(DEMO_CFG, slim_config=slim).prune.sparse_block == [2, 2]
    assert load_detector(DEMO_CFG, slim_config=slim,
                         sparse_block=[1, 2]).prune.sparse_block == [1, 2]
    from picosparse.config import default_recipe
    assert default_recipe({"epoch": 4}, 0.5, [1, 4])["sparse_block"] == [1, 4]
    assert default_recipe({"epoch": 4}, 0.5)["sparse_block"] == [1, 1]
    with pytest.raises(ConfigError, match=r"^--sparse-block 1x2: needs pruning"):
        load_detector(DEMO_CFG, sparse_block=[1, 2])
    assert load_detector(DEMO_CFG, sparsity=0, sparse_block=[1, 2]).prune is None  # dense


@pytest.mark.parametrize("cmd", ["train", "prune"])
@pytest.mark.parametrize("value", ["1y2", "0x2", "1x2x3", "x2", "2"])
def test_cli_sparse_block_flag_errors_one_line_exit_2(tmp_path, cmd, value):
    args = [cmd, "-c", str(DEMO_CFG), "--sparsity", "0.5", "--sparse-block", value]
    args += ["--from-scratch"] if cmd == "train" else [
        "--weights", str(tmp_path / "w.pdparams"), "--out", str(tmp_path / "o.pdparams")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [
        f"Error: --sparse-block {value}: must be MxN, two integers >= 1 (e.g. 1x2)"]


def test_cli_sparse_block_help_says_what_it_is_for():
    for cmd in ("train", "prune"):
        h = CliRunner().invoke(cli, [cmd, "--help"], terminal_width=200)
        text = " ".join(h.output.split())
        assert "--sparse-block MxN" in text, cmd
        assert "Pairs of input channels (1x2) let the x86 BF16 sparse kernel pair weights" \
            in text, cmd
        assert "costs some accuracy versus unstructured" in text, cmd


def test_pipeline_steps_take_sparse_block(tmp_path):
    from picosparse.pipeline.schema import KINDS
    for kind in ("train", "prune"):
        assert KINDS[kind].params["sparse_block"].default is None, kind

    def pipeline(block):
        return write(tmp_path / "p.yml", (
            "steps:\n"
            f"  sparse:\n    kind: prune\n    config: {DEMO_CFG}\n    sparsity: 0.5\n"
            f"    weights: {DEMO_CFG}\n    sparse_block: {block}\n"))
    r = CliRunner().invoke(cli, ["-q", "run", str(pipeline("[1, 2]")), "--out",
                                 str(tmp_path / "run"), "--dry-run"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["-q", "run", str(pipeline("[1, 0]")), "--out",
                                 str(tmp_path / "run"), "--dry-run"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        f"Error: {tmp_path / 'p.yml'}: steps.sparse.sparse_block: must be [m, n], two integers "
        ">= 1 (e.g. [1, 2]) (got [1, 0])"]
