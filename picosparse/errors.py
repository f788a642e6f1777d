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


class NotYetAvailable(PicosparseError):
    """A subcommand whose issue has not landed yet."""
