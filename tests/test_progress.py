"""Progress of long work (SeDR/core/progress.py): a bar on a terminal, log lines in a redirected log."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm

from SeDR.core import progress as progress_module
from SeDR.core.progress import PROGRESS_LOGGER, LogProgress, progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == PROGRESS_LOGGER]


def test_a_line_every_interval_and_one_at_the_end(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger=PROGRESS_LOGGER)
    bar = LogProgress(range(10), desc="encode documents", unit="seg", interval=60, clock=clock)
    for _ in bar:
        clock.t += 25  # 25 s per item: a line once 60 s have passed since the last one
    # 3 items in 75 s = 25 s/item, 7 left = 175 s = 02:55; the last line needs no estimate
    assert _lines(caplog) == [
        "encode documents: 3/10 seg (30%) in 01:15, 25.00s/seg, 02:55 left",
        "encode documents: 6/10 seg (60%) in 02:30, 25.00s/seg, 01:40 left",
        "encode documents: 9/10 seg (90%) in 03:45, 25.00s/seg, 00:25 left",
        "encode documents: done, 10/10 seg (100%) in 04:10, 25.00s/seg",
    ]


def test_unknown_totals_postfixes_and_a_silent_bar(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger=PROGRESS_LOGGER)
    with LogProgress(desc="check documents", unit="doc", interval=30, clock=clock) as bar:
        clock.t = 40
        bar.set_postfix(loss="0.5000", acc="0.750")
        bar.update(80)
        assert bar.n == 80
    with LogProgress(total=4, desc="quiet", log=False, interval=0, clock=clock) as silent:
        silent.update(4)
    assert _lines(caplog) == [
        "check documents: 80 doc in 00:40, 2.00doc/s, loss=0.5000, acc=0.750",
        "check documents: done, 80 doc in 00:40, 2.00doc/s, loss=0.5000, acc=0.750",
    ]


def test_a_bar_on_a_terminal_lines_elsewhere(monkeypatch):
    class Terminal:
        def isatty(self):
            return True

        def write(self, s):
            return len(s)

        def flush(self):
            pass

    assert isinstance(progress(range(3), desc="x"), LogProgress)  # pytest's captured stderr is no terminal
    assert not progress(range(3), desc="x", enabled=False).log
    monkeypatch.setattr(progress_module.sys, "stderr", Terminal())
    bar = progress(range(3), desc="x", file=Terminal())
    assert isinstance(bar, std_tqdm) and not bar.disable  # tqdm's disable=None would have hidden it
    assert list(bar) == [0, 1, 2]
    assert isinstance(progress(range(3), desc="x", enabled=False), LogProgress)


def test_a_dataloader_draws_from_torch_as_under_tqdm_auto():
    """tqdm.auto's bar makes one iterator of a DataLoader when it is built (a base-seed draw from torch's
    generator); training's dropout follows that generator, so the log lines must draw the same."""

    def state_after(wrap) -> torch.Tensor:
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(list(range(3)), batch_size=1)
        assert [int(x) for x in wrap(loader)] == [0, 1, 2]
        return torch.get_rng_state()

    reference = state_after(lambda loader: tqdm(loader, total=3, disable=True))
    assert not torch.equal(reference, state_after(lambda loader: loader))  # the draw is real
    assert torch.equal(state_after(lambda loader: progress(loader, total=3, desc="epoch")), reference)
    assert torch.equal(
        state_after(lambda loader: progress(loader, total=3, desc="x", enabled=False)), reference
    )


@pytest.mark.slow
def test_a_redirected_index_command_logs_its_progress(star_dir, tmp_path):
    """``python -m SeDR.index ... 2> log``: the log names every stage with its count, no bar characters."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"alpha beta {i} " * 20}) + "\n" for i in range(5))
    )
    log = tmp_path / "index.log"
    with open(log, "w") as err:
        subprocess.run(
            [sys.executable, "-m", "SeDR.index", str(star_dir), str(docs), str(tmp_path / "index")],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=err,
            check=True,
            timeout=300,
        )
    lines = [
        line.split(f"{PROGRESS_LOGGER}: ", 1)[1]
        for line in log.read_text().splitlines()
        if PROGRESS_LOGGER in line
    ]
    assert [line.split(" in ")[0] for line in lines] == [
        "check documents: done, 5 doc",
        "index documents: done, 5/5 doc (100%)",
    ]
    assert "\r" not in log.read_text()
