"""User-facing errors: one line that names the file (and line or entry) or the flag, and the fix.

Every script's ``main`` is wrapped by :func:`exit_on_input_error`: a :class:`SeDRInputError`, a full
disk or an unwritable folder prints ``error: <one line>`` and exits with status 2, the status
argparse uses for a bad flag (docs/errors.md#exit-status).
"""

from __future__ import annotations

import errno
import functools
import re
import sys
from pathlib import Path

USER_ERROR_EXIT = 2
# Write failures that are the user's environment, not a bug: full disk, quota, read-only, permissions.
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# A Hugging Face model id: ``name`` or ``namespace/name`` of letters, digits, ``_``, ``-`` and ``.``.
HUB_ID = re.compile(r"(?:\w[\w.-]*/)?\w[\w.-]*")


class SeDRInputError(Exception):
    """Bad input, a bad flag or an output that must not be touched. Scripts print it and exit 2."""


class DataFormatError(SeDRInputError):
    """A malformed line or entry in an input file."""

    def __init__(self, path, line_no: int | None, message: str):
        self.path, self.line_no = str(path), line_no
        where = f"{path}:{line_no}" if line_no is not None else str(path)
        super().__init__(f"{where}: {message}")


class MissingInputError(SeDRInputError):
    """An input file that is not there, with the command that produces it."""

    def __init__(self, path, how_to_get: str):
        self.path = str(path)
        super().__init__(f"missing input file {path}; {how_to_get}")


class OutputError(SeDRInputError):
    """An output that could not be written (full disk, read-only folder) or that belongs to another run."""


class NotDownloadedError(SeDRInputError):
    """A Hugging Face model id where a model folder is expected: the commands read folders and may run
    offline, so the id gets the download command instead of "missing config.json"."""

    def __init__(self, name):
        super().__init__(
            f"{name}: no such folder. If it is a Hugging Face model id, download it first with "
            f"`hf download {name} --local-dir DIR` (on a machine with internet access) and pass DIR instead"
        )


def check_model_folder(path) -> None:
    """Refuse a Hugging Face model id given where a model folder should be (docs/backbones.md#download)."""
    if not Path(path).exists() and HUB_ID.fullmatch(str(path)):
        raise NotDownloadedError(path)


def describe_os_error(err: OSError, path=None) -> str:
    where = path or err.filename or "an output file"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device while writing {where}; free space or choose another folder"
    return f"cannot write {where}: {err.strerror or err}"


def exit_on_input_error(main):
    """Decorator for a script's ``main``: user errors become one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SeDRInputError as err:
            message = str(err)
        except OSError as err:
            if err.errno not in ENVIRONMENT_ERRNOS:
                raise
            message = describe_os_error(err)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT)

    return wrapper
