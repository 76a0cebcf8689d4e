"""User-facing errors: one line that names the file, the line and the fix; no traceback."""

from __future__ import annotations

import functools
import sys


class SeDRInputError(Exception):
    """Bad input data or a missing input file. Scripts print ``str(err)`` and exit with status 2."""


class DataFormatError(SeDRInputError):
    """A malformed line in an input file."""

    def __init__(self, path, line_no: int | None, message: str):
        self.path, self.line_no = str(path), line_no
        where = f"{path}:{line_no}" if line_no is not None else str(path)
        super().__init__(f"{where}: {message}")


class MissingInputError(SeDRInputError):
    """An input file that is not there, with the command that produces it."""

    def __init__(self, path, how_to_get: str):
        self.path = str(path)
        super().__init__(f"missing input file {path}; {how_to_get}")


def exit_on_input_error(main):
    """Decorator for a script's ``main``: turn :class:`SeDRInputError` into a clean message and exit 2."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SeDRInputError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
