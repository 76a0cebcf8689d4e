"""Run every bench script, each in a fresh process, and collect the ratios they print.

    python bench/run_all.py --quick      # < 10 minutes on 2 CPU cores
    python bench/run_all.py              # the full sizes
    python bench/run_all.py --device cuda   # encoding, training and torch search on a GPU

Each script times its schemes side by side (interleaved, min of N), so its ratios hold on a
loaded machine; the absolute times they print do not.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(quick: bool, device: str) -> list[list[str]]:
    q = ["--quick"] if quick else []
    dev = ["--device", device]
    return [
        ["batching.py", *q, *dev],
        ["train_step.py", *q, *dev],
        ["retrieval.py", *q, *dev],
        ["preprocess.py", *(["--docs", "200", "--ref_docs", "30"] if quick else [])],
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    t_all = time.perf_counter()
    summary, failed = [], []
    for cmd in scripts(args.quick, args.device):
        print(f"\n=== python bench/{' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], capture_output=True, text=True)
        out = proc.stdout + (proc.stderr if proc.returncode else "")
        print(out, end="", flush=True)
        print(f"--- {cmd[0]}: {time.perf_counter() - t0:.0f} s, exit {proc.returncode}", flush=True)
        if proc.returncode:
            failed.append(cmd[0])
        summary += [
            f"{cmd[0]:14s} {line.strip()}"
            for line in out.splitlines()
            if any(w in line for w in ("RATIO", "ratio", "speed-up", "allclose"))
        ]
    print("\n=== summary (ratios measured side by side in each script)")
    print("\n".join(summary))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"run_all wall time {time.perf_counter() - t_all:.0f} s, load average now {load}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
