"""Named demo stages with completion records: a stage runs once per settings key."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)


def key_hash(key: Mapping) -> str:
    """A short stable digest of a settings key, for chaining a stage's key to the ones before it."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """Runs named stages once per settings key; ``stages/<name>.json`` marks a finished stage."""

    def __init__(self, out: Path, bar=None):
        self.out = out
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bar = bar
        self.ran: list[str] = []
        self.reused: list[str] = []

    def run(self, name: str, key: Mapping, fn: Callable[[], dict], outputs: tuple[Path, ...] = ()) -> dict:
        """``fn()`` unless a record with the same ``key`` exists; returns the stage's result dict.

        ``outputs`` are removed before a (re)run, so nothing of an older run can be mistaken for new.
        The stage's standard output goes to ``logs/<name>.stdout.txt``.
        """
        marker = self.dir / f"{name}.json"
        key = json.loads(json.dumps(key, default=str))
        if marker.exists():
            record = json.loads(marker.read_text())
            if record.get("key") == key:
                self._log(name, "reused", record.get("seconds"))
                self.reused.append(name)
                return record["result"]
            logger.info("stage %s: settings changed, running it again", name)
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        for p in outputs:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        marker.unlink(missing_ok=True)
        t0 = time.time()
        with open(self.out / "logs" / f"{name}.stdout.txt", "w") as f, contextlib.redirect_stdout(f):
            result = fn()
        seconds = time.time() - t0
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "result": result, "seconds": seconds}, indent=1))
        os.replace(tmp, marker)
        self._log(name, "ran", seconds)
        self.ran.append(name)
        return result

    def _log(self, name: str, status: str, seconds) -> None:
        with open(self.out / "stage_log.jsonl", "a") as f:
            f.write(
                json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "stage": name,
                        "status": status,
                        "seconds": seconds,
                    }
                )
                + "\n"
            )
        logger.info("stage %s: %s%s", name, status, "" if seconds is None else f" ({seconds:.1f}s)")
        if self.bar is not None:
            self.bar.update(1)
