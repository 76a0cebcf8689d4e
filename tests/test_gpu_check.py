"""``bash bench/gpu_check.sh --tiny`` on the CPU: the table's rows, every JSON key, the JSON written
after every section, and the figures that must hold whatever the machine."""

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
    "forward_backward_s",
    "optimizer_step_s",
    "step_s",
    "segments_per_s",
    "peak_gib",
    "steps_taken",
    "skipped_steps",
    "first_loss",
    "last_loss",
    "tf32",
    "loss_rel_diff_vs_fp32",
    "comparable_to_fp32",
    "msmarco_epoch_hours",
}
TRAIN_KEYS = {
    "max_bsize",
    "steps",
    "fp16_init_scale",
    "queries",
    "msmarco_micro_batches_per_epoch",
    "accumulation",
    "runs",
    "checkpointing_time_ratio",
    "checkpointing_peak_ratio",
}
ENCODE_KEYS = (
    {
        "segments",
        "segments_per_doc",
        "passes",
        "tf32_in_effect",
        "sedr_over_star_maxp_time",
        "padded_over_grouped_time",
        "star_maxp_bf16_segments_per_s",
        "paper_index_hours",
    }
    | {f"{k}_{p}" for p in ("fp32", "tf32", "bf16") for k in ("msmarco_index_hours",)}
    | {f"sedr_{p}_segments_per_s" for p in ("fp32", "tf32", "bf16")}
)
SEARCH_KEYS = (
    {
        "device",
        "dim",
        "rows",
        "queries_per_call",
        "top100_rows_equal_cpu",
        "top100_mismatches",
        "top100_mismatches_all_near_ties",
        "top100_max_score_diff",
        "msmarco_rows",
        "index_gb",
        "index_gib",
    }
    | {
        f"fp16_{v}_{k}"
        for v in ("random", "layernorm")
        for k in ("overlap", "distinct_scores", "score_dtype")
    }
    | {f"{t}_ms_per_query_{c}" for t in ("fp32", "fp16") for c in (1, 32, 1024)}
    | {f"{t}_search_peak_gib" for t in ("fp32", "fp16")}
)
ROWS = [
    "train fp32",
    "train tf32",
    "train fp16",
    "train bf16",
    "train fp16 + checkpointing",
    "gradient checkpointing on/off",
    "encode SeDR fp32 / TF32 / bf16",
    "encode bf16 SeDR / STAR_MaxP",
    "encode padded / row-grouped",
    "index MS MARCO Document",
    "search top-100 equals CPU",
    "search fp16 top-100 overlap",
    "search fp32 ms/query",
    "search fp16 ms/query",
    "index size",
]


# What a CUDA torch image lacks: the check must run with these unimportable.
ABSENT = ("faiss", "ir_measures", "tensorboard", "matplotlib", "bm25s")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    stubs = tmp_path_factory.mktemp("absent")
    for name in ABSENT:
        (stubs / name).mkdir()
        (stubs / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\")\n"
        )
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join([str(stubs), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_tiny_gpu_check_prints_every_row_and_writes_every_key(tiny):
    stdout, res = tiny
    table = [line for line in stdout.splitlines() if line.startswith("| ") and " | " in line[2:]]
    names = [line[2:].split(" | ")[0].strip() for line in table]
    assert names[: len(ROWS)] == ROWS
    assert [n.split(",")[0] for n in names[len(ROWS) :]] == [
        "SeDR on MS MARCO Document",
        "paper",
        "this device",
        "this device",
        "this device",
        "this device",
    ]  # the Table 2 line-up: the paper's row, then this device's
    assert {
        "machine",
        "gpu",
        "torch",
        "date",
        "tiny",
        "device",
        "seconds",
        "sections_done",
        "train",
        "encode",
        "search",
        "imported",
        "table2",
    } <= res.keys()
    assert res["sections_done"] == ["train", "encode", "search"]
    assert TRAIN_KEYS <= res["train"].keys() and ENCODE_KEYS <= res["encode"].keys()
    assert SEARCH_KEYS <= res["search"].keys()
    assert set(res["train"]["runs"]) == {"fp32", "tf32", "fp16", "bf16", "fp16 + checkpointing"}
    for run in res["train"]["runs"].values():
        assert RUN_KEYS <= run.keys()
    # The GPU image has none of them.
    assert res["imported"] == {"faiss": False, "ir_measures": False, "tensorboard": False}


@pytest.mark.slow
def test_tiny_gpu_check_figures(tiny):
    _, res = tiny
    tr = res["train"]
    runs = tr["runs"]
    assert runs["fp32"]["loss_rel_diff_vs_fp32"] == 0 and runs["fp32"]["skipped_steps"] == 0
    # fp16 steps are really taken (its starting scale does not overflow), the same number as fp32's.
    assert runs["fp16"]["steps_taken"] == runs["fp32"]["steps_taken"] == tr["steps"] > 0
    assert runs["fp16"]["comparable_to_fp32"] and runs["fp16"]["loss_rel_diff_vs_fp32"] > 0
    assert runs["bf16"]["loss_rel_diff_vs_fp32"] < 0.05
    assert not runs["tf32"]["tf32"] and runs["tf32"]["last_loss"] == runs["fp32"]["last_loss"]  # CPU: no TF32
    # Checkpointing recomputes the same numbers (the recomputed dropout reuses its random state).
    assert runs["fp16 + checkpointing"]["last_loss"] == pytest.approx(runs["fp16"]["last_loss"], rel=1e-4)
    # One MS MARCO epoch: micro-batches x (forward-backward + a quarter of an optimizer step).
    r = runs["bf16"]
    assert r["msmarco_epoch_hours"] == pytest.approx(
        tr["msmarco_micro_batches_per_epoch"] * (r["forward_backward_s"] + r["optimizer_step_s"] / 4) / 3600
    )
    # 367,013 queries at (17 segments / ~2.25 per positive) queries per micro-batch in the README run;
    # the tiny run packs 6 segments.
    assert 367_013 / 6 < tr["msmarco_micro_batches_per_epoch"] < 367_013
    en = res["encode"]
    for p in ("fp32", "tf32", "bf16"):
        assert en[f"msmarco_index_hours_{p}"] == pytest.approx(
            3.2e6 * en["segments_per_doc"] / en[f"sedr_{p}_segments_per_s"] / 3600, rel=1e-9
        )
    assert 1 <= en["segments_per_doc"] <= 4 and not en["tf32_in_effect"]
    se = res["search"]
    assert se["top100_rows_equal_cpu"] and se["top100_mismatches"] == 0  # the same device here: exact
    assert 0.9 <= se["fp16_random_overlap"] <= 1.0 and 0.9 <= se["fp16_layernorm_overlap"] <= 1.0
    assert se["msmarco_rows"] == round(4000 * en["segments_per_doc"])  # the tiny stand-in for 3.2 M documents
    assert se["index_gb"] == pytest.approx(se["msmarco_rows"] * (16 + 1) * 4 / 1e9)
    assert all(se[f"{t}_ms_per_query_{c}"] > 0 for t in ("fp32", "fp16") for c in (1, 32, 1024))


def test_the_json_keeps_the_sections_done_when_one_fails(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import gpu_check

    def crash(*args, **kwargs):
        raise RuntimeError("out of GPU memory in the search section")

    monkeypatch.setattr(gpu_check, "search_section", crash)
    out = tmp_path / "partial.json"
    with pytest.raises(RuntimeError, match="search section"):
        gpu_check.main(["--tiny", "--device", "cpu", "--steps", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["sections_done"] == ["train", "encode"] and "search" not in res
    assert res["train"]["runs"]["fp16"]["steps_taken"] == 1
