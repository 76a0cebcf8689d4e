"""Backbone adapters: every supported family equals its stock model, interacts under SeDR and not under
SeDR_MaxP, row groups and reloads change nothing; unsupported families and classes are refused up front.

Each family's folder is what a researcher gets from transformers: ``save_pretrained`` of a tiny random
base model next to a tiny tokenizer of the family's kind (``SeDR.families.make_backbone_folder``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SeDR.core.errors import SeDRInputError
from SeDR.data.collation import collate_queries
from SeDR.data.segmentation import SegmentSpec, collate_documents
from SeDR.modeling import ModelConfigError, build_model, load_model, save_pretrained
from SeDR.modeling.backbones import BACKBONES, check_backbone_folder
from SeDR.testing import families

FAMILIES = families.BACKBONE_FAMILIES
GLOBAL_FAMILIES = ("roberta", "xlm-roberta", "camembert", "bert", "electra")
ROWS = SegmentSpec(40, 4)  # L = 28, P = 3, T = 33: longer than ModernBERT's tiny window (4 each side)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {f: families.make_backbone_folder(root / f, f) for f in FAMILIES}


def documents(seed=0, lengths=(9, 60, 20, 90, 45)):
    """1-4 segment documents of content ids that avoid every family's special ids (< 10, > 290)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(10, 290, size=n) for n in lengths]


def doc_batch(model, docs=None, **kw):
    docs = documents() if docs is None else docs
    return collate_documents(docs, range(len(docs)), ROWS, **model.special_ids, **kw)


def test_every_family_has_an_adapter():
    assert set(FAMILIES) <= set(BACKBONES)


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_encoder_equals_the_stock_model(folders, family):
    """Our layer loop's last hidden states equal ``AutoModel``'s on document and query rows with padding."""
    from transformers import AutoModel

    model = build_model("STAR_MaxP", folders[family], max_seg_num=4).eval()
    stock = AutoModel.from_pretrained(str(folders[family])).eval()
    docs = doc_batch(model)
    ids = model.special_ids
    queries = collate_queries(
        [
            np.array([ids["cls_id"], 11, 12, 13, 14, ids["eos_id"]]),
            np.array([ids["cls_id"], 20, ids["eos_id"]]),
        ],
        [0, 1],
        9,
        pad_id=ids["pad_id"],
    )
    with torch.no_grad():
        for b in (docs, queries):
            ours = model._encode(b.input_ids, b.attention_mask)
            want = stock(input_ids=b.input_ids, attention_mask=b.attention_mask).last_hidden_state
            real = b.attention_mask.bool()  # masked positions are never read (ModernBERT's differ there)
            assert (ours - want)[real].abs().max() <= 1e-5, family
    assert model.backbone_prefix == type(stock).base_model_prefix
    assert set(model.state_dict()) >= {
        f"{model.backbone_prefix}.{k}" for k in stock.state_dict() if "pooler" not in k
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_interaction_engages_and_row_groups_reloads_agree(folders, family, tmp_path):
    """Changing segment 2 of a document moves its segment 0 under SeDR, not under SeDR_MaxP; row groups and
    a save/reload give the same vectors."""
    sedr = build_model("SeDR", folders[family], max_seg_num=4).eval()
    maxp = build_model("SeDR_MaxP", folders[family], max_seg_num=4).eval()
    docs = documents()
    changed = [d.copy() for d in docs]
    changed[3][2 * ROWS.content_len :] = 15  # doc 3, segment 2 on: other tokens
    counts = doc_batch(sedr, docs).seg_counts
    assert counts[3] == 3
    first = int(counts[:3].sum())  # row of doc 3's segment 0
    with torch.no_grad():
        a, b = sedr.encode_segments(doc_batch(sedr, docs)), sedr.encode_segments(doc_batch(sedr, changed))
        # Small at random init, but the same row is bit-identical without interaction (below).
        assert (a[first] - b[first]).abs().max() > 1e-6
        assert torch.allclose(a[:first], b[:first], atol=1e-6)  # other documents untouched
        c, d = maxp.encode_segments(doc_batch(maxp, docs)), maxp.encode_segments(doc_batch(maxp, changed))
        assert torch.equal(c[first], d[first])
        grouped = sedr.encode_segments(doc_batch(sedr, docs, row_groups=True, group_overhead=0))
        assert torch.allclose(grouped, a, atol=1e-5, rtol=0)
    save_pretrained(sedr, tmp_path / "saved")
    reloaded = load_model(tmp_path / "saved").eval()
    assert reloaded.special_ids == sedr.special_ids
    with torch.no_grad():
        assert torch.equal(reloaded.encode_segments(doc_batch(reloaded, docs)), a)


@pytest.mark.parametrize("family", FAMILIES)
def test_global_attention_and_transformer_head(folders, family):
    """SeDR_Global_Attention runs where the layers allow it and is refused with the reason elsewhere;
    SeDR_Transformer_Head runs on every family (a fresh layer of the family over the slots)."""
    head = build_model("SeDR_Transformer_Head", folders[family], max_seg_num=4).eval()
    with torch.no_grad():
        out = head.encode_documents(doc_batch(head))
    assert out.shape == (5, 4, 32) and torch.isfinite(out).all()
    if family in GLOBAL_FAMILIES:
        model = build_model("SeDR_Global_Attention", folders[family], max_seg_num=4).eval()
        with torch.no_grad():
            assert torch.isfinite(model.encode_segments(doc_batch(model))).all()
    else:
        with pytest.raises(ModelConfigError, match=f"cannot run on a {family} backbone: its"):
            build_model("SeDR_Global_Attention", folders[family], max_seg_num=4)


@pytest.mark.parametrize("family", ["modernbert", "deberta-v2"])
def test_gradient_checkpointing_agrees(folders, family):
    from test_modeling_encoder import assert_checkpointing_agrees

    model = build_model("SeDR", folders[family], max_seg_num=4).train()
    assert_checkpointing_agrees(model, doc_batch(model, row_groups=True, group_overhead=0), seed=3)


def test_modernbert_sliding_layers_see_their_window_only(folders):
    """Layer 1 attends fully, layer 2 within ``|i - j| <= 4`` (``local_attention`` 8) on position ids."""
    model = build_model("STAR_MaxP", folders["modernbert"], max_seg_num=4).eval()
    assert [layer.attention_type for layer in model.adapter.layers] == [
        "full_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    ]
    args = model.adapter.layer_args(
        torch.zeros(1, 12, 32), torch.ones(1, 12), torch.arange(12)[None], torch.arange(12)[None]
    )
    sliding = args[1][0][0, 0]  # (12, 12) additive mask of the sliding layer
    assert torch.equal(sliding == 0, (torch.arange(12)[:, None] - torch.arange(12)[None]).abs() <= 4)
    assert torch.equal(args[0][0], torch.zeros(1, 1, 1, 12))


def test_special_ids_come_from_the_folder(folders, tmp_path):
    """No tokenizer and no recorded ids: refused, saying what to add;
    RoBERTa's own config ids are accepted."""
    src = folders["bert"]
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((src / name).read_bytes())
    with pytest.raises(
        SeDRInputError, match="no tokenizer files and no sedr_special_ids.*tokenizer.save_pretrained"
    ):
        build_model("SeDR", bare, max_seg_num=4)
    cfg = json.loads((bare / "config.json").read_text())
    cfg["sedr_special_ids"] = {"cls_id": 2, "eos_id": 3, "pad_id": 0}
    (bare / "config.json").write_text(json.dumps(cfg))
    assert build_model("SeDR", bare, max_seg_num=4).special_ids == {"cls_id": 2, "eos_id": 3, "pad_id": 0}
    assert build_model("SeDR", src, max_seg_num=4).special_ids == {"cls_id": 2, "eos_id": 3, "pad_id": 0}
    assert build_model("SeDR", folders["camembert"], max_seg_num=4).special_ids == {
        "cls_id": 5,
        "eos_id": 6,
        "pad_id": 1,
    }


def test_unsupported_families_are_refused_before_any_work(folders, tmp_path):
    from transformers import DebertaV2Config

    gpt = tmp_path / "gpt2"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(SeDRInputError, match="unsupported backbone model_type 'gpt2'; supported: roberta"):
        check_backbone_folder(gpt)
    conv = tmp_path / "deberta-conv"
    conv.mkdir()
    cfg = DebertaV2Config(
        vocab_size=304,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        conv_kernel_size=3,
    )
    (conv / "config.json").write_text(cfg.to_json_string())
    with pytest.raises(SeDRInputError, match="convolution after the first layer"):
        check_backbone_folder(conv)
    for family in FAMILIES:
        check_backbone_folder(folders[family])  # supported: nothing raised
    check_backbone_folder("roberta-base")  # a hub name is not checked here


def test_rows_past_the_position_table_are_refused(folders):
    model = build_model("STAR_MaxP", folders["bert"], max_seg_num=1).eval()
    width = model.config.max_position_embeddings + 1
    ids = torch.full((1, width), 20)
    with pytest.raises(SeDRInputError, match="position table has 512 rows; lower --max_seg_length"):
        model._encode(ids, torch.ones_like(ids))
