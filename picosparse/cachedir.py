"""The one folder for everything picosparse caches (downloaded weights, the compiled op).

$PICOSPARSE_CACHE, else $XDG_CACHE_HOME/picosparse, else ~/.cache/picosparse. The older name
PICOSPARSE_CACHE_DIR is still read when PICOSPARSE_CACHE is unset.
"""

import os
from pathlib import Path

ENV = "PICOSPARSE_CACHE"
OLD_ENV = "PICOSPARSE_CACHE_DIR"


def root():
    env = os.environ.get(ENV) or os.environ.get(OLD_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "picosparse"
