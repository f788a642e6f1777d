"""Content hashes, cache keys and the run manifest.

Cache key = sha256 of canonical JSON {kind, params, sorted [input, hash] pairs}, where params
keep `${steps...}` symbolic and the inputs are the *contents* of local files/folders the step
reads (its config with the _BASE_ chain, weights, the upstream outputs it references). So a
step reruns when its parameters or what it reads change, not when an upstream step merely
reran with the same result (DVC's stage-cache idea). File hashes are memoised by
(path, size, mtime) in RUN_DIR/.hashes.json, which keeps a rerun of a finished pipeline fast.
"""

import datetime
import hashlib
import json
import os
from pathlib import Path

from picosparse.atomic import write_json

MANIFEST = "manifest.json"
FORMAT = 1


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text):
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(kind, params, inputs):
    return sha256_text(canonical({"kind": kind, "params": params,
                                  "inputs": sorted([k, v] for k, v in inputs.items())}))


def now():
    # microseconds: two fast reruns must not share a "finished" stamp
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


class Hasher:
    """sha256 of files and folders (by content), memoised by (size, mtime_ns)."""

    def __init__(self, memo_file=None):
        self.memo_file = Path(memo_file) if memo_file else None
        self.memo = {}
        if self.memo_file and self.memo_file.is_file():
            try:
                self.memo = json.loads(self.memo_file.read_text())
            except (OSError, ValueError):
                self.memo = {}  # a broken memo only costs time
        self.dirty = False

    def file(self, path):
        path = Path(path).resolve()
        st = path.stat()
        key = str(path)
        hit = self.memo.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self.memo[key] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
        self.dirty = True
        return h.hexdigest()

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

    def save(self):
        if self.memo_file and self.dirty:
            write_json(self.memo_file, self.memo)
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
