"""Reading, checking, downloading and saving .pdparams weights."""

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from picosparse import paddle_env, progress
from picosparse.atomic import atomic_path
from picosparse.errors import DataError

MASK_SUFFIX = "_mask"  # PaddleSlim registers `<param>_mask` buffers; they never leave picosparse


def strip_masks(state):
    """`state` without PaddleSlim's mask buffers."""
    return {k: v for k, v in state.items() if not k.endswith(MASK_SUFFIX)}


def cache_dir():
    from picosparse.cachedir import root  # one cache folder (and env var) for all caches
    return root()


def is_url(text):
    return str(text).startswith(("http://", "https://"))


def fetch(url, dest_dir=None, timeout=60):
    """Download `url` once into the cache (progress bar, size checked, atomic); return the path.

    A `#md5=<hex>` fragment is checked too. A cached file is reused without a request.
    """
    url, _, frag = url.partition("#")
    md5 = frag[4:] if frag.startswith("md5=") else None
    dest_dir = Path(dest_dir) if dest_dir else cache_dir() / "weights"
    dest = dest_dir / (hashlib.sha256(url.encode()).hexdigest()[:12] + "-" +
                       (url.rstrip("/").rsplit("/", 1)[-1] or "download"))
    if dest.is_file():
        return dest
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, atomic_path(dest) as tmp:
            total = int(r.headers.get("Content-Length") or 0)
            h, got = hashlib.md5(), 0
            with open(tmp, "wb") as f, progress.Progress(total or None, f"download {dest.name}",
                                                        every=max(1, total // 10)) as bar:
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if total and got != total:
                raise DataError(f"{url}: download truncated ({got} of {total} bytes)")
            if md5 and h.hexdigest() != md5:
                raise DataError(f"{url}: md5 {h.hexdigest()} != expected {md5}")
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"{url}: download failed ({reason})") from None
    return dest


def resolve(path_or_url, flag="--pretrained"):
    """A local .pdparams path for a path or URL; errors name the flag."""
    if is_url(path_or_url):
        return fetch(path_or_url)
    p = Path(path_or_url)
    if not p.is_file():
        raise DataError(f"{flag} {p}: file does not exist")
    return p


def read(path, flag="--weights"):
    """The state dict in a .pdparams file, without mask buffers."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{flag} {path}: file does not exist")
    paddle = paddle_env.stack().paddle
    try:
        state = paddle.load(str(path))
    except Exception as e:  # paddle raises assorted types for garbage input
        raise DataError(f"{flag} {path}: not a readable .pdparams file "
                        f"({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise DataError(f"{flag} {path}: not a state dict")
    return strip_masks(state)


def load_into(model, path, flag="--weights"):
    """Load weights into `model`; every key and shape must match the config's model."""
    state = read(path, flag)
    own = strip_masks(model.state_dict())
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state)
                 if list(own[k].shape) != list(getattr(state[k], "shape", [])))
    if missing or extra or bad:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", bad)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{label} keys {', '.join(keys[:3])}{more}")
        raise DataError(f"{flag} {path}: weights do not match the config: " + "; ".join(parts))
    model.set_state_dict(state)
    return state


def _match(own_key, state):
    """The key of `state` that holds `own_key`: the same key, else the longest one that
    `own_key` ends with at a dot (backbone-only weights say `conv1.weight` where the
    detector says `backbone.conv1.weight`), as PaddleDetection's pretrain loading does."""
    if own_key in state:
        return own_key
    best = None
    for k in state:
        if own_key.endswith("." + k) and (best is None or len(k) > len(best)):
            best = k
    return best


def load_pretrained(model, path, flag="--pretrained"):
    """Load what fits, PaddleDetection's way: parameters missing from the file stay as built,
    parameters of another shape (a head for other classes) are skipped; one line says so.

    For starting a training only; resuming and evaluating stay strict (`load_into`).
    Returns {"loaded": n, "skipped_shape": [...], "not_in_file": [...]}.
    """
    state = read(path, flag)
    own = strip_masks(model.state_dict())
    load, wrong, absent = {}, [], []
    for k, v in own.items():
        src = _match(k, state)
        if src is None:
            absent.append(k)
        elif list(v.shape) != list(getattr(state[src], "shape", [])):
            wrong.append(f"{k} {list(getattr(state[src], 'shape', []))} vs {list(v.shape)}")
        else:
            load[k] = state[src]
    if not load:
        raise DataError(f"{flag} {path}: no parameter fits the config's model (is it a "
                        "PicoDet of this config's architecture?)")
    model.set_state_dict({**own, **load})  # the whole dict: paddle warns per key left out
    if wrong or absent:
        parts = [f"loaded {len(load)} of {len(own)} parameters"]
        if wrong:
            more = f" (+{len(wrong) - 2} more)" if len(wrong) > 2 else ""
            parts.append(f"skipped {len(wrong)} of another shape: {', '.join(wrong[:2])}{more}")
        if absent:
            parts.append(f"{len(absent)} not in the file kept as initialized")
        progress.say(f"warning: {flag} {Path(path).name}: " + "; ".join(parts))
    return {"loaded": len(load), "skipped_shape": wrong, "not_in_file": absent}


def save(state, dest):
    """paddle.save a state dict atomically (no mask buffers)."""
    paddle = paddle_env.stack().paddle
    with atomic_path(dest) as tmp:
        paddle.save(strip_masks(state), str(tmp))
    return Path(dest)
