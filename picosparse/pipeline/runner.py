"""`picosparse run`: walk the plan, skip what the lock proves done, run the rest.

A step is skipped only when (cheapest first) it has a lock, the lock's key equals the key
computed now, and the lock's outputs still exist. A step that failed or was killed (status
still "running") has no lock, so it reruns; a train step with a checkpoint from an interrupted
run with the same key resumes from it.

The run folder is picosparse's only where its manifest says so: a non-empty folder without
a manifest is refused, and a step's folder (or the report's files) that exists without a
manifest record of having been written is refused too, before anything runs. A run holds
RUN_DIR/.lock from before it reads the manifest until it ends; a second run on the same folder
stops at once with a one-line error.
"""

import fcntl
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from picosparse import __version__, progress
from picosparse.atomic import atomic_dir
from picosparse.config import load_with_base
from picosparse.errors import DataError, ParamError, PicosparseError
from picosparse.pipeline import adapters
from picosparse.pipeline.cache import (MANIFEST, Hasher, Manifest, cache_key, canonical,
                                       code_fingerprint, missing_outputs, now, sha256_text,
                                       step_env)
from picosparse.pipeline.plan import load_pipeline, select
from picosparse.pipeline.schema import KINDS, model_path, resolve_steps, step_refs, walk_strings

VERSIONED = ("paddlepaddle", "paddleslim", "paddledet", "paddlelite", "numpy", "opencv-python",
             "matplotlib", "openvino")
LOCK, MEMO = ".lock", ".hashes.json"
REPORT_FILES = ("report.md", "report.json", "plots")  # what a run_dir step (report) writes
# which dataset sections of its detector config each step kind reads (export: label names)
DATASETS = {"train": ("TrainDataset",), "eval": ("EvalDataset",), "export": ("EvalDataset",)}


class StepFailed(PicosparseError):
    """A step raised: one line naming the step. Exit 2 for user errors, 1 for bugs."""

    def __init__(self, step, kind, cause, where=None):
        if isinstance(cause, PicosparseError):
            text, self.exit_code = str(cause), cause.exit_code
        else:
            text, self.exit_code = f"{type(cause).__name__}: {cause}", 1
        if isinstance(cause, ParamError) and where and cause.field in KINDS[kind].params:
            # named as the file writes it
            text = cause.render(lambda name: name, where=where)
        else:
            text = f"step '{step}' ({kind}) failed: {_as_key(text, kind)}"
        super().__init__(" ".join(text.split()))  # one line, whatever the step raised
        self.step, self.cause = step, cause


def _as_key(text, kind):
    """'--model-dir X: ...' -> 'model_dir X: ...' when the flag is one of the kind's keys: the
    steps name their inputs as the command's flags, a pipeline user wrote keys."""
    flag = text.split(" ", 1)[0].rstrip(":")
    key = flag[2:].replace("-", "_")
    if flag.startswith("--") and key in KINDS[kind].params:
        return key + text[len(flag):]
    return text


@dataclass
class StepPlan:
    name: str
    kind: str
    action: str  # run | cached | skip (not selected)
    reason: str
    params: dict
    resolved: dict = None
    inputs: dict = None
    key: str = None
    deps: list = field(default_factory=list)
    seconds: float = None


@dataclass
class RunResult:
    pipeline: object
    run_dir: Path
    steps: list
    manifest: Path = None
    report: dict = None
    dry_run: bool = False


def default_run_dir(pipeline):
    return Path("runs") / pipeline.name


def versions():
    from picosparse.paddle_env import version
    out = {"python": platform.python_version(), "picosparse": __version__,
           "picosparse_code": code_fingerprint()}
    out.update({d: version(d) for d in VERSIONED})
    return out


def writes(kind, name):
    """What a step of `kind` named `name` writes, relative to the run folder."""
    return list(REPORT_FILES) if KINDS[kind].where == "run_dir" else [name]


def _owned(manifest):
    """Run-folder entries the manifest says this run folder's steps wrote."""
    out = set()
    for name, rec in manifest.data["steps"].items():
        if rec.get("wrote") is not None:
            out.update(rec["wrote"])
        elif rec.get("kind") in KINDS:  # manifests written before `wrote` was recorded
            out.update(writes(rec["kind"], name))
    return out


def _check_out_folder(run_dir):
    """Refuse a non-empty folder that is not a picosparse run folder: never delete into it."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise DataError(f"--out {run_dir}: exists and is not a folder")
    if (run_dir / MANIFEST).is_file():
        try:
            doc = json.loads((run_dir / MANIFEST).read_text())
        except (OSError, ValueError):
            return  # unreadable: Manifest says so, under the lock
        if not (isinstance(doc, dict) and "format" in doc and "steps" in doc):
            raise DataError(f"--out {run_dir}: its {MANIFEST} is not a picosparse run "
                            "manifest; pick a new or empty folder")
        return
    others = sorted(p.name for p in run_dir.iterdir() if p.name not in (LOCK, MEMO))
    if others:
        raise DataError(f"--out {run_dir}: not empty and not a picosparse run folder (no "
                        f"{MANIFEST}; it holds {others[0]}); pick a new or empty folder")


class Session:
    def __init__(self, path, run_dir=None, overrides=(), force=False, from_step=None,
                 only_step=None, dry_run=False):
        self.pipeline = load_pipeline(path, overrides)
        self.selected, self.forced = select(self.pipeline, from_step, only_step)
        self.force, self.from_step, self.only_step = force, from_step, only_step
        self.dry_run = dry_run
        self.run_dir = Path(run_dir or default_run_dir(self.pipeline)).absolute()
        self.outputs = {}  # step -> outputs usable by later steps
        self.pending = set()  # dry run: steps that would run
        self._bases = {}  # config -> its _BASE_ files, parsed once per session
        self._detectors = {}  # (config, overrides, slim) -> merged config data
        self._lock = None
        _check_out_folder(self.run_dir)
        if not dry_run:
            self._take_lock()  # before reading any state: a run that waited sees it fresh
        try:
            self.manifest = Manifest(self.run_dir)
            self.hasher = Hasher(self.run_dir / MEMO)
            self._check_ownership()
            self.env = step_env()
        except BaseException:
            self.close()
            raise

    def _take_lock(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.run_dir / LOCK, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise DataError(f"{self.run_dir}: another `picosparse run` is using this run "
                            "folder") from None

    def _check_ownership(self):
        owned = _owned(self.manifest)
        for step in self.pipeline.steps.values():
            for rel in writes(step.kind, step.name):
                p = self.run_dir / rel
                if rel not in owned and (p.exists() or p.is_symlink()):
                    raise DataError(f"--out {self.run_dir}: {rel} was not written by a step of "
                                    f"this run folder (its {MANIFEST} has no record of it) and "
                                    f"step '{step.name}' would replace it; move it away or "
                                    "pick another --out")

    # ------------------------------------------------------------- planning

    def where(self, step):
        return f"{self.pipeline.path}: steps.{step.name}"

    def inputs_of(self, step, resolved):
        """{label: sha256} of every local file/folder the step reads, labelled location-free."""
        inputs = {}
        for k, spec in KINDS[step.kind].params.items():
            t, v = spec.type.rstrip("?"), resolved.get(k)
            if t in ("map[path]", "map[model]") and isinstance(v, dict):
                for name, p in v.items():
                    if t == "map[model]":
                        p = model_path(p)  # DIR@bf16: DIR's files (the suffix is a param)
                    inputs[f"{k}.{name}"] = self._hash_path(step, f"{k}.{name}", p)
            elif t in ("path", "config", "source", "model") and isinstance(v, str):
                if t == "source" and "://" in v:
                    continue  # a URL: its text is in the params already
                if t == "model":
                    v = model_path(v)
                inputs[k] = self._hash_path(step, k, v)
                if t == "config":
                    self._hash_bases(step, k, v, inputs)
        if step.kind in DATASETS:
            self._hash_datasets(step, resolved, inputs)
        for name, keys, text in step_refs(step.params, self.where(step)):
            value = resolve_steps("${" + text + "}", self.outputs, self.where(step))
            out_type = KINDS[self.pipeline.steps[name].kind].outputs.get(keys[0]) if keys else None
            if out_type and out_type.rstrip("?") == "path" and len(keys) == 1 and value:
                inputs["${" + text + "}"] = self._hash_path(step, "${" + text + "}", value)
            else:
                inputs["${" + text + "}"] = sha256_text(canonical(value))
        return inputs

    def _hash_path(self, step, label, p):
        if not Path(p).exists():
            raise DataError(f"{self.where(step)}.{label}: {p} does not exist")
        return self.hasher.path(p)

    def _hash_bases(self, step, k, v, inputs):
        top = Path(v).resolve()
        if top not in self._bases:
            # resolved configs (what train writes) have no _BASE_: skip the slow YAML parse
            if "_BASE_" not in top.read_text(errors="replace"):
                self._bases[top] = []
            else:
                try:
                    self._bases[top] = load_with_base(top)[1][:-1]  # [-1] is the file itself
                except PicosparseError as e:
                    raise DataError(f"{self.where(step)}.{k}: {e}") from None
        for src in self._bases[top]:
            inputs[f"{k}<-{os.path.relpath(src, top.parent)}"] = self.hasher.file(src)

    def _hash_datasets(self, step, resolved, inputs):
        """The dataset the detector config points at: annotation files by content, image
        folders by names, sizes and mtimes (by content inside the run folder). Missing ones
        are recorded as missing (the step itself then says what is wrong)."""
        sections = DATASETS[step.kind]
        if step.kind == "train" and resolved.get("eval"):
            sections += ("EvalDataset",)
        data = self._detector(step, resolved)
        for sec in sections:
            ds = data.get(sec)
            if not isinstance(ds, dict):
                continue
            root = Path(str(ds.get("dataset_dir") or "."))
            files = [("anno_path", ds.get("anno_path"))]
            if step.kind != "export":  # export reads only the category names
                files.append(("label_list", ds.get("label_list")))
            for key, rel in files:
                if rel:
                    f = root / str(rel)
                    inputs[f"{sec}.{key}"] = self.hasher.file(f) if f.is_file() else "missing"
            if step.kind != "export":
                images = root / str(ds.get("image_dir") or "")
                inputs[f"{sec}.image_dir"] = self._hash_images(images)

    def _hash_images(self, images):
        if not images.is_dir():
            return "missing"
        if images.resolve().is_relative_to(self.run_dir.resolve()):
            # an upstream step's output: by content, so a rerun that wrote the same bytes
            # (with new mtimes) does not ripple down
            return self.hasher.path(images)
        return self.hasher.listing(images)

    def _detector(self, step, resolved):
        from picosparse.config import load_detector
        slim = resolved.get("slim_config")
        key = (str(Path(resolved["config"]).resolve()), tuple(resolved.get("overrides") or ()),
               str(Path(slim).resolve()) if slim else None)
        if key not in self._detectors:
            try:
                self._detectors[key] = load_detector(resolved["config"],
                                                     overrides=resolved.get("overrides") or (),
                                                     slim_config=slim).data
            except PicosparseError as e:
                raise DataError(f"{self.where(step)}: {e}") from None
        return self._detectors[key]

    def decide(self, step):
        sp = StepPlan(step.name, step.kind, "run", "", step.params, deps=list(step.deps))
        rec = self.manifest.step(step.name)
        lock = rec.get("lock")
        done = rec.get("outputs") if lock else None
        if step.name not in self.selected:
            if done is not None and not missing_outputs(KINDS[step.kind], done):
                self.outputs[step.name] = done
            sp.action, sp.reason = "skip", f"not selected (--only {self.only_step})"
            return sp
        waiting = [d for d in step.deps if d not in self.outputs]
        if waiting and not self.dry_run:
            raise DataError(f"--only {step.name}: step '{waiting[0]}' has no finished outputs in "
                            f"{self.run_dir}; run the pipeline without --only first")
        upstream = [d for d in step.deps if d in self.pending or d in waiting]
        sp.resolved = resolve_steps(step.params, self.outputs, self.where(step))
        if upstream:  # dry run only: what it will read does not exist yet
            sp.reason = f"after {', '.join(upstream)}"
            self._will_run(sp, done)
            return sp
        sp.inputs = self.inputs_of(step, sp.resolved)
        sp.key = cache_key(step.kind, step.params, sp.inputs, self.env)
        if self.force:
            sp.reason = "--force"
        elif step.name in self.forced:
            sp.reason = f"--from {self.from_step}"
        elif not lock:
            sp.reason = {"failed": "failed last time", "running": "interrupted last time"}.get(
                rec.get("status"), "never ran")
        elif lock["key"] != sp.key:
            sp.reason = self._why_changed(step, rec, sp.inputs)
        elif missing_outputs(KINDS[step.kind], done):
            sp.reason = f"output missing: {missing_outputs(KINDS[step.kind], done)[0]}"
        else:
            sp.action, sp.reason = "cached", "unchanged"
            self.outputs[step.name] = done
            return sp
        self._will_run(sp, done)
        return sp

    def _why_changed(self, step, rec, inputs):
        old = rec.get("env")
        if isinstance(old, dict) and old != self.env:
            diff = [k for k in self.env if old.get(k) != self.env[k]]
            pkgs = [f"{k} {old.get(k)} -> {self.env[k]}" for k in diff
                    if not k.startswith("picosparse")]
            what = (["picosparse code"] if len(pkgs) < len(diff) else []) + \
                (["package versions"] if pkgs else [])
            return " and ".join(what) + " changed" + (f" ({', '.join(pkgs)})" if pkgs else "")
        if rec.get("params") == step.params and isinstance(rec.get("inputs"), dict):
            changed = sorted(k for k in set(inputs) | set(rec["inputs"])
                             if inputs.get(k) != rec["inputs"].get(k))
            if changed:
                return f"input changed: {changed[0]}" + (
                    f" (+{len(changed) - 1} more)" if len(changed) > 1 else "")
        return "params or inputs changed"

    def _will_run(self, sp, done):
        if self.dry_run:
            self.pending.add(sp.name)
            if done is not None:  # let later steps show what they would read (the old paths)
                self.outputs[sp.name] = done

    # ------------------------------------------------------------- running

    def start(self, command):
        if self._lock is None:
            raise RuntimeError("Session.start on a dry-run session (it holds no lock)")
        d = self.manifest.data
        d.setdefault("created", now())
        d["pipeline"] = {"file": str(self.pipeline.path),
                         "sha256": self.hasher.file(self.pipeline.path),
                         "overrides": list(self.pipeline.overrides),
                         "resolved": self.pipeline.resolved()}
        d["command"] = list(command or [])
        d["cwd"] = os.getcwd()
        d["versions"] = versions()
        d["started"] = now()
        self.manifest.save()

    def execute(self, sp):
        spec = KINDS[sp.kind]
        prev = self.manifest.step(sp.name)
        step_dir = self.run_dir / sp.name
        resume = False
        if spec.where == "in_place":
            resume = (prev.get("status") in ("running", "failed")
                      and prev.get("cache_key") == sp.key and _has_checkpoint(step_dir))
        self._check_ownership()  # a folder that appeared since the run began is not ours
        record = {"kind": sp.kind, "status": "running", "cache_key": sp.key,
                  "params": sp.params, "resolved": sp.resolved, "inputs": sp.inputs,
                  "env": self.env, "seed": sp.resolved.get("seed"), "started": now(),
                  "resumed": resume, "lock": None, "wrote": writes(sp.kind, sp.name)}
        self.manifest.set_step(sp.name, record)
        if spec.where == "in_place" and not resume and step_dir.exists():
            shutil.rmtree(step_dir)  # stale outputs of other params must not be resumed
        ctx = SimpleNamespace(name=sp.name, run_dir=self.run_dir, resume=resume,
                              pipeline=self.pipeline.name)
        fn = adapters.REGISTRY[sp.kind]
        t0 = time.monotonic()
        try:
            if spec.where == "atomic":
                with atomic_dir(step_dir) as tmp:
                    outputs = _rebase(_jsonable(fn(sp.resolved, tmp, ctx)), tmp, step_dir)
            elif spec.where == "in_place":
                step_dir.mkdir(parents=True, exist_ok=True)
                outputs = _jsonable(fn(sp.resolved, step_dir, ctx))
            else:
                outputs = _jsonable(fn(sp.resolved, self.run_dir, ctx))
            _check_outputs(sp, spec, outputs)
        except KeyboardInterrupt:
            self._failed(sp.name, record, t0, "interrupted")
            raise
        except Exception as e:
            err = StepFailed(sp.name, sp.kind, e, self.where(sp))
            self._failed(sp.name, record, t0, str(err))
            raise err from e
        sp.seconds = time.monotonic() - t0
        record.update(status="done", outputs=outputs, metrics=_metrics(outputs),
                      seconds=round(sp.seconds, 3), finished=now(), error=None,
                      lock={"key": sp.key, "finished": now()})
        self.manifest.set_step(sp.name, record)
        self.hasher.save()
        self.outputs[sp.name] = outputs

    def _failed(self, name, record, t0, msg):
        record.update(status="failed", error=msg, seconds=round(time.monotonic() - t0, 3),
                      finished=now())
        self.manifest.set_step(name, record)
        self.hasher.save()

    def close(self):
        if self._lock:
            self._lock.close()  # closing releases the flock
            self._lock = None


def _has_checkpoint(step_dir):
    from picosparse import checkpoint  # train's layout: checkpoints/latest -> a complete one
    return checkpoint.latest(step_dir) is not None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def _rebase(obj, tmp, final):
    """Paths the step returned point into the temp folder; make them point at its new name."""
    tmp, final = str(tmp), str(final)
    def move(s):
        return final + s[len(tmp):] if s == tmp or s.startswith(tmp + os.sep) else s
    return walk_strings(obj, move)


def _check_outputs(sp, spec, outputs):
    missing = [k for k in spec.outputs if k not in outputs]
    if missing:
        raise RuntimeError(f"returned no output '{missing[0]}' (a bug in the step adapter)")
    gone = missing_outputs(spec, outputs)
    if gone:
        raise RuntimeError(f"output {gone[0]} was not written")


def _metrics(outputs):
    m = {k: v for k, v in outputs.items()
         if isinstance(v, (int, float)) and not isinstance(v, bool)}
    sp = outputs.get("sparsity")
    if isinstance(sp, dict) and "overall" in sp:
        m["sparsity"] = sp["overall"]
    if isinstance(outputs.get("best"), dict):
        m["best"] = outputs["best"]
    return m


# ----------------------------------------------------------------- public API

def plan_pipeline(path, run_dir=None, overrides=(), force=False, from_step=None, only_step=None):
    """--dry-run: the resolved plan, with what would be cached; runs and writes nothing."""
    s = Session(path, run_dir, overrides, force, from_step, only_step, dry_run=True)
    steps = [s.decide(step) for step in s.pipeline.steps.values()]
    return RunResult(s.pipeline, s.run_dir, steps, dry_run=True)


def run_pipeline(path, run_dir=None, overrides=(), force=False, from_step=None, only_step=None,
                 command=None):
    """Run (or skip) every step in order; returns what happened and the report, if any."""
    s = Session(path, run_dir, overrides, force, from_step, only_step)
    done = []
    n = len(s.pipeline.steps)
    try:
        s.start(command or sys.argv)
        for i, step in enumerate(s.pipeline.steps.values(), 1):
            sp = s.decide(step)
            done.append(sp)
            tag = f"[{i}/{n}] {step.name} ({step.kind})"
            if sp.action == "run":
                progress.say(f"{tag}: running ({sp.reason})")
                try:
                    s.execute(sp)
                except StepFailed:
                    progress.say(f"{tag}: [red]failed[/]; fix it and rerun the same command to "
                                 f"continue from '{step.name}'")
                    raise
                progress.say(f"{tag}: done in {sp.seconds:.1f}s")
            else:
                progress.say(f"{tag}: {sp.action} ({sp.reason})")
    finally:
        s.hasher.save()
        s.close()
    return RunResult(s.pipeline, s.run_dir, done, s.manifest.path, _load_report(s))


def _load_report(s):
    for step in s.pipeline.steps.values():
        if step.kind == "report" and step.name in s.outputs:
            p = Path(s.outputs[step.name]["report_json"])
            return json.loads(p.read_text()) if p.is_file() else None
    return None
