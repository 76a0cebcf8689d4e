"""Owning outputs: atomic writes, one writer per folder, dated backups, space checks, fingerprints.

Nothing half-written ever sits under a final name, a second concurrent writer is refused, and an
earlier result is never replaced without a flag that says so (docs/errors.md#outputs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from SeDR.core.errors import ENVIRONMENT_ERRNOS, OutputError, describe_os_error

logger = logging.getLogger(__name__)

HASH_CHUNK = 1 << 23


@contextlib.contextmanager
def writing(path):
    """Turn a full disk or an unwritable folder while writing ``path`` into one :class:`OutputError`.

    torch.save reports a full disk as ``RuntimeError`` (an iostream failure), not ``OSError``.
    """
    try:
        yield
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        raise OutputError(describe_os_error(err, path) + "; earlier outputs are intact") from None
    except RuntimeError as err:
        if "iostream" not in str(err) and "write" not in str(err).lower():
            raise
        raise OutputError(
            f"could not write {path} ({err}); {free_bytes(Path(path).parent) / 2**30:.1f} GiB free "
            "on that device; earlier outputs are intact"
        ) from None


def atomic_write(path: str | Path, write: Callable, binary: bool = True) -> None:
    """Call ``write(f)`` on a temporary file in the same folder, then rename it to ``path``."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb" if binary else "w") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_save_dir(target: Path, write: Callable[[Path], None]) -> None:
    """Write a folder next to ``target`` and move it into place:
    a crash leaves the old folder or the new one."""
    tmp = target.with_name("." + target.name + ".tmp")
    old = target.with_name("." + target.name + ".old")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    try:
        with writing(target):
            tmp.mkdir(parents=True)
            write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def backup_name(path: Path) -> Path:
    """A dated sibling of ``path`` that does not exist yet: ``NAME.bak-YYYYmmdd-HHMMSS[-k]``."""
    base = path.with_name(path.name + time.strftime(".bak-%Y%m%d-%H%M%S"))
    out, k = base, 1
    while out.exists():
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out


def move_to_backup(paths: Iterable[Path], folder: Path) -> Path | None:
    """Move ``paths`` into a new dated folder ``folder`` (a :func:`backup_name`);
    returns it, or None if empty."""
    paths = [Path(p) for p in paths if Path(p).exists()]
    if not paths:
        return None
    folder = backup_name(folder)
    folder.mkdir(parents=True)
    for p in paths:
        p.rename(folder / p.name)
    return folder


def free_bytes(folder: Path) -> int:
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def ensure_writable(folder, need_bytes: int = 0, what: str = "the outputs") -> Path:
    """Create ``folder`` if needed, prove it writable and that about ``need_bytes`` fit,
    before any long work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OutputError(
            f"cannot write into {folder}: {err.strerror or err}; choose another folder"
        ) from None
    free = free_bytes(folder)
    if need_bytes > free:
        raise OutputError(
            f"only {free / 2**30:.2f} GiB free on the device of {folder}; {what}: about "
            f"{need_bytes / 2**30:.2f} GiB needed; free space or choose another folder"
        )
    return folder


def fingerprint(paths: Iterable[Path]) -> str:
    """sha256 over the names and contents of ``paths`` (missing files count as absent): ``sha256:<hex>``."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        if not p.is_file():
            continue
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


# ------------------------------------------------------------------------------------------- locks


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``FOLDER/.NAME.lock``: one writer at a time;
    a lock left by a dead process on this host is taken over."""

    def __init__(self, folder, name: str):
        self.path = Path(folder) / f".{name}.lock"
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._clear_stale_or_refuse()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self.held = True
            return self
        raise OutputError(f"could not take the lock {self.path}")

    def _clear_stale_or_refuse(self) -> None:
        try:
            other = json.loads(self.path.read_text())
        except (OSError, ValueError):
            other = {}
        pid, host = other.get("pid"), other.get("host")
        if isinstance(pid, int) and host == socket.gethostname() and not pid_alive(pid):
            logger.info("removing the stale lock %s of process %d, which is gone", self.path, pid)
            self.path.unlink(missing_ok=True)
            return
        raise OutputError(
            f"{self.path.parent} is being written by process {pid} on {host} since "
            f"{other.get('started')} (lock {self.path}); wait for it to finish, or delete the lock "
            "file if that process is gone"
        )

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# Facts recorded beside the flags in training_args.json (what the run really read).
RECORDED_FACTS = {
    "preprocess_fingerprint": "content of --preprocess_dir",
    "hardneg_fingerprint": "content of --hardneg_path",
    "world_size": "number of processes",
}


def flag_changes(saved: dict, args, resumable) -> list[str]:
    """``--flag: saved X, now Y`` for every fixed flag
    (or recorded fact) that differs from the saved run's."""
    now = json.loads(json.dumps(vars(args), default=str))  # the types a JSON record holds
    keys = sorted(set(saved) - set(resumable))
    return [
        f"{RECORDED_FACTS.get(k, '--' + k)}: saved {saved[k]!r}, now {now.get(k)!r}"
        for k in keys
        if saved[k] != now.get(k)
    ]
