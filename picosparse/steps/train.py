"""Dense or GMP-sparse training of a PicoDet config, with exact resume, on a CPU, a GPU or
several processes of paddle.distributed.launch (`picosparse train --nproc N` starts it).

Our own loop over PaddleDetection's parts (reader, model, LR, optimizer, EMA, COCO metric)
rather than ppdet's Trainer, whose pruning path crashes with EMA, restarts the ramp on resume
and ignores skip lists (STACK.md). Order per iteration is ppdet's: forward, backward,
optimizer, LR, pruner, EMA; with one change: pruned weights are zeroed right after the pruner
step, so the EMA averages the weights the model actually uses.

Several processes, as PaddleDetection runs them: each rank trains on its shard of every
epoch (DistributedBatchSampler), gradients are all-reduced (DataParallel), and only rank 0
evaluates, writes files and shows progress. Checkpoints hold every rank's RNG states, so a
resumed job repeats each rank's augmentations; it must have as many processes as the run.
"""

import contextlib
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from picosparse import checkpoint, device as D, paddle_env, progress, trainlock, weights as W
from picosparse.atomic import write_text
from picosparse.errors import ConfigError, DataError, ParamError
from picosparse.params import at_least, check, device_param, param, sparse_block_param
from picosparse.sparsity import report
from picosparse.sparsity.pruner import GMP
from picosparse.steps.data_paths import check_dataset
from picosparse.steps.evaluate import coco_map
from picosparse.steps.loaders import eval_loader, train_loader


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    """`picosparse train` / the pipeline kind `train`; checked when made."""

    pretrained: str = param(None, "source?", help=(
        "Converged dense weights (.pdparams path or URL) [the config's pretrain_weights]."))
    from_scratch: bool = param(False, "bool", help="Train without pretrained weights.")
    eval: bool = param(False, "bool", help=(
        "COCO mAP at every snapshot (rank 0); keep the best model."))
    resume: bool = param(False, "bool", only="cli", help=(
        "Continue the run in --out from its newest readable checkpoint; flags not given are "
        "the run's own."))
    # None: 0, or a resumed run's own seed; a pipeline records 0 (its resume is by cache key)
    seed: int = param(None, "int?", check=at_least(0), pipeline=dict(type="int", default=0),
                      help="Random seed [0; with --resume, the run's].")
    device: str = device_param()
    nproc: int = param(1, "int", only="cli", check=at_least(1), help=(
        "Training processes: runs paddle.distributed.launch (one GPU each, or CPU processes "
        "over gloo); logs in OUT/log/, only rank 0 writes files and progress."))
    # applied when the config is resolved (config.load_detector), like --sparsity
    sparse_block: list = sparse_block_param()

    def __post_init__(self):
        check(self)
        if self.pretrained is not None and self.from_scratch:
            raise ParamError("from_scratch", "with {pretrained}: they exclude each other",
                             True, TrainParams, show_value=False)


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    paddle_env.stack().paddle.seed(seed)


def _seed_data(seed, rank):
    """Python's and numpy's generators (the augmentations) per rank: ranks flip and resize
    their own batches independently; paddle's (the model's init) stays the same everywhere."""
    random.seed(f"{seed}/{rank}")
    np.random.seed([seed, rank])


class _Records:
    """metrics.jsonl + train.log in OUT (rank 0 only)."""

    def __init__(self, out, enabled, resume_iter=None):
        self.enabled = enabled
        self.metrics = Path(out) / "metrics.jsonl"
        self.log = Path(out) / "train.log"
        self.torn = 0
        if enabled and resume_iter is not None and self.metrics.is_file():
            # drop what the killed run logged after its last checkpoint (the log then reads
            # exactly like an uninterrupted run's) and a line the kill cut in half
            keep = []
            for ln in self.metrics.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(ln) if ln.strip() else None
                except ValueError:
                    self.torn += 1
                    continue
                if isinstance(rec, dict) and rec.get("iter", 0) <= resume_iter:
                    keep.append(ln)
            write_text(self.metrics, "".join(ln + "\n" for ln in keep))

    def metric(self, rec):
        if self.enabled:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")

    def line(self, text):
        if self.enabled:
            with open(self.log, "a") as f:
                f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text + "\n")


def initial_weights(cfg, pretrained, from_scratch):
    """(path or URL to start from, the flag/key that named it): --pretrained, else the
    config's pretrain_weights (as PaddleDetection's tools/train.py), else (None, None)."""
    if pretrained is not None:
        return pretrained, "--pretrained"
    if not from_scratch and cfg.get("pretrain_weights"):
        return str(cfg.get("pretrain_weights")), "pretrain_weights"
    return None, None


def preflight(cfg, out, pretrained=None, from_scratch=False, resume=False):
    """The checks that need no Paddle: flags, epochs, dataset folders, checkpoints in OUT."""
    if pretrained is not None and from_scratch:
        raise ParamError("from_scratch", "with {pretrained}: they exclude each other", True,
                         TrainParams, show_value=False)
    if not resume and initial_weights(cfg, pretrained, from_scratch)[0] is None \
            and not from_scratch:
        raise ParamError("pretrained", "is required (converged dense weights; a path or URL) "
                         "unless the config sets pretrain_weights or {from_scratch} is given",
                         owner=TrainParams)
    epochs = cfg.get("epoch")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"{cfg.path}: epoch must be an integer >= 1, got {epochs!r}")
    if cfg.prune is not None and cfg.prune.total_epochs > epochs:
        raise ConfigError(
            f"{cfg.path}: UnstructuredPruner stable+pruning+tunning epochs "
            f"({cfg.prune.total_epochs}) exceed epoch ({epochs}); raise epoch or shorten them")
    check_dataset(cfg, "TrainDataset")
    has = checkpoint.exists(out)
    if resume and not has:
        raise DataError(f"--resume: no checkpoint in {checkpoint.root(out)}")
    if not resume and has:
        raise DataError(f"--out {out}: holds checkpoints of an earlier run; pass --resume to "
                        "continue it or choose another --out")


def _source(path_or_url):
    """What identifies a weights file across runs: a URL as given, a path made absolute."""
    if path_or_url is None:
        return None
    return str(path_or_url) if W.is_url(path_or_url) else str(Path(path_or_url).resolve())


def _config_hash(cfg):
    return hashlib.sha256(cfg.dump().encode()).hexdigest()[:16]


def _resume_seed(ck, out, cfg, pretrained, from_scratch, seed, world):
    """Check what the user gives now against what the run used; return the run's seed.

    Only what is given is compared: `--resume` alone continues the run as it was started.
    """
    run = ck["state"].get("run")
    if run is None:  # a checkpoint that recorded no run identity
        return 0 if seed is None else seed
    if run["config"] != _config_hash(cfg):
        raise ConfigError(f"--resume: the resolved config differs from the run in {out} "
                          f"({Path(out) / 'config.yml'}); resume with the same -c, "
                          "--slim-config, -o, --sparsity and --sparse-block, or choose another "
                          "--out")
    if from_scratch and run["init"] != "scratch":
        raise ConfigError(f"--resume: --from-scratch, but the run in {out} started from "
                          f"{run['init']}; drop --from-scratch")
    if pretrained is not None and _source(pretrained) != run["init"]:
        raise ConfigError(f"--resume: --pretrained {pretrained} is not what the run in {out} "
                          f"started from ({run['init']}); drop --pretrained or choose another "
                          "--out")
    if seed is not None and seed != run["seed"]:
        raise ConfigError(f"--resume: --seed {seed} differs from the run in {out} (seed "
                          f"{run['seed']}); drop --seed or choose another --out")
    check_world(run, out, world)
    return run["seed"]


def check_world(run, out, world):
    """A run resumes with as many processes as it trained with."""
    if run and run.get("world", world) != world:
        raise ConfigError(f"--resume: the run in {out} trained with {run['world']} "
                          f"process(es), this is {world}; resume with --nproc {run['world']} "
                          "(iterations per epoch and the GMP schedule depend on it)")


def train(cfg, out, params=TrainParams()):
    """Train `cfg` into `out`; see the module docstring. Returns paths and final numbers.
    (`params.nproc` is the CLI's: it starts the processes, each of which calls this.)"""
    p = params
    # Optimizer accumulators are named from paddle's global name counters when first used;
    # a fresh scope makes them identical in the run and in its resumption.
    with paddle_env.stack().paddle.utils.unique_name.guard():
        return _train(cfg, Path(out), p.pretrained, p.from_scratch, p.resume, p.eval, p.seed,
                      p.device)


def _train(cfg, out, pretrained, from_scratch, resume, do_eval, seed, device):
    t_start = time.monotonic()
    world, rank = D.world_and_rank()
    main = rank == 0
    if not main:
        progress.set_quiet(True)  # rank 0 alone reports
    if world > 1:
        _die_with_launcher()
    preflight(cfg, out, pretrained, from_scratch, resume)  # fail before creating OUT
    dev = D.select(device, cfg)  # said once training starts: errors before it stay one line
    with trainlock.hold(out) if main else contextlib.nullcontext():
        try:
            return _run(cfg, out, pretrained, from_scratch, resume, do_eval, seed, dev,
                        world, rank, t_start)
        except OSError as e:  # checkpoint.save reports its own; this is any other write
            full = checkpoint.disk_full(e, out, "the run's files")
            if full is None:
                raise
            raise full from None


def _run(cfg, out, pretrained, from_scratch, resume, do_eval, seed, dev, world, rank, t_start):
    main = rank == 0
    preflight(cfg, out, pretrained, from_scratch, resume)  # again: now that OUT is ours
    if do_eval and main:
        check_dataset(cfg, "EvalDataset")
    s = paddle_env.stack()
    paddle, dist = s.paddle, s.paddle.distributed
    scaler = _amp_scaler(cfg, dev)
    if world > 1:
        if not dev.is_gpu:
            os.environ["PADDLE_DISTRI_BACKEND"] = "gloo"  # CPU processes, even on a CUDA build
        dist.init_parallel_env()
    ck, note = None, None
    if resume:
        ck, _, note = checkpoint.load_newest(out)
        seed = _resume_seed(ck, out, cfg, pretrained, from_scratch, seed, world)
    elif seed is None:
        seed = 0
    init, init_flag = initial_weights(cfg, pretrained, from_scratch)
    run_id = {"config": _config_hash(cfg), "seed": seed, "world": world,
              "init": "scratch" if init is None else _source(init)}
    if ck is not None and ck["state"].get("run"):
        run_id["init"] = ck["state"]["run"]["init"]
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yml", cfg.dump())
        if note:
            progress.say(note)

    _seed_all(seed)
    model = paddle_env.build_model(cfg)
    if init is not None and ck is None:
        if main:
            local = W.resolve(init, flag=init_flag)  # rank 0 downloads, the others reuse it
        _barrier(world)
        if not main:
            local = W.resolve(init, flag=init_flag)
        W.load_pretrained(model, local, flag=init_flag)
    model = _sync_bn(cfg, model, dev, world)
    _seed_data(seed, rank)
    loader, sampler, seeder = train_loader(cfg, seed, rank)
    iters_per_epoch = len(sampler)
    if iters_per_epoch < 1:
        raise DataError("TrainDataset: fewer images than one batch per process "
                        f"(TrainReader.batch_size={cfg.get('TrainReader')['batch_size']}, "
                        f"{world} process(es))")
    # before any RNG state is restored: building the loaders draws nothing, and this keeps it so
    eval_data = eval_loader(cfg) if do_eval and main else None
    lr = paddle_env.create("LearningRate")(iters_per_epoch)
    optimizer = paddle_env.create("OptimizerBuilder")(lr, model)
    ema = None
    if cfg.get("use_ema", False):
        from ppdet.optimizer import ModelEMA
        # created before the pruner, so it never sees (or averages) mask buffers
        ema = ModelEMA(model, decay=cfg.get("ema_decay", 0.9998),
                       ema_decay_type=cfg.get("ema_decay_type", "threshold"),
                       cycle_epoch=cfg.get("cycle_epoch", -1),
                       ema_black_list=cfg.get("ema_black_list"),
                       ema_filter_no_grad=cfg.get("ema_filter_no_grad", False))
    start_epoch = it = 0
    if ck:
        model.set_state_dict(ck["model"])
        optimizer.set_state_dict(ck["optimizer"])
        if ema is not None and ck["ema"] is not None:
            ema.state_dict = dict(ck["ema"])
            e = ck["state"]["ema"]
            ema.step, ema.epoch = e["step"], e["epoch"]
            if e["decay"] is not None:
                ema._decay = e["decay"]
        if scaler is not None and ck["state"].get("scaler"):
            scaler.load_state_dict(ck["state"]["scaler"])
        start_epoch, it = ck["state"]["epoch"], ck["state"]["iter"]
    pruner = GMP(model, cfg.prune, iters_per_epoch, iteration=it) if cfg.prune else None
    section = cfg.data.get("UnstructuredPruner") or {}
    if pruner and main and section.get("pruning_steps") != cfg.prune.pruning_steps:
        # the built-in recipe fitted its steps to this run: the written config says what runs
        section["pruning_steps"] = cfg.prune.pruning_steps
        write_text(out / "config.yml", cfg.dump())
    if ck and pruner:
        pruner.restore(ck["masks"])
    if ck:
        checkpoint.set_rng_state(checkpoint.rank_rng(ck, rank))
    net = model
    if world > 1:
        net = paddle.DataParallel(model, find_unused_parameters=cfg.get(
            "find_unused_parameters", False))

    rec = _Records(out, main, resume_iter=it if ck else None)
    if rec.torn:
        rec.line(f"metrics.jsonl: skipped {rec.torn} torn line(s) left by the interrupted run")
    if note:
        rec.line(note)
    epochs, log_iter = cfg.get("epoch"), max(1, cfg.get("log_iter", 20))
    snapshot = max(1, cfg.get("snapshot_epoch", 1))
    rec.line(f"{'resume' if ck else 'start'}: epoch {start_epoch}/{epochs}, iter {it}, "
             f"{iters_per_epoch} iters/epoch x {world} process(es), {dev.line()}, "
             f"{'GMP to %.2f' % cfg.prune.ratio if cfg.prune else 'dense'}, "
             f"ema={ema is not None}, amp={scaler is not None}, seed={seed}")
    progress.say(dev.line())
    best = dict(ck["state"].get("best") or {}) if ck else {}
    evals = list(ck["state"].get("evals") or []) if ck else []
    final_state = None
    total = (epochs - start_epoch) * iters_per_epoch
    t_log, n_log = time.monotonic(), 0
    with progress.Progress(total, "train", every=log_iter) as bar:
        for epoch in range(start_epoch, epochs):
            loader.dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)  # shuffle order depends on the epoch only
            seeder.epoch = epoch  # so do the workers' seeds
            net.train()
            seen = []
            for data in loader:
                data["epoch_id"] = epoch
                if world > 1:
                    seen += [int(i) for i in data["im_id"].numpy().ravel()]
                loss = _step(net, data, optimizer, scaler, cfg)
                cur_lr = optimizer.get_lr()
                lr_sched = optimizer._learning_rate
                if hasattr(lr_sched, "step"):
                    lr_sched.step()
                if pruner:
                    pruner.step()
                    pruner.apply()
                optimizer.clear_grad()
                if ema is not None:
                    ema.update()
                it += 1
                n_log += 1
                if it % log_iter == 0 or it == epochs * iters_per_epoch:
                    dt = time.monotonic() - t_log
                    bs = cfg.get("TrainReader")["batch_size"] * world
                    row = {"epoch": epoch, "iter": it, "loss": float(loss), "lr": float(cur_lr),
                           "ratio": pruner.ratio if pruner else 0.0,
                           "sparsity": _live_sparsity(model, pruner),
                           "ips": round(n_log * bs / dt, 2) if dt > 0 else None}
                    rec.metric(row)
                    rec.line(" ".join(f"{k}={v}" for k, v in row.items()))
                    bar.fields.update(epoch=epoch, loss=row["loss"], ips=row["ips"] or 0.0)
                    if pruner:
                        bar.fields.update(ratio=row["ratio"], sparsity=row["sparsity"])
                    t_log, n_log = time.monotonic(), 0
                bar.update(1)
            if world > 1:
                rec.line(_shards_line(epoch, _gather(seen, world)))
            last = epoch == epochs - 1
            if not ((epoch + 1) % snapshot == 0 or last):
                continue
            raw = {k: v.clone() for k, v in model.state_dict().items()}
            final_state = ema.apply() if ema is not None else raw
            if pruner:
                final_state = pruner.masked(final_state)
            if eval_data is not None:  # rank 0 only, as PaddleDetection; the others go on
                model.set_dict(final_state)
                m = coco_map(model, *eval_data)
                model.set_dict(raw)
                m = {"epoch": epoch + 1, **m}
                evals.append(m)
                rec.line(f"eval epoch {epoch + 1}: " + json.dumps(m))
                if m["mAP"] >= best.get("mAP", -1):
                    best = m
                    W.save(final_state, out / "best_model.pdparams")
            rngs = _gather(checkpoint.rng_state(), world)  # every rank's, at this same point
            if main:
                st = {"epoch": epoch + 1, "iter": it, "run": run_id, "best": best,
                      "evals": evals, "ratio": pruner.ratio if pruner else 0.0}
                checkpoint.save(out, epoch + 1, st, raw, optimizer,
                                masks=pruner.masks() if pruner else None, ema=ema, rng=rngs,
                                scaler=scaler)

    if final_state is None:  # resumed from the final checkpoint: nothing left to train
        final_state = _final_from_checkpoint(model, pruner, ema)
    result = {"out": out, "config": out / "config.yml", "weights": out / "model_final.pdparams",
              "epochs": epochs, "iters": it, "iters_per_epoch": iters_per_epoch,
              "processes": world, "rank": rank, "device": dev.place, "best": best or None,
              "evals": evals, "seconds": time.monotonic() - t_start, "sparsity": None, "layers": {}}
    if world > 1:
        digests = _gather(_digest(model, pruner), world)
        result["rank_digests"] = digests
        same = len(set(digests)) == 1
        rec.line(f"ranks {'agree' if same else 'DISAGREE'}: parameters and masks "
                 f"sha256 {' '.join(digests)}")
        if not same:
            progress.say("warning: the training processes ended with different parameters "
                         f"or masks ({' '.join(digests)}); rank 0's are saved")
    if pruner:
        sp = report.sparsity(final_state, pruner.decisions,
                             cfg.prune.sparse_block if cfg.prune.blocked else None)
        result["sparsity"], result["layers"] = sp["overall"], sp["layers"]
        if "block_sparsity" in sp:
            result["block_sparsity"] = sp["block_sparsity"]
        result["min_layer_sparsity"] = min(sp["layers"].values()) if sp["layers"] else None
        result["target"] = cfg.prune.ratio
    if main:
        W.save(final_state, result["weights"])
        rec.line(f"done: {it} iters in {result['seconds']:.0f}s, sparsity={result['sparsity']}")
    return result


def _step(net, data, optimizer, scaler, cfg):
    """Forward, backward and optimizer step; under AMP with paddle.amp's O1 and loss scaling."""
    if scaler is None:
        loss = net(data)["loss"]
        loss.backward()
        optimizer.step()
        return loss
    paddle = paddle_env.stack().paddle
    with paddle.amp.auto_cast(enable=True, level="O1",
                              custom_white_list=cfg.get("custom_white_list"),
                              custom_black_list=cfg.get("custom_black_list")):
        loss = net(data)["loss"]
    scaled = scaler.scale(loss)
    scaled.backward()
    scaler.minimize(optimizer, scaled)
    return loss


def _amp_scaler(cfg, dev):
    """paddle.amp's GradScaler when the config sets `amp: true` (GPU only), else None."""
    if not cfg.get("amp", False):
        return None
    level = cfg.get("amp_level", "O1")
    if level != "O1":
        raise ConfigError(f"{cfg.path}: amp_level {level}: only O1 is supported (GMP masks and "
                          "the EMA need FP32 weights; O2 keeps FP16 ones)")
    if not dev.is_gpu:
        raise D.DeviceError(f"amp: true needs a GPU; this run is on {dev.place} ({dev.reason})"
                            ": set -o amp=false or train on a GPU")
    paddle = paddle_env.stack().paddle
    return paddle.amp.GradScaler(enable=True,
                                 init_loss_scaling=cfg.get("init_loss_scaling", 1024))


def _sync_bn(cfg, model, dev, world):
    """`norm_type: sync_bn`: SyncBatchNorm across several GPU processes, as PaddleDetection;
    elsewhere plain BatchNorm, said in one line."""
    if cfg.get("norm_type") != "sync_bn":
        return model
    if dev.is_gpu and world > 1:
        progress.say(f"norm_type: sync_bn: BatchNorm statistics synchronised across {world} "
                     "GPU processes")
        return paddle_env.stack().paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    progress.say(f"note: norm_type: sync_bn needs several GPU processes; this run ({dev.place},"
                 f" {world} process(es)) uses plain BatchNorm, as PaddleDetection does")
    return model


def _die_with_launcher():
    """The launcher starts each rank in its own session: if the launcher is killed outright,
    the ranks would train on as orphans (holding OUT's lock). Linux ends them with it."""
    import ctypes
    import signal
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the launcher's own signal handling still stops its ranks
    if os.getppid() == 1:  # the launcher died before prctl took effect
        os._exit(1)


def _barrier(world):
    if world > 1:
        paddle_env.stack().paddle.distributed.barrier()


def _gather(obj, world):
    """[obj of rank 0, obj of rank 1, ...]; every rank must call it at the same point."""
    if world == 1:
        return [obj]
    got = []
    paddle_env.stack().paddle.distributed.all_gather_object(got, obj)
    return got


def _shards_line(epoch, seen):
    """Which images each rank trained on this epoch, as one train.log line."""
    sets = [set(s) for s in seen]
    union = set().union(*sets)
    shared = sum(len(s) for s in sets) - len(union)
    return (f"epoch {epoch + 1} data: " + " + ".join(str(len(s)) for s in seen) +
            f" images on {len(seen)} ranks, {len(union)} distinct, {shared} on two ranks")


def _digest(model, pruner):
    """sha256 (16 hex) of the trainable parameters and the masks: the same on every rank.

    BatchNorm running statistics are left out: each rank computes them on its own shard
    (rank 0's are saved, as in PaddleDetection)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.stop_gradient:  # BatchNorm's running mean/variance (paddle keeps them as params)
            continue
        h.update(name.encode())
        h.update(p.numpy().tobytes())
    for name, m in sorted((pruner.masks() if pruner else {}).items()):
        h.update(name.encode())
        h.update(m.tobytes())
    return h.hexdigest()[:16]


def _live_sparsity(model, pruner):
    if pruner is None:
        return None
    return report.sparsity(model.state_dict(), pruner.decisions)["overall"]


def _final_from_checkpoint(model, pruner, ema):
    state = ema.apply() if ema is not None else model.state_dict()
    return pruner.masked(state) if pruner else state
