"""Owning outputs: locks (and stale ones), atomic folders, dated backups, space checks, write failures."""

import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_sizes_are_written_in_a_unit_that_fits(tmp_path, monkeypatch):
    assert [outputs.format_size(n) for n in (0, 1000, 1024, 3277, 16028640, 2**30, 512 * 2**30)] == [
        "0 bytes",
        "1000 bytes",
        "1.00 KiB",
        "3.20 KiB",
        "15.3 MiB",
        "1.00 GiB",
        "512 GiB",
    ]
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(OutputError, match=r"only 1000 bytes free .*the results: about 2\.00 KiB needed"):
        outputs.ensure_writable(tmp_path, 2048, "the results")  # not "0.00 GiB free"


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert outputs.process_umask() == mask
        outputs.atomic_write_text(tmp_path / "metrics.json", "{}")
        with outputs.RunLock(tmp_path, "run") as lock:
            lock_mode = os.stat(lock.path).st_mode & 0o777
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "metrics.json").st_mode & 0o777 == 0o666 & ~mask  # as open() would make it
    assert lock_mode == 0o666 & ~mask


def test_a_lock_refusal_names_the_output_not_the_folder_it_sits_in(tmp_path):
    out = tmp_path / "my-index"
    with outputs.RunLock(tmp_path, out.name, output=out):
        with pytest.raises(OutputError) as err:
            outputs.RunLock(tmp_path, out.name, output=out).acquire()
    assert str(err.value).startswith(f"{out} is being written by process {os.getpid()}")


def test_claim_refuses_keeps_or_backs_up_earlier_outputs(tmp_path, caplog):
    (tmp_path / "run-1").write_text("one")

    def earlier():
        return sorted(tmp_path.glob("run-*"))

    common = dict(lock_in=tmp_path, lock_name="run", earlier=earlier)
    with pytest.raises(OutputError, match="run-1 exists; pass a flag"):
        outputs.claim(tmp_path, **common, refusal=lambda found: f"{found[0].name} exists; pass a flag")
    assert not (tmp_path / ".run.lock").exists()  # a refusal keeps no lock
    with outputs.claim(tmp_path, **common, when_taken=outputs.KEEP) as held:
        assert held.earlier == [tmp_path / "run-1"] and held.backup is None
        assert (tmp_path / ".run.lock").exists()
        with pytest.raises(OutputError, match="being written"):  # one writer at a time
            outputs.claim(tmp_path, **common, when_taken=outputs.KEEP)
    held = outputs.claim(tmp_path, **common, when_taken=outputs.BACKUP, backup_folder=tmp_path / "run")
    held.release()
    assert held.backup.name.startswith("run.bak-") and (held.backup / "run-1").read_text() == "one"
    assert not (tmp_path / "run-1").exists()
    (tmp_path / "whole").mkdir()
    (tmp_path / "whole" / "f").write_text("old")
    held = outputs.claim(
        tmp_path / "whole",
        lock_in=tmp_path,
        lock_name="whole",
        earlier=lambda: [tmp_path / "whole"],
        when_taken=outputs.BACKUP,
    )
    held.release()
    assert held.backup.name.startswith("whole.bak-") and (held.backup / "f").read_text() == "old"
    assert not (tmp_path / "whole").exists()


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_staged_folder_removes_what_killed_runs_left_and_keeps_the_old_folder_until_done(tmp_path, caplog):
    out = tmp_path / "index"
    out.mkdir()
    (out / "old").write_text("old")
    orphan = tmp_path / f".index.tmp-{_dead_pid()}"
    orphan.mkdir()
    (orphan / "half").write_text("half")
    held = outputs.claim(out, lock_in=tmp_path, lock_name="index", earlier=lambda: [out], when_taken="keep")
    with caplog.at_level("WARNING"), held, outputs.staged_folder(held) as tmp:
        assert not orphan.exists() and (out / "old").read_text() == "old"
        (tmp / "new").write_text("new")
    assert any(f"removing {orphan}, left by an interrupted run" in r.getMessage() for r in caplog.records)
    assert [p.name for p in out.iterdir()] == ["new"] and (held.backup / "old").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["index", held.backup.name])


def test_a_truncated_or_corrupt_saved_state_is_one_error_naming_it(tmp_path):
    import torch

    path = tmp_path / "training_state.pt"
    torch.save({"step": 3, "weights": torch.arange(1000.0)}, path)
    assert outputs.read_saved_state(path, "fix it")["step"] == 3
    whole = path.read_bytes()
    pickled = whole.index(b"\x80\x02}")  # data.pkl: protocol 2, then the dict
    flipped = whole[:pickled] + b"\xda" + whole[pickled + 1 :]  # the archive intact, its pickle not
    for damaged in (whole[: len(whole) // 2], whole[:10], b"", flipped):
        path.write_bytes(damaged)
        with pytest.raises(OutputError, match=f"^{path} cannot be read .*: truncated or corrupt; fix it$"):
            outputs.read_saved_state(path, "fix it")


def test_resume_compares_paths_by_place_and_content_not_spelling(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    for name in ("init", "copy", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "w").write_text("other weights" if name == "other" else "weights")

    def content(folder):
        return outputs.fingerprint([Path(folder) / "w"])

    kinds = {"output_dir": outputs.RUN_FOLDER, "preprocess_dir": outputs.RECORDED, "init_path": content}
    saved = {"output_dir": "./runs/a", "preprocess_dir": "data/rs", "init_path": "init", "seed": 1}

    def changes(**now):
        args = argparse.Namespace(**{**saved, **now})
        return outputs.flag_changes(saved, args, resumable={"resume"}, paths=kinds)

    assert changes(preprocess_dir="./data/rs/", init_path=str(tmp_path / "init")) == []  # same places
    assert changes(output_dir="/elsewhere/moved") == []  # the run folder moved
    assert changes(init_path="copy") == []  # another place, the same weights
    assert changes(init_path="other") == ["--init_path: saved 'init', now 'other' (other contents)"]
    assert changes(seed=2) == ["--seed: saved 1, now 2"]
    shutil.rmtree(tmp_path / "init")  # the saved place is gone: nothing to compare, said once
    with caplog.at_level("WARNING"):
        assert changes(init_path="other") == []
    assert any("the saved --init_path init no longer exists" in r.getMessage() for r in caplog.records)
