"""Load a pipeline file: -o overrides, vars, validation, topological order, --from/--only.

Everything here is checked before any step runs, and every problem is one ConfigError line
naming the file and the key (`pipelines/x.yml: steps.dense.confg: unknown key ...`).
"""

from pathlib import Path

import yaml

from picosparse.config import read_yaml
from picosparse.errors import ConfigError
from picosparse.pipeline.schema import (KINDS, MISSING, NAME, REF, RESERVED, TOP_KEYS, Pipeline,
                                        Step, _Checker, step_refs, substitute, whole_ref)


def load_pipeline(path, overrides=()):
    """Read, override, substitute and validate a pipeline file; steps come in run order."""
    path = Path(path)
    raw = read_yaml(path, what="pipeline")
    file = str(path)
    for k in raw:
        if k not in TOP_KEYS:
            raise ConfigError(f"{file}: unknown top-level key '{k}' "
                              f"(known: {', '.join(sorted(TOP_KEYS))})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{file}: name must be a simple identifier, got {name!r}")
    variables = raw.get("vars") or {}
    if not isinstance(variables, dict):
        raise ConfigError(f"{file}: vars must be a mapping of name: value")
    steps = raw.get("steps")
    if not isinstance(steps, dict) or not steps:
        raise ConfigError(f"{file}: steps must be a non-empty mapping of step name: {{kind: ...}}")
    for sname, body in steps.items():
        _check_step_head(file, sname, body)
    _apply_overrides(file, variables, steps, overrides)
    for vname, v in variables.items():
        if not isinstance(vname, str) or not NAME.match(vname):
            raise ConfigError(f"{file}: vars.{vname}: not a valid name")
        if "${" in str(v):
            raise ConfigError(f"{file}: vars.{vname}: vars cannot contain references")

    kinds_of = {s: b["kind"] for s, b in steps.items()}
    check = _Checker(file, list(steps), kinds_of)
    parsed = {}
    for sname, body in steps.items():
        where = f"steps.{sname}"
        given = {k: v for k, v in body.items() if k != "kind"}
        given = _substitute_vars(given, variables, f"{file}: {where}")
        params = check.params(where, given, KINDS[body["kind"]].params)
        deps = []
        for dep, _, _ in step_refs(params, f"{file}: {where}"):
            if dep == sname:
                raise ConfigError(f"{file}: {where}: refers to its own outputs "
                                  f"(cycle {sname} -> {sname})")
            if dep not in deps:
                deps.append(dep)
        parsed[sname] = Step(sname, body["kind"], params, deps)
        _semantic_checks(file, parsed[sname])
    reports = [s for s in parsed.values() if s.kind == "report"]
    if len(reports) > 1:
        raise ConfigError(f"{file}: steps.{reports[1].name}: only one report step per pipeline "
                          "(it writes RUN_DIR/report.md)")
    order = topo_order(file, parsed)
    return Pipeline(path=path, name=name, vars=variables,
                    steps={n: parsed[n] for n in order}, overrides=tuple(overrides),
                    description=str(raw.get("description") or ""))


def _check_step_head(file, sname, body):
    if not isinstance(sname, str) or not NAME.match(sname):
        raise ConfigError(f"{file}: steps.{sname}: step names are letters, digits, _ and -")
    if sname in RESERVED:
        raise ConfigError(f"{file}: steps.{sname}: '{sname}' is reserved (RUN_DIR/{sname})")
    if not isinstance(body, dict):
        raise ConfigError(f"{file}: steps.{sname}: must be a mapping with a 'kind'")
    kind = body.get("kind")
    if kind is None:
        raise ConfigError(f"{file}: steps.{sname}.kind is required (one of {', '.join(KINDS)})")
    if kind not in KINDS:
        raise ConfigError(f"{file}: steps.{sname}.kind: unknown step kind {kind!r} "
                          f"(kinds: {', '.join(KINDS)})")


def _apply_overrides(file, variables, steps, overrides):
    """`-o STEP.KEY[.SUB]=VALUE`, `-o STEP.LIST+=ITEM`, `-o vars.NAME=VALUE` (VALUE as YAML)."""
    for o in overrides:
        where = f"{file}: -o {o}"
        if "=" not in o:
            raise ConfigError(f"{where}: expected STEP.KEY=VALUE or vars.NAME=VALUE")
        key, text = o.split("=", 1)
        append = key.endswith("+")
        parts = key.rstrip("+").split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{where}: expected STEP.KEY=VALUE or vars.NAME=VALUE")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        if parts[0] == "vars":
            if len(parts) != 2 or parts[1] not in variables:
                raise ConfigError(f"{where}: no var '{'.'.join(parts[1:])}' "
                                  f"(vars: {', '.join(variables) or 'none'})")
            variables[parts[1]] = value
            continue
        if parts[0] not in steps:
            raise ConfigError(f"{where}: no step '{parts[0]}' (steps: {', '.join(steps)})")
        params = KINDS[steps[parts[0]]["kind"]].params
        if parts[1] not in params:
            raise ConfigError(f"{where}: unknown key '{parts[1]}' for a "
                              f"{steps[parts[0]]['kind']} step (known: {', '.join(params)})")
        target = steps[parts[0]]
        for p in parts[1:-1]:
            if not isinstance(target.get(p), dict):
                target[p] = {}
            target = target[p]
        if append:
            if params[parts[1]].type.rstrip("?").startswith("list") and len(parts) == 2:
                target[parts[-1]] = list(target.get(parts[-1]) or []) + [value]
            else:
                raise ConfigError(f"{where}: += appends to a list parameter only")
        else:
            target[parts[-1]] = value


def _substitute_vars(obj, variables, where):
    def lookup(kind, name, keys, text):
        if kind == "step":
            return MISSING
        if name not in variables:
            raise ConfigError(f"{where}: unknown var ${{{name}}} "
                              f"(vars: {', '.join(variables) or 'none'})")
        return variables[name]
    return substitute(obj, lookup, where)


def _semantic_checks(file, step):
    p, where = step.params, f"{file}: steps.{step.name}"
    if step.kind == "train" and p["from_scratch"] and p["pretrained"]:
        raise ConfigError(f"{where}: from_scratch and pretrained exclude each other")
    if step.kind == "bench":
        if not p["threads"] or any(t < 1 for t in p["threads"] if isinstance(t, int)):
            raise ConfigError(f"{where}.threads: needs thread counts >= 1")
    if step.kind == "report" and p["baseline"] is not None and p["baseline"] not in p["variants"]:
        raise ConfigError(f"{where}.baseline: '{p['baseline']}' is not a variant "
                          f"(variants: {', '.join(p['variants'])})")
    if "config" in p and not REF.search(p["config"]):
        _check_detector(where, p)


_LATER = "RESOLVED_AT_RUN_TIME"


def _check_detector(where, p):
    """Load the detector config now (YAML only, fast) so its errors come before any step."""
    from picosparse.config import load_detector
    slim = p.get("slim_config")
    if slim and REF.search(slim):
        return
    # values that come from other steps are not known yet: a marker stands in for them
    overrides = [REF.sub(_LATER, o) for o in p["overrides"]]
    sparsity = p.get("sparsity")
    try:
        block = p.get("sparse_block")
        load_detector(p["config"], overrides=overrides, slim_config=slim,
                      sparsity=None if whole_ref(sparsity) else sparsity,
                      # without a known ratio, whether the step prunes is not known yet
                      sparse_block=None if whole_ref(sparsity) or step_refs(block) else block)
    except ConfigError as e:
        if _LATER not in str(e):
            raise ConfigError(f"{where}: {e}") from None


def topo_order(file, steps):
    """Kahn's algorithm; ties keep file order so plans read like the file."""
    names = list(steps)
    indeg = {n: len(steps[n].deps) for n in names}
    order, ready = [], [n for n in names if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in names:
            if n in steps[m].deps:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
        ready.sort(key=names.index)
    if len(order) < len(names):
        raise ConfigError(f"{file}: steps: cycle {' -> '.join(_find_cycle(steps, set(order)))}")
    return order


def _find_cycle(steps, done):
    start = next(n for n in steps if n not in done)
    path, n = [], start
    while n not in path:
        path.append(n)
        n = next(d for d in steps[n].deps if d not in done)
    return path[path.index(n):] + [n]


def descendants(pipeline, name):
    """`name` and every step that (transitively) consumes its outputs."""
    out = {name}
    for s in pipeline.steps.values():  # run order: parents come first
        if any(d in out for d in s.deps):
            out.add(s.name)
    return out


def ancestors(pipeline, name):
    out, todo = set(), list(pipeline.steps[name].deps)
    while todo:
        d = todo.pop()
        if d not in out:
            out.add(d)
            todo += pipeline.steps[d].deps
    return out


def select(pipeline, from_step=None, only_step=None):
    """-> (steps to consider, steps forced to rerun) for --from / --only."""
    names = list(pipeline.steps)
    for flag, v in (("--from", from_step), ("--only", only_step)):
        if v is not None and v not in pipeline.steps:
            raise ConfigError(f"{flag} {v}: no such step in {pipeline.path} "
                              f"(steps: {', '.join(names)})")
    if from_step and only_step:
        raise ConfigError("--from and --only cannot be combined")
    if only_step:
        return {only_step}, set()
    if from_step:
        return set(names), descendants(pipeline, from_step)
    return set(names), set()
