"""Errors volgan raises for bad input: one line that names the file and the problem."""

from __future__ import annotations

__all__ = ["VolganError", "VolganDataError", "VolganConfigError", "find_cause", "find_volgan_error"]


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
