"""Owning outputs: locks (and stale ones), atomic folders, dated backups, space checks, write failures."""

import errno
import json
import os
import subprocess
import sys

import pytest

from SeDR.core import outputs
from SeDR.core.errors import OutputError, SeDRInputError, exit_on_input_error


def test_second_lock_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, caplog):
    with outputs.RunLock(tmp_path, "run") as first:
        record = json.loads(first.path.read_text())
        assert record["pid"] == os.getpid()
        with pytest.raises(OutputError, match=f"being written by process {os.getpid()}"):
            outputs.RunLock(tmp_path, "run").acquire()
        outputs.RunLock(tmp_path, "other").acquire().release()  # another run's lock is independent
    assert not first.path.exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    first.path.write_text(
        json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "started": "then"})
    )
    with caplog.at_level("INFO"), outputs.RunLock(tmp_path, "run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert any("stale lock" in r.getMessage() for r in caplog.records)
    first.path.write_text(json.dumps({"pid": 1, "host": "another-machine", "started": "then"}))
    with pytest.raises(OutputError, match="another-machine"):  # cannot tell whether it still runs: refuse
        outputs.RunLock(tmp_path, "run").acquire()


def test_atomic_save_dir_keeps_the_old_folder_when_writing_fails(tmp_path):
    target = tmp_path / "ckpt"
    outputs.atomic_save_dir(target, lambda d: (d / "a").write_text("old"))

    def fail(d):
        (d / "a").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=f"no space left on the device while writing {target}"):
        outputs.atomic_save_dir(target, fail)
    assert (target / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folder left
    outputs.atomic_save_dir(target, lambda d: (d / "a").write_text("new"))
    assert (target / "a").read_text() == "new"


def test_torch_save_disk_full_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="could not write"):
        with outputs.writing(tmp_path / "state.pt"):
            raise RuntimeError(
                "[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file "
                "data/0: file write failed"
            )
    with pytest.raises(RuntimeError, match="unrelated"):  # other errors are bugs, not user errors
        with outputs.writing(tmp_path / "x"):
            raise RuntimeError("unrelated")


def test_atomic_write_failure_leaves_no_file_under_the_final_name(tmp_path):
    path = tmp_path / "metrics.json"
    outputs.atomic_write_text(path, "old")

    def fail(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="metrics.json"):
        outputs.atomic_write(path, fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_move_to_backup_is_dated_and_never_reuses_a_name(tmp_path):
    for name in ("epoch-1", "epoch-2"):
        (tmp_path / name).mkdir()
    first = outputs.move_to_backup([tmp_path / "epoch-1", tmp_path / "missing"], tmp_path / "run")
    (tmp_path / "epoch-1").mkdir()
    second = outputs.move_to_backup([tmp_path / "epoch-1", tmp_path / "epoch-2"], tmp_path / "run")
    assert first != second and first.name.startswith("run.bak-") and second.name.startswith("run.bak-")
    assert [p.name for p in first.iterdir()] == ["epoch-1"]
    assert sorted(p.name for p in second.iterdir()) == ["epoch-1", "epoch-2"]
    assert outputs.move_to_backup([tmp_path / "missing"], tmp_path / "run") is None


def test_ensure_writable_checks_the_folder_and_the_free_space(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot write into"):
        outputs.ensure_writable(tmp_path / "file" / "sub")
    assert outputs.ensure_writable(tmp_path / "new" / "sub") == tmp_path / "new" / "sub"
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: type("U", (), {"free": 2**30})())
    with pytest.raises(OutputError, match=r"only 1\.00 GiB free .*the embeddings: about 2\.00 GiB needed"):
        outputs.ensure_writable(tmp_path, 2 * 2**30, "the embeddings")


def test_fingerprint_follows_contents_not_times(tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"weights")
    fp = outputs.fingerprint([a])
    os.utime(a, (0, 0))
    assert outputs.fingerprint([a]) == fp
    a.write_bytes(b"weightz")
    assert outputs.fingerprint([a]) != fp


def test_user_errors_exit_2_with_one_line(capsys):
    @exit_on_input_error
    def main(kind):
        if kind == "input":
            raise SeDRInputError("data/x.tsv:3: bad line")
        if kind == "disk":
            raise OSError(errno.ENOSPC, "No space left on device", "data/out/passages.memmap")
        raise OSError(errno.EIO, "I/O error")  # not the user's environment: a real traceback

    for kind, text in (
        ("input", "error: data/x.tsv:3: bad line"),
        ("disk", "error: no space left on the device while writing data/out/passages.memmap"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(kind)
        assert exc.value.code == 2
        assert capsys.readouterr().err.startswith(text)
    with pytest.raises(OSError):
        main("io")
