"""``python -m SeDR.export_original``: the original's layout for every class, read back bit for bit."""

from __future__ import annotations

import json
import runpy
import sys

import numpy as np
import pytest
import torch

from SeDR.data.collation import collate_queries
from SeDR.data.segmentation import SegmentSpec, collate_documents
from SeDR.modeling import build_model, load_model, save_pretrained
from SeDR.modeling.longformer import build_longformer, convert_star, load_longformer
from SeDR.tools import export_original

CLASSES = [
    "SeDR_without_LateCache",
    "SeDR",
    "SeDR_MaxP",
    "SeDR_Transformer_Head",
    "SeDR_Global_Attention",
    "STAR_MaxP",
    "STAR_Multi",
]
SEG = "roberta.embeddings.segment_type_embeddings.weight"
# What transformers 4.12's RobertaConfig (and 3.0.2's) is given: its own fields and the original's extras.
ROBERTA_412 = {
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "model_type",
    "architectures",
    "max_seg_num",
}
ALLENAI = {"attention_window", "attention_dilation", "attention_mode", "autoregressive"}


def ours(name, star_dir, folder):
    """A trained-looking checkpoint of ours: every table random, global projections unlike the local ones."""
    torch.manual_seed(0)
    model = build_model(name, star_dir, max_seg_num=1 if name == "STAR_Multi" else 4, cache_size=7)
    with torch.no_grad():
        model.backbone.embeddings.segment_type_embeddings.weight.normal_()
        for n, p in model.named_parameters():
            if "_global." in n:
                p.add_(0.1 * torch.randn_like(p))
    return save_pretrained(model, folder)


def batches(model, max_doc_length=24):
    rng = np.random.default_rng(0)
    M = 1 if model.model_class_name == "SeDR_Longformer" else model.max_seg_num
    spec = SegmentSpec(max_doc_length, M, extra_reserve=model.extra_content_reserve)
    lengths = (40, 530) if M == 1 and max_doc_length > 512 else (9, 30, 48, 590)  # 530: a second global CLS
    docs = [rng.integers(5, 380, size=n) for n in lengths]
    q = collate_queries([np.array([0, 7, 8, 9, 2]), np.array([0, 11, 2])], [0, 1], 8)
    return q, collate_documents(docs, range(len(docs)), spec)


def assert_same_model(a, b, max_doc_length=24):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    q, docs = batches(a, max_doc_length)
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a.encode_queries(q), b.encode_queries(q))
        assert torch.equal(a.encode_segments(docs), b.encode_segments(docs))
        if max_doc_length <= 512:  # the Longformer's training path reads the same slots (its own tests)
            assert torch.equal(a.encode_documents(docs), b.encode_documents(docs))


@pytest.mark.parametrize("name", CLASSES)
def test_round_trip_per_class(star_dir, tokenizer, tmp_path, name):
    src = ours(name, star_dir, tmp_path / "ours")
    out = export_original.main([str(src), str(tmp_path / "orig")])
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model.bin"]
    cfg = json.loads((out / "config.json").read_text())
    assert set(cfg) == ROBERTA_412 and cfg["model_type"] == "roberta" and cfg["architectures"] == [name]
    assert cfg["max_seg_num"] == (1 if name == "STAR_Multi" else 4)
    sd = torch.load(out / "pytorch_model.bin", weights_only=True)
    H = cfg["hidden_size"]
    assert sd[SEG].shape == (cfg["max_seg_num"], H)
    assert torch.equal(sd["roberta.embeddings.position_ids"], torch.arange(514)[None])  # as 4.12 saves it
    assert {"embeddingHead.weight", "embeddingHead.bias", "norm.weight", "norm.bias"} <= set(sd)
    assert {k.split(".", 1)[0] for k in sd} <= {"roberta", "embeddingHead", "norm", "trans_head"}
    glob = {k for k in sd if "_global." in k}
    assert len(glob) == (12 if name == "SeDR_Global_Attention" else 0)  # 2 layers x q/k/v x weight/bias
    heads = {k for k in sd if k.startswith("trans_head.")}
    if name == "SeDR_Transformer_Head":  # one RoBERTa layer under the encoder layer's sub-module names
        assert {
            "trans_head.attention.self.query.weight",
            "trans_head.attention.output.LayerNorm.bias",
            "trans_head.intermediate.dense.weight",
            "trans_head.output.dense.bias",
        } <= heads
    else:
        assert not heads
    if name == "STAR_Multi":
        assert (
            sd["roberta.embeddings.word_embeddings.weight"].shape[0]
            == cfg["vocab_size"]
            == len(tokenizer) + 4
        )
    back, mine = load_model(out), load_model(src)
    assert type(back) is type(mine) and back.model_class_name == name
    assert_same_model(mine, back)


def test_round_trip_longformer(star_dir, tmp_path):
    """allenai's keys with the one-sided window (3.0.2), read back as today's two-sided one."""
    conv = convert_star(star_dir, tmp_path / "starlf", max_doc_length=600, attention_window=64, max_seg_num=4)
    src = save_pretrained(build_longformer(conv, max_seg_num=4), tmp_path / "ours")
    out = export_original.main([str(src), str(tmp_path / "orig")])
    cfg = json.loads((out / "config.json").read_text())
    assert set(cfg) == ROBERTA_412 | ALLENAI and cfg["architectures"] == ["SeDR_Longformer"]
    assert (cfg["attention_window"], cfg["attention_dilation"]) == ([32, 32], [1, 1])
    assert (cfg["attention_mode"], cfg["autoregressive"], cfg["max_position_embeddings"]) == (
        "sliding_chunks",
        False,
        602,
    )
    sd = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert len([k for k in sd if "_global." in k]) == 12 and SEG not in sd
    back = load_longformer(out)
    assert back.config.attention_window == [64, 64]
    assert_same_model(load_longformer(src), back, max_doc_length=600)


def test_refuses_a_non_empty_out_dir_and_keeps_it(star_dir, tmp_path):
    src = ours("SeDR", star_dir, tmp_path / "ours")
    out = tmp_path / "orig"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as err:
        export_original.main([str(src), str(out)])
    assert err.value.code == 2
    assert (
        sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    )


def test_module_command(star_dir, tmp_path, monkeypatch):
    """``python -m SeDR.export_original MODEL_DIR OUT_DIR`` (run in-process),
    into an existing empty folder."""
    src = ours("SeDR", star_dir, tmp_path / "ours")
    (tmp_path / "orig").mkdir()
    monkeypatch.setattr(sys, "argv", ["export_original", str(src), str(tmp_path / "orig")])
    monkeypatch.delitem(
        sys.modules, "SeDR.export_original", raising=False
    )  # runpy executes a fresh copy as __main__
    runpy.run_module("SeDR.export_original", run_name="__main__")
    assert_same_model(load_model(src), load_model(tmp_path / "orig"))
