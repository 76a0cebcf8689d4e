"""``bash bench/gpu_check.sh --tiny`` on the CPU: the table's rows, every JSON key, and the figures
that must hold whatever the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_KEYS = {
    "segments_per_step",
    "step_s",
    "segments_per_s",
    "peak_gib",
    "first_loss",
    "last_loss",
    "skipped_steps",
    "loss_rel_diff_vs_fp32",
}
TRAIN_KEYS = {"max_bsize", "steps", "queries", "runs", "checkpointing_time_ratio", "checkpointing_peak_ratio"}
ENCODE_KEYS = {
    "segments",
    "segments_per_doc",
    "passes",
    "sedr_segments_per_s",
    "star_maxp_segments_per_s",
    "sedr_over_star_maxp_time",
    "padded_over_grouped_time",
    "msmarco_index_hours",
    "paper_index_hours",
    "msmarco_hours_over_paper",
}
SEARCH_KEYS = {
    "rows",
    "dim",
    "queries_per_call",
    "device",
    "top100_rows_equal_cpu",
    "top100_mismatches",
    "top100_mismatches_all_near_ties",
    "top100_max_score_diff",
    "fp16_top100_overlap_with_fp32",
} | {
    f"{t}_{k}"
    for t in ("fp32", "fp16")
    for k in (
        "queries_per_s_top100",
        "queries_per_s_top1024",
        "search_peak_extra_gib",
        "search_peak_over_score_block",
    )
}
ROWS = [
    "train fp32",
    "train fp16",
    "train bf16",
    "train fp16 + checkpointing",
    "gradient checkpointing on/off",
    "encode bf16 SeDR / STAR_MaxP",
    "encode padded / row-grouped",
    "index MS MARCO Document",
    "search top-100 equals CPU",
    "search fp32 queries/s",
    "search fp16 queries/s",
    "search fp16 top-100 overlap",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_tiny_gpu_check_prints_every_row_and_writes_every_key(tiny):
    stdout, res = tiny
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert [line[2:].split(" | ")[0].strip() for line in table] == ROWS
    assert {
        "machine",
        "gpu",
        "torch",
        "date",
        "tiny",
        "device",
        "seconds",
        "train",
        "encode",
        "search",
        "imported",
    } <= res.keys()
    assert TRAIN_KEYS <= res["train"].keys() and ENCODE_KEYS <= res["encode"].keys()
    assert SEARCH_KEYS <= res["search"].keys()
    assert set(res["train"]["runs"]) == {"fp32", "fp16", "bf16", "fp16 + checkpointing"}
    for run in res["train"]["runs"].values():
        assert RUN_KEYS <= run.keys()
    assert res["imported"] == {"faiss": False, "ir_measures": False}  # the GPU image has neither


@pytest.mark.slow
def test_tiny_gpu_check_figures(tiny):
    _, res = tiny
    runs = res["train"]["runs"]
    assert runs["fp32"]["loss_rel_diff_vs_fp32"] == 0 and runs["fp32"]["skipped_steps"] == 0
    assert runs["bf16"]["loss_rel_diff_vs_fp32"] < 0.05
    # Checkpointing recomputes the same numbers (the recomputed dropout reuses its random state).
    assert runs["fp16 + checkpointing"]["last_loss"] == pytest.approx(runs["fp16"]["last_loss"], rel=1e-4)
    en = res["encode"]
    assert en["msmarco_index_hours"] == pytest.approx(
        3.2e6 * en["segments_per_doc"] / en["sedr_segments_per_s"] / 3600, rel=1e-9
    )
    assert 1 <= en["segments_per_doc"] <= 4
    se = res["search"]
    assert se["top100_rows_equal_cpu"] and se["top100_mismatches"] == 0  # the same device here: exact
    assert 0.9 <= se["fp16_top100_overlap_with_fp32"] <= 1.0
