"""One progress helper: a rich bar on a terminal, plain lines in CI logs, nothing with --quiet."""

import sys
import time

from rich.console import Console

_state = {"quiet": False}


def set_quiet(quiet):
    _state["quiet"] = bool(quiet)


def quiet():
    return _state["quiet"]


def console():
    return Console(stderr=True, quiet=_state["quiet"])


def say(msg):
    """A status line on stderr (stdout stays clean for --json)."""
    if not _state["quiet"]:
        console().print(msg, highlight=False, soft_wrap=True)  # one line, for logs and grep


class Progress:
    """`with Progress(total, "train") as p: p.update(1, loss=...)`.

    Plain mode prints one line every `every` steps and at the end, so CI logs stay short.
    """

    def __init__(self, total, description, every=None):
        self.total = total
        self.description = description
        self.every = every or max(1, (total or 1) // 20)
        self.done = 0
        self.fields = {}
        self._rich = None
        self._t0 = time.monotonic()

    def __enter__(self):
        if not _state["quiet"] and sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RP,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
            self._rich = RP(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=console(),
                            transient=False)
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total, info="")
        return self

    def _info(self):
        return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.fields.items())

    def update(self, n=1, **fields):
        self.done += n
        self.fields.update(fields)
        if _state["quiet"]:
            return
        if self._rich is not None:
            self._rich.update(self._task, advance=n, info=self._info())
        elif self.done % self.every == 0 or self.done == self.total:
            el = time.monotonic() - self._t0
            eta = el / self.done * (self.total - self.done) if self.total and self.done else 0
            tot = f"/{self.total}" if self.total else ""
            print(f"[{self.description}] {self.done}{tot} {self._info()} "
                  f"elapsed={el:.0f}s eta={eta:.0f}s", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._rich is not None:
            self._rich.__exit__(*exc)
        return False
