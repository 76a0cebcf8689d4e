"""Progress of long work: a tqdm bar on a terminal, periodic log lines elsewhere (docs/progress.md#log-lines).

tqdm's own ``disable=None`` hides the bar whenever stderr is not a terminal, so a redirected log, ``nohup``
or a batch scheduler saw nothing for hours of encoding. Light on purpose (no torch): preprocessing's
worker processes import it.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import std as tqdm_std
from tqdm.auto import tqdm

# Off a terminal: one log line at most this often while work goes on, and one when it ends.
PROGRESS_LOG_SECONDS = 60.0
PROGRESS_LOGGER = "SeDR.progress"


def progress(
    iterable=None,
    *,
    total: float | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    unit_scale: bool = False,
    **bar_options,
):
    """The progress display of every long loop: a tqdm bar on a terminal or in a notebook, a
    :class:`LogProgress` anywhere else, nothing when not ``enabled``. ``bar_options`` go to the bar only."""
    if enabled and _on_screen():
        return tqdm(
            iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=False, **bar_options
        )
    return LogProgress(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, log=enabled)


def _on_screen() -> bool:
    # In a notebook tqdm.auto's class derives from the widget bar of tqdm.notebook.
    return sys.stderr.isatty() or any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)


class LogProgress:
    """tqdm's interface (iteration, ``update``, ``n``, ``set_postfix``, ``close``) written as log lines
    of :data:`PROGRESS_LOGGER`: one every ``interval`` seconds while work goes on, one at the end."""

    def __init__(
        self,
        iterable=None,
        *,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        unit_scale: bool = False,
        log: bool = True,
        interval: float = PROGRESS_LOG_SECONDS,
        clock=time.monotonic,
    ):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        if iterable is not None and not hasattr(iterable, "__next__"):
            # tqdm.auto's bar calls iter() once when it is made; a DataLoader's iterator draws its base
            # seed from torch's generator, so the training run's later random draws (dropout) depend on
            # it. Done here too: the same weights with and without a terminal, and as before.
            iter(iterable)
        self.iterable, self.total, self.desc = iterable, total, desc
        self.unit, self.unit_scale = unit, unit_scale
        self.log, self.interval, self.clock = log, interval, clock
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last_line = clock()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.log and self.clock() - self.last_line >= self.interval:
            self._line("")
            self.last_line = self.clock()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.log:
                self._line("done, ")

    def _line(self, state: str) -> None:
        if self.total:
            counts = "{n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) in {elapsed}, {rate_fmt}"
            counts += "" if self.closed else ", {remaining} left"
        else:
            counts = "{n_fmt} {unit} in {elapsed}, {rate_fmt}"
        line = tqdm_std.tqdm.format_meter(
            self.n,
            self.total or None,
            self.clock() - self.start,
            prefix=self.desc,
            unit=self.unit,
            unit_scale=self.unit_scale,
            bar_format="{desc}: " + state + counts + "{postfix}",
            postfix=self.postfix or None,
        )
        logging.getLogger(PROGRESS_LOGGER).info(line.replace(",  ", ", "))  # tqdm pads short rates
