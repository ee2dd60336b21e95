"""Errors volgan raises for bad input: one line that names the file and the problem."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["VolganError", "VolganDataError", "VolganConfigError", "find_cause", "find_volgan_error",
           "one_line", "install_excepthook", "DEBUG_ENV"]

#: environment switch: ``VOLGAN_DEBUG=1`` shows full tracebacks instead of the one-line error
DEBUG_ENV = "VOLGAN_DEBUG"


class VolganError(Exception):
    """Base class of every error volgan raises on purpose."""


class VolganDataError(VolganError, ValueError):
    """A data file or datalist is unusable; the message names the file and the problem.

    Args:
        path: the offending file (or datalist); ``None`` when no file is involved.
        problem: what is wrong, in one line.
    """

    def __init__(self, path, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class VolganConfigError(VolganError, ValueError):
    """A configuration value is invalid (wrong type, out of range, inconsistent with another)."""


def find_cause(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """Return the first ``kind`` in ``exc``'s cause/context chain (MONAI wraps transform and config errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def find_volgan_error(exc: BaseException | None) -> VolganError | None:
    """Return the first ``VolganError`` in ``exc``'s cause/context chain (MONAI wraps transform errors)."""
    return find_cause(exc, VolganError)


def one_line(err: BaseException) -> str:
    """``err`` as the one line volgan prints: ``volgan: error: <file>: <problem>`` (newlines folded)."""
    return "volgan: error: " + " ".join(str(err).split("\n")).strip()


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _volgan_excepthook(kind, exc, tb, previous=sys.__excepthook__) -> None:
    err = None if _debug() else find_volgan_error(exc)
    if err is None:
        previous(kind, exc, tb)
        return
    sys.stderr.write(one_line(err) + f" ({DEBUG_ENV}=1 shows the traceback)\n")
    sys.stderr.flush()


def _quiet_volgan_tracebacks() -> None:
    """Log records carrying a ``VolganError`` keep their message and lose the traceback (MONAI's ``StatsHandler``
    logs every exception raised in an engine run with ``logger.exception`` before re-raising it), unless
    ``VOLGAN_DEBUG=1``: a log record factory, so every logger and handler, present or added later, is covered."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "volgan", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and not _debug() and find_volgan_error(exc) is not None:
            record.exc_info, record.exc_text = None, None
        return record

    factory.volgan = True
    logging.setLogRecordFactory(factory)


def install_excepthook() -> None:
    """Report an uncaught ``VolganError`` (also one MONAI wrapped, found in the cause chain) as one line on stderr
    instead of a traceback, and log it without one during engine runs; other exceptions, and every exception with
    ``VOLGAN_DEBUG=1``, keep the previous hook. The bundles' ``initialize`` calls it first, so
    ``python -m monai.bundle run`` errors read like the CLI's. Idempotent; the exit status stays 1 (Python's for
    an uncaught exception)."""
    _quiet_volgan_tracebacks()
    hook = sys.excepthook
    if getattr(hook, "volgan", False):
        return

    def excepthook(kind, exc, tb):
        _volgan_excepthook(kind, exc, tb, hook)

    excepthook.volgan = True
    sys.excepthook = excepthook
