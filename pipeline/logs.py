"""Log levels of the command line, and the third-party loggers kept quiet.

``-q``: warnings and errors. Default: motionpipe's progress messages (``INFO``: what was
written, which estimator runs). ``-v``: also one line per finished video and similar details
(:data:`VERBOSE`). ``-vv``: debug messages. Third-party libraries (matplotlib's font search,
PIL's PNG chunks, ...) log at ``WARNING`` and above only, whatever the verbosity: their debug
lines say nothing about a run.
"""

from __future__ import annotations

import logging
import sys

VERBOSE = 15
"""Between ``DEBUG`` and ``INFO``: details shown with ``-v``."""
logging.addLevelName(VERBOSE, "VERBOSE")

QUIET_LIBRARIES = (
    "matplotlib",
    "PIL",
    "fsspec",
    "asyncio",
    "urllib3",
    "filelock",
    "h5py",
    "numba",
    "torch",
)
"""Loggers held at ``WARNING``: their debug and info lines are noise to a motionpipe user."""


def level_for(verbosity: int) -> int:
    """``-q`` (-1) -> WARNING, default (0) -> INFO, ``-v`` (1) -> VERBOSE, ``-vv`` -> DEBUG."""
    if verbosity < 0:
        return logging.WARNING
    return (logging.INFO, VERBOSE)[verbosity] if verbosity < 2 else logging.DEBUG


def quiet_libraries() -> None:
    """Holds the loggers of :data:`QUIET_LIBRARIES` at ``WARNING`` (called in every process
    that logs: the command line and each worker)."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(verbosity: int) -> None:
    """Root handler on stderr at :func:`level_for` ``(verbosity)``; libraries kept quiet."""
    logging.basicConfig(
        level=level_for(verbosity),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    quiet_libraries()
