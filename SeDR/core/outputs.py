"""Owning outputs: one claim per writer (lock, earlier outputs refused, kept or backed up), atomic
writes, space checks, fingerprints, readable saved states, the saved-flags comparison of ``--resume``.

Nothing half-written ever sits under a final name, a second concurrent writer is refused, an earlier
result is never replaced without a flag that says so, and files are created with the process's umask
as ordinary tools create them (docs/errors.md#outputs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from SeDR.core.errors import ENVIRONMENT_ERRNOS, OutputError, describe_os_error

logger = logging.getLogger(__name__)

HASH_CHUNK = 1 << 23
SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_size(num_bytes: int) -> str:
    """``512 bytes``, ``3.20 KiB``, ``15.3 MiB``, ``512 GiB``: three figures in the unit that fits."""
    value, unit = float(num_bytes), 0
    while value >= 1024 and unit < len(SIZE_UNITS):
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{int(num_bytes)} bytes"
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {SIZE_UNITS[unit - 1]}"


def process_umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting it back at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
            f"could not write {path} ({err}); {format_size(free_bytes(Path(path).parent))} free "
            "on that device; earlier outputs are intact"
        ) from None


def atomic_write(path: str | Path, write: Callable, binary: bool = True) -> None:
    """Call ``write(f)`` on a temporary file in the same folder, then rename it to ``path``.

    The file gets the mode an ordinary ``open`` would give it (0666 less the umask), not the 0600 of
    a temporary file, so that others on a shared cluster read results as they read any file.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~process_umask())
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


def move_aside(path: Path) -> Path:
    """Rename ``path`` (a whole output folder) to its dated sibling :func:`backup_name`; returns that."""
    backup = backup_name(path)
    path.rename(backup)
    return backup


def keep_copy(path: Path) -> Path | None:
    """Copy an existing file to its dated sibling before it is rewritten; returns the copy, or None."""
    if not path.exists():
        return None
    backup = backup_name(path)  # unique: two runs within one second keep both
    shutil.copy2(path, backup)
    return backup


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
            f"cannot write into {folder} ({what}): {err.strerror or err}; choose another folder"
        ) from None
    free = free_bytes(folder)
    if need_bytes > free:
        raise OutputError(
            f"only {format_size(free)} free on the device of {folder}; {what}: about "
            f"{format_size(need_bytes)} needed; free space or choose another folder"
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
    """``FOLDER/.NAME.lock``: one writer of ``output`` at a time;
    a lock left by a dead process on this host is taken over.

    ``output`` (default: ``FOLDER``) is what the lock guards and what a refusal names: a run's
    checkpoints in a shared folder, or a whole folder whose lock sits beside it.
    """

    def __init__(self, folder, name: str, output=None):
        self.path = Path(folder) / f".{name}.lock"
        self.output = Path(output) if output is not None else Path(folder)
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
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
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
            f"{self.output} is being written by process {pid} on {host} since "
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


# ------------------------------------------------------------------------------------------ claims

# What a writer does with its own earlier outputs (docs/errors.md#outputs).
REFUSE, KEEP, BACKUP = "refuse", "keep", "backup"


@dataclass
class Claim:
    """One writer's hold on its output: the lock, the earlier outputs it found, and their backup.

    ``output`` is a whole folder (evaluation, index: the lock sits beside it) or one run's files
    in a shared folder (training, ADORE: the lock sits in it). Release with :meth:`release` or
    ``with claim: ...``.
    """

    output: Path
    lock: RunLock
    earlier: list[Path] = field(default_factory=list)
    backup: Path | None = None

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim(
    output: str | Path,
    *,
    lock_in: str | Path,
    lock_name: str,
    earlier: Callable[[], list[Path]],
    when_taken: str = REFUSE,
    refusal: str | Callable[[list[Path]], str] = "",
    backup_folder: Path | None = None,
    what: str = "the outputs",
    exclusive: bool = True,
) -> Claim:
    """Before any long work: prove ``lock_in`` writable, lock ``output``, then settle what this writer
    already has there (``earlier()``, looked at under the lock).

    ``when_taken`` says what happens to earlier outputs: :data:`REFUSE` (an :class:`OutputError`
    with ``refusal``), :data:`KEEP` (the caller resumes or reuses them, or replaces them once its
    new output is complete) or :data:`BACKUP` (moved now: into the dated folder ``backup_folder``,
    or, without one, each renamed to its dated sibling). ``exclusive=False``: writers that share the
    output by design (job-array shards of one encoding) settle it without taking the lock.
    """
    lock = RunLock(ensure_writable(lock_in, what=what), lock_name, output=output)
    if exclusive:
        lock.acquire()
    try:
        found = [Path(p) for p in earlier()]
        held = Claim(Path(output), lock, found)
        if found and when_taken == REFUSE:
            raise OutputError(refusal(found) if callable(refusal) else refusal)
        if found and when_taken == BACKUP:
            if backup_folder is not None:
                held.backup = move_to_backup(found, backup_folder)
            else:
                held.backup = [move_aside(p) for p in found][-1]
    except BaseException:
        lock.release()
        raise
    return held


def is_taken(folder: Path) -> bool:
    """A whole-folder output is taken when it exists and is not an empty folder."""
    return folder.exists() and (not folder.is_dir() or any(folder.iterdir()))


@contextlib.contextmanager
def staged_folder(held: Claim) -> Iterator[Path]:
    """Write a claimed whole folder as ``.NAME.tmp-<pid>`` beside it and move it into place when complete.

    Temporary folders of earlier runs that died are removed first: the claim's lock proves nobody
    writes them. On success an earlier folder the claim kept moves to its dated backup.
    """
    out = held.output
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    for orphan in out.parent.glob(f".{out.name}.tmp-*"):
        if orphan != tmp and orphan.is_dir():
            logger.warning("removing %s, left by an interrupted run", orphan)
            shutil.rmtree(orphan, ignore_errors=True)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        with writing(tmp):
            tmp.mkdir()
            yield tmp
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif out.exists():
            held.backup = move_aside(out)
            logger.warning("overwrite: moved the earlier %s to %s", out, held.backup)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------ saved states


def check_saved_state(path: Path, fix: str) -> None:
    """Refuse a truncated saved state before any work: ``torch.save`` writes a zip archive whose
    directory sits at its end, so a cut file has none (the load itself checks the rest)."""
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise OutputError(f"{path} cannot be read ({err}): truncated or corrupt; {fix}") from None


def read_saved_state(path: Path, fix: str) -> dict:
    """``torch.load`` a resumable state; a truncated or corrupt file is one error naming it and the fix."""
    import torch  # only where a saved state is read

    check_saved_state(path, fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OutputError(f"{path} cannot be read ({reason}): truncated or corrupt; {fix}") from None


# ------------------------------------------------------------------------------------- saved flags

# Facts recorded beside the flags in training_args.json (what the run really read).
RECORDED_FACTS = {
    "preprocess_fingerprint": "content of --preprocess_dir",
    "hardneg_fingerprint": "content of --hardneg_path",
    "world_size": "number of processes",
}

# How a flag that names a file or folder is compared on --resume, beside its resolved location.
RUN_FOLDER = "run folder"  # where the saved state was found: any location (a moved or copied run)
RECORDED = "recorded"  # its content's fingerprint is a recorded fact, compared on its own


def same_place(a, b) -> bool:
    """Two spellings of one path (``data/rs``, ``./data/rs/``), relative ones from the working folder."""
    return os.path.realpath(os.path.expanduser(str(a))) == os.path.realpath(os.path.expanduser(str(b)))


def _path_change(flag: str, saved, now, how) -> str | None:
    """Why a path flag differs from the saved run's, or None when it names the same content."""
    if how == RUN_FOLDER or how == RECORDED or saved == now or same_place(saved, now):
        return None
    if saved is None or now is None or not callable(how):
        return f"--{flag}: saved {saved!r}, now {now!r}"
    if not os.path.exists(os.path.expanduser(str(saved))):
        logger.warning(
            "--resume: the saved --%s %s no longer exists; continuing with %s (what the run resumes "
            "from is its saved state)",
            flag,
            saved,
            now,
        )
        return None
    if how(saved) == how(now):
        return None
    return f"--{flag}: saved {saved!r}, now {now!r} (other contents)"


def flag_changes(
    saved: dict, args, resumable, paths: Mapping[str, str | Callable[[str], str]] | None = None
) -> list[str]:
    """``--flag: saved X, now Y`` for every fixed flag (or recorded fact) that differs from the saved run's.

    ``paths``: flags naming files or folders, compared by where they lead, not how they are spelled
    (resolved from the working folder); ``RUN_FOLDER`` is where the run lives now (any place),
    ``RECORDED`` is compared through its recorded fingerprint, and a callable fingerprints the
    contents of both places when they differ.
    """
    now = json.loads(json.dumps(vars(args), default=str))  # the types a JSON record holds
    paths = paths or {}
    changes = []
    for k in sorted(set(saved) - set(resumable)):
        if k in paths:
            change = _path_change(k, saved[k], now.get(k), paths[k])
        elif saved[k] != now.get(k):
            change = f"{RECORDED_FACTS.get(k, '--' + k)}: saved {saved[k]!r}, now {now.get(k)!r}"
        else:
            change = None
        if change:
            changes.append(change)
    return changes
