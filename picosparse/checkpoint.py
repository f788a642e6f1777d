"""Crash-safe training checkpoints: a run can be killed (or lose power) at any instant and
resume exactly.

Layout: OUT/checkpoints/epoch_<N>/ (complete, fsynced, renamed into place) and
OUT/checkpoints/latest (a one-line pointer, rewritten the same way once the folder is on disk).
Each holds the raw weights (as the optimizer sees them), the masks, EMA, optimizer + LR state,
the loss scaler's state under AMP, every rank's RNG states, and state.json. The last KEEP are
kept, so when the newest is unreadable (a disk that lied about fsync, a truncated copy) the
run resumes from the one before it.
"""

import errno
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
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def root(out):
    return Path(out) / "checkpoints"


def _epoch_dirs(out):
    """Checkpoint folders in OUT, newest first."""
    found = []
    for p in root(out).glob("epoch_*"):
        tail = p.name.split("_", 1)[1]
        if p.is_dir() and tail.isdigit():
            found.append((int(tail), p))
    return [p for _, p in sorted(found, reverse=True)]


def _pointer(out):
    try:
        name = (root(out) / "latest").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return root(out) / name if name.startswith("epoch_") and "/" not in name else None


def latest(out):
    """Path of the newest checkpoint `latest` names (or, without a usable pointer, the newest
    folder), or None when OUT holds none."""
    ptr = _pointer(out)
    if ptr is not None and ptr.is_dir():
        return ptr
    dirs = _epoch_dirs(out)
    return dirs[0] if dirs else None


def exists(out):
    """True when OUT holds checkpoints of some run (readable or not)."""
    return (root(out) / "latest").exists() or bool(_epoch_dirs(out))


def rng_state():
    paddle = paddle_env.stack().paddle
    return {"numpy": np.random.get_state(), "python": random.getstate(),
            "paddle": [s for s in paddle.get_rng_state()]}


def set_rng_state(st):
    paddle = paddle_env.stack().paddle
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    paddle.set_rng_state(st["paddle"])


def rank_rng(ck, rank):
    """The RNG states rank `rank` saved in checkpoint `ck`."""
    rng = ck["rng"]
    return rng["ranks"][rank] if "ranks" in rng else rng  # older checkpoints: one process


def disk_full(err, out, what):
    """A DataError for ENOSPC/EDQUOT while writing `what`, naming the checkpoint that is intact;
    None for other errors."""
    if getattr(err, "errno", None) not in DISK_FULL:
        return None
    prev = latest(out)
    kept = (f"the last checkpoint ({prev.name}) is intact: free space, then run again with "
            "--resume" if prev is not None else "no checkpoint was written yet")
    return DataError(f"--out {out}: disk full while writing {what} ({err.strerror}); {kept}")


def save(out, epoch, state, model_state, optimizer, masks=None, ema=None, rng=None,
         scaler=None):
    """Write checkpoint `epoch_<epoch>` atomically and durably, move `latest`, drop old ones.

    `rng`: every rank's rng_state() (a list indexed by rank); default: this process's.
    A full disk raises a one-line DataError and leaves the previous checkpoint and `latest`
    as they were.
    """
    paddle = paddle_env.stack().paddle
    name = f"epoch_{epoch}"
    try:
        with atomic_dir(root(out) / name) as tmp:  # fsyncs files and folders around the rename
            paddle.save(strip_masks(model_state), str(tmp / "model.pdparams"))
            paddle.save(optimizer.state_dict(), str(tmp / "optimizer.pdopt"))
            if masks is not None:
                paddle.save(masks, str(tmp / "masks.pdparams"))
            if ema is not None:
                paddle.save(ema.state_dict, str(tmp / "ema.pdparams"))
                state = dict(state, ema={"step": ema.step, "epoch": ema.epoch,
                                         "decay": getattr(ema, "_decay", None)})
            if scaler is not None:
                state = dict(state, scaler=scaler.state_dict())
            with open(tmp / "rng.pkl", "wb") as f:
                pickle.dump({"ranks": rng} if rng is not None else rng_state(), f)
            (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True,
                                                       default=_jsonable))
        write_text(root(out) / "latest", name + "\n")
    except OSError as e:
        full = disk_full(e, out, f"checkpoint {name}")
        if full is None:
            raise
        raise full from None
    for old in _epoch_dirs(out)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def _jsonable(v):
    return v.item() if hasattr(v, "item") else str(v)


def run_of(out):
    """The run identity (config hash, init, seed, world) the newest checkpoint with a readable
    state.json recorded, without loading weights; None when there is none."""
    for p in ([latest(out)] if latest(out) else []) + _epoch_dirs(out):
        try:
            return json.loads((p / "state.json").read_text()).get("run")
        except (OSError, ValueError):
            continue
    return None


def load(path):
    """Everything a checkpoint folder holds, as Python/paddle objects; DataError if any part
    is missing or unreadable."""
    paddle = paddle_env.stack().paddle
    path = Path(path)
    try:
        ck = {"state": json.loads((path / "state.json").read_text())}
        for key, fname in (("model", "model.pdparams"), ("optimizer", "optimizer.pdopt")):
            ck[key] = paddle.load(str(path / fname))
            if not isinstance(ck[key], dict):
                raise ValueError(f"{fname} holds no state dict")
        with open(path / "rng.pkl", "rb") as f:
            ck["rng"] = pickle.load(f)
        m, e = path / "masks.pdparams", path / "ema.pdparams"
        ck["masks"] = paddle.load(str(m)) if m.is_file() else None
        ck["ema"] = paddle.load(str(e)) if e.is_file() else None
    except Exception as err:  # paddle/pickle raise assorted types for empty or torn files
        detail = " ".join(str(err).split())[:120] or type(err).__name__
        raise DataError(f"{path}: unreadable checkpoint ({detail})") from None
    return ck


def load_newest(out):
    """(checkpoint, its path, note) for the newest readable checkpoint in OUT.

    Tries the one `latest` names, then the other kept ones newest first; `note` is one line
    saying which were unreadable (None when the first one loaded). DataError when none loads.
    """
    ptr = _pointer(out)
    order = ([ptr] if ptr is not None and ptr.is_dir() else []) + \
        [p for p in _epoch_dirs(out) if p != ptr]
    bad = []
    for p in order:
        try:
            ck = load(p)
        except DataError as e:
            bad.append((p, e))
            continue
        note = None
        if bad or ptr is None or ptr != p:
            why = "; ".join(f"{b.name} unreadable" for b, _ in bad) or \
                "checkpoints/latest missing or unreadable"
            note = f"resuming from {p.name}, the newest readable checkpoint ({why})"
        return ck, p, note
    if bad:
        raise DataError(f"--resume: no readable checkpoint in {root(out)} ({bad[0][1]})")
    raise DataError(f"--resume: no checkpoint in {root(out)}")
