"""Progress bars on stderr: drawn live on a terminal, sparse in a log file.

Every command's ``--progress/--no-progress`` is a :data:`ShowProgress`: ``True`` draws every bar
as tqdm does, ``False`` none, and ``None`` (the default) decides by where stderr goes. On a
terminal that is ``True``. Elsewhere (a file, a pipe, a cluster job's output) tqdm cannot
redraw a line in place and every refresh stays in the log: a batch of thousands of videos
would log each video's frame bar several times. There each bar writes a line every
:data:`LOG_REFRESH_SECONDS`, and detail bars (one video's frames) only once they have run
that long, so that short videos leave no line and a long one shows how far it got.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO, TypeAlias

import click
from tqdm import tqdm

ShowProgress: TypeAlias = bool | None
"""``True``: every bar; ``False``: none; ``None``: by stderr (see the module docstring)."""

LOG_REFRESH_SECONDS = 30.0
"""How often a bar writes a line where stderr is not a terminal."""

progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on stderr. [default: on a terminal; in a log file a line every "
    f"{LOG_REFRESH_SECONDS:.0f} s, no frame bar for videos shorter than that]",
)
"""``--progress/--no-progress`` of every command that draws bars."""


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (a closed or replaced stream is not)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    show: ShowProgress,
    detail: bool = False,
    **options: Any,
) -> tqdm:
    """A tqdm bar on stderr, shown as ``show`` says.

    ``detail``: a bar inside another one's item (a video's frames within the batch's videos):
    where stderr is not a terminal and ``show`` is ``None`` it appears only after
    :data:`LOG_REFRESH_SECONDS`. ``options`` go to tqdm (``total``, ``desc``, ``unit``, ...).
    """
    if show is None and not stderr_is_terminal():
        options["mininterval"] = max(options.get("mininterval", 0.0), LOG_REFRESH_SECONDS)
        options.setdefault("file", _LogLines(sys.stderr))
        if detail:
            options["delay"] = max(options.get("delay", 0.0), LOG_REFRESH_SECONDS)
    return tqdm(iterable, disable=show is False, **options)


_TERMINAL_CONTROL = re.compile(r"\r|\x1b\[[0-9;]*[A-Za-z]")


class _LogLines:
    """Where a bar writes in a log: each refresh on a line of its own, without the carriage
    returns and cursor moves tqdm redraws a terminal with (a file keeps them all, on one
    ever-growing line)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        line = _TERMINAL_CONTROL.sub("", text).rstrip()
        if line:
            self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()
