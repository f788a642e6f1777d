"""Rich tables for the terminal. Library code returns data; this turns it into tables."""

from rich.console import Console
from rich.table import Table


def _out():
    return Console()


def env_table(rep):
    t = Table(title="picosparse env", show_header=True)
    t.add_column("component")
    t.add_column("version / value")
    for k, v in rep["versions"].items():
        t.add_row(k, str(v) if v else "[red]missing[/]")
    feats = rep["cpu"]["features"]
    t.add_row("cpu", rep["cpu"]["machine"] + "  " +
              " ".join(k for k, on in feats.items() if on))
    _out().print(t)
    c = Table(show_header=True)
    c.add_column("check")
    c.add_column("")
    c.add_column("detail")
    for ch in rep["checks"]:
        c.add_row(ch["name"], "[green]ok[/]" if ch["ok"] else "[red]FAIL[/]", ch["detail"])
    _out().print(c)


def table(title, columns, rows):
    """A generic table: columns are headers, rows lists of cells (already formatted)."""
    t = Table(title=title, show_header=True)
    for col in columns:
        t.add_column(col, justify="right" if col[:1].isupper() is False else "left")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    _out().print(t)
