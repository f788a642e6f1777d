"""Atomic training checkpoints: a run can be killed at any instant and resumed exactly.

Layout: OUT/checkpoints/epoch_<N>/ (complete, renamed into place) and OUT/checkpoints/latest
(a one-line pointer, rewritten atomically after the folder exists). Each holds the raw weights
(as the optimizer sees them), the masks, EMA, optimizer + LR state, RNG states, and state.json.
"""

import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np

from picosparse import paddle_env
from picosparse.weights import strip_masks
from picosparse.atomic import atomic_dir, write_text
from picosparse.errors import DataError

KEEP = 2


def root(out):
    return Path(out) / "checkpoints"


def latest(out):
    """Path of the newest complete checkpoint in OUT, or None."""
    ptr = root(out) / "latest"
    if not ptr.is_file():
        return None
    d = root(out) / ptr.read_text().strip()
    return d if (d / "state.json").is_file() else None


def rng_state():
    paddle = paddle_env.stack().paddle
    return {"numpy": np.random.get_state(), "python": random.getstate(),
            "paddle": [s for s in paddle.get_rng_state()]}


def set_rng_state(st):
    paddle = paddle_env.stack().paddle
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    paddle.set_rng_state(st["paddle"])


def save(out, epoch, state, model_state, optimizer, masks=None, ema=None):
    """Write checkpoint `epoch_<epoch>` atomically, move `latest`, prune old ones."""
    paddle = paddle_env.stack().paddle
    name = f"epoch_{epoch}"
    with atomic_dir(root(out) / name) as tmp:
        paddle.save(strip_masks(model_state), str(tmp / "model.pdparams"))
        paddle.save(optimizer.state_dict(), str(tmp / "optimizer.pdopt"))
        if masks is not None:
            paddle.save(masks, str(tmp / "masks.pdparams"))
        if ema is not None:
            paddle.save(ema.state_dict, str(tmp / "ema.pdparams"))
            state = dict(state, ema={"step": ema.step, "epoch": ema.epoch,
                                     "decay": getattr(ema, "_decay", None)})
        with open(tmp / "rng.pkl", "wb") as f:
            pickle.dump(rng_state(), f)
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    write_text(root(out) / "latest", name + "\n")
    done = sorted((p for p in root(out).glob("epoch_*") if p.is_dir()),
                  key=lambda p: int(p.name.split("_")[1]))
    for old in done[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)


def load(path):
    """Everything a checkpoint folder holds, as Python/paddle objects."""
    paddle = paddle_env.stack().paddle
    path = Path(path)
    try:
        ck = {"state": json.loads((path / "state.json").read_text()),
              "model": paddle.load(str(path / "model.pdparams")),
              "optimizer": paddle.load(str(path / "optimizer.pdopt"))}
        with open(path / "rng.pkl", "rb") as f:
            ck["rng"] = pickle.load(f)
        m, e = path / "masks.pdparams", path / "ema.pdparams"
        ck["masks"] = paddle.load(str(m)) if m.is_file() else None
        ck["ema"] = paddle.load(str(e)) if e.is_file() else None
    except (OSError, ValueError, pickle.UnpicklingError) as err:
        raise DataError(f"{path}: unreadable checkpoint ({err})") from None
    return ck
