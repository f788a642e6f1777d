"""The one exception type for mistakes a user can fix (bad flag, file, key, data).

The CLI turns it into `Error: <message>` and exit code 2 in one place (cli.main);
anything else is a bug and keeps its traceback.
"""


class PicosparseError(Exception):
    """A user-facing error: the message names the file/flag/key and what is wrong."""

    exit_code = 2


class ConfigError(PicosparseError):
    """A detector, pruning or pipeline YAML is missing, malformed or invalid."""


class DataError(PicosparseError):
    """A dataset, image or weights file is missing, unreadable or inconsistent."""


class StackError(PicosparseError):
    """The Paddle stack (paddle, ppdet, paddleslim, paddle_lite_opt) is missing or broken."""


class ParamError(ConfigError):
    """A step parameter has a bad value. `field` is its name in the step's parameter dataclass
    (`owner`, picosparse.params); the CLI shows it as the flag (`--sparse-threshold 1.5: must
    be in (0, 1]`), the pipeline runner as the key (`x.yml: steps.opt.sparse_threshold: ...`).
    `reason` may name other parameters as {field}, spelled the same way. `label`: how this
    message (str) names the field [the field's name]."""

    def __init__(self, field, reason, value=None, owner=None, show_value=True, label=None):
        self.field, self.reason, self.value, self.owner = field, reason, value, owner
        self.show_value = show_value and value is not None
        super().__init__(self.render(lambda name: label if name == field and label else name,
                                     quote=True))

    def render(self, spell, where=None, show_value=True, quote=False):
        """The message with each parameter named by `spell(field)`: `where` given (a pipeline
        key path prefix), as `WHERE.FIELD: REASON (got VALUE)`, else as `FIELD VALUE: REASON`."""
        reason = self.reason.format_map(_Spelled(spell))
        show = self.show_value and show_value
        if where is not None:
            got = f" (got {_yaml(self.value)})" if show else ""
            return f"{where}.{self.field}: {reason}{got}"
        v = self.value
        value = (f" {v!r}" if quote and isinstance(v, str) else f" {v}") if show else ""
        # `--fp16 with --sparse: ...`, `--pretrained is required ...`
        sep = " " if not show and reason.split(" ", 1)[0] in ("with", "is", "or") else ": "
        return f"{spell(self.field)}{value}{sep}{reason}"


class _Spelled(dict):
    def __init__(self, spell):
        super().__init__()
        self.spell = spell

    def __missing__(self, key):
        return self.spell(key)


def _yaml(v):
    return "true" if v is True else "false" if v is False else "null" if v is None else repr(v)
