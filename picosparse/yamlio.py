"""YAML from users, read as data only.

PaddleDetection's own configs use class tags (`TrainDataset: !COCODataSet {...}`,
`- !CosineDecay {max_epochs: 300}`) that ppdet parses with PyYAML's full loader, which also
builds any Python object a file names (`!!python/object/apply:os.system [...]`). Here a file is
parsed with the safe loader; a `!Name` tag becomes a `Tagged` mapping (or `TaggedList`) that
remembers its tag and nothing runs. The tag is turned into ppdet's object only when a model is
built (`paddle_env.activate`), and only if ppdet declares that class serializable.
"""

import yaml


class Tagged(dict):
    """A `!Name {...}` mapping: the keyword arguments of ppdet's class `Name`."""

    def __init__(self, tag, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag

    def __repr__(self):
        return f"!{self.tag} {dict.__repr__(self)}"

    def __deepcopy__(self, memo):
        import copy
        return Tagged(self.tag, {k: copy.deepcopy(v, memo) for k, v in self.items()})

    def __reduce__(self):
        return (Tagged, (self.tag, dict(self)))


class TaggedList(list):
    """A `!Name [...]` sequence: the positional arguments of ppdet's class `Name`."""

    def __init__(self, tag, items=()):
        super().__init__(items)
        self.tag = tag

    def __deepcopy__(self, memo):
        import copy
        return TaggedList(self.tag, [copy.deepcopy(v, memo) for v in self])

    def __reduce__(self):
        return (TaggedList, (self.tag, list(self)))


class _Loader(yaml.SafeLoader):
    """The safe loader plus `!Name` tags as data."""


def _construct_tagged(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        return Tagged(suffix, loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return TaggedList(suffix, loader.construct_sequence(node, deep=True))
    if loader.construct_scalar(node) in ("", None):
        return Tagged(suffix)  # `!Name` alone: no arguments
    raise yaml.constructor.ConstructorError(
        None, None, f"tag !{suffix} on a scalar: PaddleDetection tags take a mapping or a list",
        node.start_mark)


_Loader.add_multi_constructor("!", _construct_tagged)


class _NoTagLoader(yaml.SafeLoader):
    """The safe loader, refusing every tag (pipeline files have no use for them)."""


def _refuse_tag(loader, suffix, node):
    raise yaml.constructor.ConstructorError(
        None, None, f"tag !{suffix} is not allowed in this file", node.start_mark)


_NoTagLoader.add_multi_constructor("!", _refuse_tag)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Tagged, lambda d, v: d.represent_mapping(f"!{v.tag}", dict(v)))
_Dumper.add_representer(TaggedList, lambda d, v: d.represent_sequence(f"!{v.tag}", list(v)))


def load(text, tags=True):
    """Parse YAML text as data; `!Name` tags become Tagged/TaggedList (refused if not `tags`).

    Raises yaml.YAMLError for invalid YAML and for any tag that would build a Python object.
    """
    return yaml.load(text, Loader=_Loader if tags else _NoTagLoader)  # noqa: S506 (safe loaders)


def dump(data):
    """YAML text for data holding Tagged values (they are written back as `!Name` tags)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def error_text(e):
    """One line for a yaml.YAMLError: what is wrong and where."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f" (line {mark.line + 1})" if mark else ""
    problem = getattr(e, "problem", None) or str(e)
    if "could not determine a constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '")
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        problem = (f"tag {tag} is not allowed: YAML here is data, it never builds Python "
                   "objects (only PaddleDetection's own !Class tags are accepted)")
    return f"not valid YAML{where}: {' '.join(problem.split())}"
