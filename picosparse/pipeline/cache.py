"""Content hashes, cache keys and the run manifest.

Cache key = sha256 of canonical JSON {kind, params, sorted [input, hash] pairs, env}, where
params keep `${steps...}` symbolic and the inputs are the *contents* of local files/folders the
step reads (its config with the _BASE_ chain, weights, the upstream outputs it references, the
dataset its detector config points at). So a step reruns when its parameters or what it reads
change, not when an upstream step merely reran with the same result (DVC's stage-cache idea).
`env` is picosparse's own code (a hash of its source files: the version string does not change
between commits) and the versions of the packages that shape results, so an upgrade reruns.
File hashes are memoised in RUN_DIR/.hashes.json by (size, mtime_ns, ctime_ns, inode, device):
a file rewritten with the same size and its old mtime put back still has a new ctime, and files
changed within the last seconds are not memoised at all (a write in the same clock tick as the
hash would otherwise go unseen), which keeps a rerun of a finished pipeline fast and exact.
"""

import datetime
import functools
import hashlib
import json
import os
import time
from pathlib import Path

from picosparse.atomic import write_json

MANIFEST = "manifest.json"
FORMAT = 1
MEMO_FORMAT = 2
RACY_NS = 2_000_000_000  # files changed more recently than this are hashed again next time
# distributions whose version changes what a step produces
ENV_PACKAGES = ("paddlepaddle", "paddleslim", "paddledet", "paddlelite", "openvino")
_CODE_SUFFIXES = (".py", ".cpp", ".h", ".inc")


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text):
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(kind, params, inputs, env=None):
    doc = {"kind": kind, "params": params, "inputs": sorted([k, v] for k, v in inputs.items())}
    if env is not None:
        doc["env"] = env
    return sha256_text(canonical(doc))


@functools.lru_cache(maxsize=None)
def code_fingerprint():
    """sha256 of picosparse's own source files, as loaded by this process."""
    import picosparse
    root = Path(picosparse.__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in _CODE_SUFFIXES and "__pycache__" not in p.parts and p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def step_env():
    """What besides params and inputs decides a step's result: picosparse's code and the
    versions of the Paddle/OpenVINO packages."""
    from picosparse import __version__
    from picosparse.paddle_env import version
    env = {"picosparse": __version__, "picosparse_code": code_fingerprint()}
    env.update({d: version(d) for d in ENV_PACKAGES})
    return env


def now():
    # microseconds: two fast reruns must not share a "finished" stamp
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def _stamp(st):
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class Hasher:
    """sha256 of files and folders (by content), memoised by their full stat stamp."""

    def __init__(self, memo_file=None):
        self.memo_file = Path(memo_file) if memo_file else None
        self.memo = {}
        if self.memo_file and self.memo_file.is_file():
            try:
                memo = json.loads(self.memo_file.read_text())
                if memo.get("format") == MEMO_FORMAT:  # older memos lack ctime/inode
                    self.memo = memo.get("files") or {}
            except (OSError, ValueError, AttributeError):
                self.memo = {}  # a broken memo only costs time
        self.dirty = False
        self._listings = {}

    def file(self, path):
        path = Path(path).resolve()
        st = path.stat()
        key, stamp = str(path), _stamp(st)
        hit = self.memo.get(key)
        if hit and hit[:-1] == stamp:
            return hit[-1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        after = path.stat()
        settled = time.time_ns() - max(after.st_mtime_ns, after.st_ctime_ns) > RACY_NS
        if _stamp(after) == stamp and settled:
            self.memo[key] = stamp + [digest]
            self.dirty = True
        elif key in self.memo:
            del self.memo[key]
            self.dirty = True
        return digest

    def path(self, path):
        """A file's hash, or a folder's: hash of its sorted (relative path, file hash) list."""
        path = Path(path)
        if path.is_file():
            return self.file(path)
        lines = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                p = Path(root) / name
                lines.append(f"{p.relative_to(path).as_posix()}\t{self.file(p)}")
        return sha256_text("dir\n" + "\n".join(lines))

    def listing(self, path):
        """A big folder (images) by its file names, sizes and mtimes, without reading them."""
        path = Path(path).resolve()
        if path not in self._listings:
            lines = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    p = Path(root) / name
                    st = p.stat()
                    lines.append(f"{p.relative_to(path).as_posix()}\t{st.st_size}\t"
                                 f"{st.st_mtime_ns}")
            self._listings[path] = sha256_text("listing\n" + "\n".join(lines))
        return self._listings[path]

    def save(self):
        if self.memo_file and self.dirty:
            write_json(self.memo_file, {"format": MEMO_FORMAT, "files": self.memo},
                       durable=False)  # only a speed-up: losing it costs a rehash
            self.dirty = False


class Manifest:
    """RUN_DIR/manifest.json: what ran, with what, and what came out; rewritten atomically.

    Per step: kind, status (running/done/failed), cache_key, params (symbolic), resolved
    (params with references filled in), inputs ({input: sha256}), outputs, metrics, seed,
    seconds, started, finished, error, resumed, and `lock`: {key, finished}, written only when
    the step completes and cleared when it starts again. Only a lock counts as done.
    """

    def __init__(self, run_dir):
        self.path = Path(run_dir) / MANIFEST
        self.data = {"format": FORMAT, "steps": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError:
                from picosparse.errors import DataError
                raise DataError(f"{self.path}: not valid JSON; move it away to start "
                                "afresh") from None
        self.data.setdefault("steps", {})

    def step(self, name):
        return self.data["steps"].get(name) or {}

    def set_step(self, name, record):
        self.data["steps"][name] = record
        self.save()

    def save(self):
        self.data["updated"] = now()
        write_json(self.path, self.data)


def output_paths(kind_spec, outputs):
    """The recorded outputs that are files/folders (typed "path" by the step kind)."""
    return [outputs[k] for k, t in kind_spec.outputs.items()
            if t.rstrip("?") == "path" and outputs.get(k)]


def missing_outputs(kind_spec, outputs):
    return [p for p in output_paths(kind_spec, outputs) if not Path(p).exists()]
