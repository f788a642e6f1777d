"""Dense or GMP-sparse training of a PicoDet config, with exact resume.

Our own loop over PaddleDetection's parts (reader, model, LR, optimizer, EMA, COCO metric)
rather than ppdet's Trainer, whose pruning path crashes with EMA, restarts the ramp on resume
and ignores skip lists (STACK.md). Order per iteration is ppdet's: forward, backward,
optimizer, LR, pruner, EMA; with one change: pruned weights are zeroed right after the pruner
step, so the EMA averages the weights the model actually uses.
"""

import contextlib
import hashlib
import io
import json
import random
import time
from pathlib import Path

import numpy as np

from picosparse import checkpoint, paddle_env, progress, weights as W
from picosparse.atomic import write_text
from picosparse.errors import ConfigError, DataError
from picosparse.sparsity import report
from picosparse.sparsity.pruner import GMP
from picosparse.steps.data_paths import check_dataset
from picosparse.steps.evaluate import coco_map, eval_loader


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    paddle_env.stack().paddle.seed(seed)


def _fingerprint(cfg, pretrained, seed):
    blob = json.dumps({"cfg": cfg.dump(), "pretrained": str(pretrained), "seed": seed},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Records:
    """metrics.jsonl + train.log in OUT (rank 0 only)."""

    def __init__(self, out, enabled, resume_iter=None):
        self.enabled = enabled
        self.metrics = Path(out) / "metrics.jsonl"
        self.log = Path(out) / "train.log"
        if enabled and resume_iter is not None and self.metrics.is_file():
            # drop what the killed run logged after its last checkpoint: the log then reads
            # exactly like an uninterrupted run's
            keep = [ln for ln in self.metrics.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("iter", 0) <= resume_iter]
            write_text(self.metrics, "".join(ln + "\n" for ln in keep))

    def metric(self, rec):
        if self.enabled:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")

    def line(self, text):
        if self.enabled:
            with open(self.log, "a") as f:
                f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text + "\n")


def _validate(cfg, out, pretrained, from_scratch, resume):
    if not resume and pretrained is None and not from_scratch:
        raise ConfigError("--pretrained is required (converged dense weights; a path or URL) "
                          "unless --from-scratch")
    if pretrained is not None and from_scratch:
        raise ConfigError("--pretrained and --from-scratch exclude each other")
    epochs = cfg.get("epoch")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"{cfg.path}: epoch must be an integer >= 1, got {epochs!r}")
    if cfg.prune is not None and cfg.prune.total_epochs > epochs:
        raise ConfigError(
            f"{cfg.path}: UnstructuredPruner stable+pruning+tunning epochs "
            f"({cfg.prune.total_epochs}) exceed epoch ({epochs}); raise epoch or shorten them")
    check_dataset(cfg, "TrainDataset")
    ck = checkpoint.latest(out)
    if resume and ck is None:
        raise DataError(f"--resume: no checkpoint in {Path(out) / 'checkpoints'}")
    if not resume and ck is not None:
        raise DataError(f"--out {out}: holds checkpoints of an earlier run; pass --resume to "
                        "continue it or choose another --out")
    return ck


def train(cfg, out, pretrained=None, from_scratch=False, resume=False, do_eval=False, seed=0):
    """Train `cfg` into `out`; see the module docstring. Returns paths and final numbers."""
    # Optimizer accumulators are named from paddle's global name counters when first used;
    # a fresh scope makes them identical in the run and in its resumption.
    with paddle_env.stack().paddle.utils.unique_name.guard():
        return _train(cfg, out, pretrained, from_scratch, resume, do_eval, seed)


def _train(cfg, out, pretrained, from_scratch, resume, do_eval, seed):
    t_start = time.monotonic()
    out = Path(out)
    ck_path = _validate(cfg, out, pretrained, from_scratch, resume)
    if do_eval:
        check_dataset(cfg, "EvalDataset")
    s = paddle_env.stack()
    paddle, dist = s.paddle, s.paddle.distributed
    world, rank = dist.get_world_size(), dist.get_rank()
    main = rank == 0
    ck = checkpoint.load(ck_path) if ck_path else None
    fp = _fingerprint(cfg, pretrained, seed)
    if ck and ck["state"].get("fingerprint") not in (None, fp):
        raise ConfigError(f"--resume: the config, --pretrained or --seed differ from the run "
                          f"in {out}; resume with the same ones or choose another --out")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yml", cfg.dump())

    _seed_all(seed)
    model = paddle_env.build_model(cfg)
    if pretrained is not None and ck is None:
        W.load_into(model, W.resolve(pretrained), flag="--pretrained")
    with contextlib.redirect_stdout(io.StringIO()):
        loader, sampler = _train_loader(cfg)
    iters_per_epoch = len(sampler)
    if iters_per_epoch < 1:
        raise DataError("TrainDataset: fewer images than one batch "
                        f"(TrainReader.batch_size={cfg.get('TrainReader')['batch_size']})")
    lr = paddle_env.create("LearningRate")(iters_per_epoch)
    optimizer = paddle_env.create("OptimizerBuilder")(lr, model)
    ema = None
    if cfg.get("use_ema", False):
        from ppdet.optimizer import ModelEMA
        # created before the pruner, so it never sees (or averages) mask buffers
        ema = ModelEMA(model, decay=cfg.get("ema_decay", 0.9998),
                       ema_decay_type=cfg.get("ema_decay_type", "threshold"),
                       cycle_epoch=cfg.get("cycle_epoch", -1),
                       ema_black_list=cfg.get("ema_black_list"))
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
        start_epoch, it = ck["state"]["epoch"], ck["state"]["iter"]
    pruner = GMP(model, cfg.prune, iters_per_epoch, iteration=it) if cfg.prune else None
    if ck and pruner:
        pruner.restore(ck["masks"])
    if ck:
        checkpoint.set_rng_state(ck["rng"])
    net = model
    if world > 1:
        dist.init_parallel_env()
        net = paddle.DataParallel(model, find_unused_parameters=cfg.get(
            "find_unused_parameters", False))

    rec = _Records(out, main, resume_iter=it if ck else None)
    epochs, log_iter = cfg.get("epoch"), max(1, cfg.get("log_iter", 20))
    snapshot = max(1, cfg.get("snapshot_epoch", 1))
    rec.line(f"{'resume' if ck else 'start'}: epoch {start_epoch}/{epochs}, iter {it}, "
             f"{iters_per_epoch} iters/epoch x {world} worker(s), "
             f"{'GMP to %.2f' % cfg.prune.ratio if cfg.prune else 'dense'}, ema={ema is not None}")
    best = dict(ck["state"].get("best") or {}) if ck else {}
    evals = list(ck["state"].get("evals") or []) if ck else []
    eval_data = eval_loader(cfg) if do_eval else None
    final_state = None
    total = (epochs - start_epoch) * iters_per_epoch
    t_log, n_log = time.monotonic(), 0
    with progress.Progress(total if main else None, "train", every=log_iter) as bar:
        for epoch in range(start_epoch, epochs):
            loader.dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)  # shuffle order depends on the epoch only
            net.train()
            for data in loader:
                data["epoch_id"] = epoch
                loss = net(data)["loss"]
                loss.backward()
                optimizer.step()
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
            last = epoch == epochs - 1
            if not ((epoch + 1) % snapshot == 0 or last):
                continue
            raw = {k: v.clone() for k, v in model.state_dict().items()}
            final_state = ema.apply() if ema is not None else raw
            if pruner:
                final_state = pruner.masked(final_state)
            if eval_data is not None:
                model.set_dict(final_state)
                m = coco_map(model, *eval_data)
                model.set_dict(raw)
                m = {"epoch": epoch + 1, **m}
                evals.append(m)
                rec.line(f"eval epoch {epoch + 1}: " + json.dumps(m))
                if main and m["mAP"] >= best.get("mAP", -1):
                    best = m
                    W.save(final_state, out / "best_model.pdparams")
            if main:
                st = {"epoch": epoch + 1, "iter": it, "fingerprint": fp, "best": best,
                      "evals": evals, "ratio": pruner.ratio if pruner else 0.0}
                checkpoint.save(out, epoch + 1, st, raw, optimizer,
                                masks=pruner.masks() if pruner else None, ema=ema)

    if final_state is None:  # resumed from the final checkpoint: nothing left to train
        final_state = _final_from_checkpoint(model, pruner, ema)
    result = {"out": out, "config": out / "config.yml", "weights": out / "model_final.pdparams",
              "epochs": epochs, "iters": it, "iters_per_epoch": iters_per_epoch,
              "best": best or None, "evals": evals,
              "seconds": time.monotonic() - t_start, "sparsity": None, "layers": {}}
    if pruner:
        sp = report.sparsity(final_state, pruner.decisions)
        result["sparsity"], result["layers"] = sp["overall"], sp["layers"]
        result["min_layer_sparsity"] = min(sp["layers"].values()) if sp["layers"] else None
        result["target"] = cfg.prune.ratio
    if main:
        W.save(final_state, result["weights"])
        rec.line(f"done: {it} iters in {result['seconds']:.0f}s, sparsity={result['sparsity']}")
    return result


def _train_loader(cfg):
    """(paddle DataLoader, its batch sampler) from cfg's TrainReader and TrainDataset.

    Not ppdet's reader call: it starts an iterator at once, and ppdet's wrapper restarts one
    the moment an epoch ends. Their prefetch threads draw random augmentations from numpy's
    global generator at unpredictable times, so a seeded run or a resume would not repeat.
    Here an iterator exists only inside the epoch loop.
    """
    s = paddle_env.stack()
    reader = paddle_env.create("TrainReader")
    dataset = paddle_env.create("TrainDataset")()
    dataset.check_or_download_dataset()
    dataset.parse_dataset()
    dataset.set_transform(reader._sample_transforms)
    dataset.set_kwargs(**reader.kwargs)
    sampler = s.paddle.io.DistributedBatchSampler(dataset, batch_size=reader.batch_size,
                                                  shuffle=reader.shuffle,
                                                  drop_last=reader.drop_last)
    loader = s.paddle.io.DataLoader(dataset, batch_sampler=sampler,
                                    collate_fn=reader._batch_transforms,
                                    num_workers=cfg.get("worker_num", 0), return_list=False)
    return loader, sampler


def _live_sparsity(model, pruner):
    if pruner is None:
        return None
    return report.sparsity(model.state_dict(), pruner.decisions)["overall"]


def _final_from_checkpoint(model, pruner, ema):
    state = ema.apply() if ema is not None else model.state_dict()
    return pruner.masked(state) if pruner else state
