"""Segment-Interaction Transformer on stock layers (docs/models.md#encoder-loop),
against references written by hand.

The reference implementations here are written independently of ``SeDR.modeling.encoder``: the
The broadcast one drives a separate, eager-attention ``RobertaModel`` and overwrites the placeholders with
explicit in-place loops; the Global-Attention one assembles each CLS's key list position by position.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from transformers import RobertaModel

from SeDR.data.batches import SegmentBatch
from SeDR.data.segmentation import SegmentSpec, collate_documents
from SeDR.modeling import build_model
from SeDR.modeling import encoder as enc


@pytest.fixture(scope="module")
def doc_batch():
    """Documents of 1, 3, 2 and 4 segments with Lraw 24, M 4 (L = 12, T = 17)."""
    rng = np.random.default_rng(0)
    spec = SegmentSpec(24, 4)
    docs = [rng.integers(5, 390, size=n) for n in (9, 30, 20, 48)]
    return collate_documents(docs, [0, 1, 2, 3], spec)


def t2_batch(T=505, P=3):
    """docs/segmentation.md#worked-example: a 2-segment document followed by the 1,300-token document
    (seg_sep [0, 2, 5])."""
    L = T - P - 2
    n = 5
    ids = torch.full((n, T), 1)
    mask = torch.zeros(n, T, dtype=torch.long)
    lengths = [L, 60, L, L, 300]
    for r, c in enumerate(lengths):
        ids[r, 0] = 0
        ids[r, 1 : c + 1] = torch.arange(c) % 300 + 5
        ids[r, c + 1] = 2
        mask[r, : c + 2] = 1
    mask[:, T - P :] = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]])
    fuse = torch.tensor([[1, 0, 0], [0, 0, 0], [3, 4, 2], [2, 4, 2], [2, 3, 2]])
    return SegmentBatch(ids, mask, torch.tensor([2, 3]), fuse, torch.tensor([7, 9]), P + 1)


def test_t2_positions_and_segment_types():
    b = t2_batch()
    pos = enc.roberta_position_ids(b.input_ids, 1)
    assert pos[2].tolist() == list(range(2, 504)) + [1, 1, 1]
    assert pos[4, :302].tolist() == list(range(2, 304)) and set(pos[4, 302:].tolist()) == {1}
    assert b.segment_types().tolist() == [0, 1, 0, 1, 2]
    assert enc.absolute_position_ids(b.input_ids[:1, :4]).tolist() == [[0, 1, 2, 3]]


def test_t2_cls_broadcast_after_every_layer(star_dir):
    """Batch row 3 gets the CLS of rows 2 and 4 at 502/503 after each layer; 504 gets row 2's (masked)."""
    model = build_model("SeDR", star_dir, max_seg_num=4).eval()
    b = t2_batch()
    with torch.no_grad():
        _, states = enc.encode(
            model.backbone,
            b.input_ids,
            b.attention_mask,
            segment_types=b.segment_types(),
            fuse_mat=b.fuse_mat,
            variant=enc.AFTER_LAYER,
            output_hidden_states=True,
        )
    assert len(states) == model.config.num_hidden_layers
    for H in states:
        assert torch.equal(H[3, 502], H[2, 0]) and torch.equal(H[3, 503], H[4, 0])
        assert torch.equal(H[3, 504], H[2, 0])
        assert torch.equal(H[0, 502], H[1, 0]) and torch.equal(H[1, 502], H[0, 0])


def test_t3_global_key_count_and_masks():
    b = t2_batch()
    add = enc.additive_mask(b.attention_mask, torch.float32)
    states = torch.randn(5, 505, 2)
    keys, mask = enc.global_keys(states, add, b.fuse_mat)
    assert keys.shape == (5, 2008, 2) and mask.shape == (5, 2008)  # 505 + 3 * 501
    # Row 3, slot 1 = row 4 (300 content tokens): its padding keys carry -10000;
    # slot 2 (invalid) -> up to -20000.
    slot1 = mask[3, 505 + 501 : 505 + 2 * 501]
    assert slot1[:301].eq(0).all() and slot1[301:].eq(-10000).all()
    slot2 = mask[3, 505 + 2 * 501 :]
    assert slot2[:501].eq(-10000).all()  # row 2 is full: only the placeholder penalty
    slot2_row4 = mask[4, 505 + 2 * 501 :]  # row 4's invalid slot points at row 2 (full content)
    assert slot2_row4.eq(-10000).all()
    slot1_row2 = mask[2, 505 + 501 : 505 + 2 * 501]  # row 2, slot 1 = row 4, valid
    assert slot1_row2[301:].eq(-10000).all()
    # An invalid slot pointing at a row with padding gets -20000 on that padding.
    fuse = torch.tensor([[0, 0, 0], [0, 0, 0], [4, 4, 4], [2, 4, 4], [2, 3, 4]])
    _, mask = enc.global_keys(states, add, fuse)
    assert mask[3, 505 + 2 * 501 + 301 :].eq(-20000).all()
    assert torch.equal(keys[3, 505 + 501 : 505 + 2 * 501], states[4, 1:502])


def stock_position_ids(ids: torch.Tensor) -> torch.Tensor:
    """HF's own RoBERTa position rule (a static method in 5.x, a module function in 4.x)."""
    from transformers.models.roberta import modeling_roberta as mr

    fn = (
        getattr(mr.RobertaEmbeddings, "create_position_ids_from_input_ids", None)
        or mr.create_position_ids_from_input_ids
    )
    return fn(ids, 1)


def reference_sedr_segments(model, batch: SegmentBatch) -> torch.Tensor:
    """The CLS broadcast by hand: a separate eager RobertaModel, explicit layer loop,
    in-place placeholder writes."""
    cfg = model.backbone.config.__class__.from_dict(model.backbone.config.to_dict())
    cfg._attn_implementation = "eager"
    ref = RobertaModel(cfg, add_pooling_layer=False).eval()
    state = {k: v for k, v in model.backbone.state_dict().items() if "segment_type" not in k}
    ref.load_state_dict(state)
    ids, m = batch.input_ids, batch.attention_mask
    seg = model.backbone.embeddings.segment_type_embeddings.weight[batch.segment_types()]
    pos = stock_position_ids(ids)
    h = ref.embeddings(position_ids=pos, inputs_embeds=ref.embeddings.word_embeddings(ids) + seg[:, None])
    ext = (1.0 - m[:, None, None, :].float()) * -10000.0
    n, T, _ = h.shape
    P = batch.fuse_mat.shape[1]
    for layer in ref.encoder.layer:
        out = layer(h, ext)
        h = (out[0] if isinstance(out, tuple) else out).clone()
        cls = h[:, 0].clone()
        for r in range(n):
            for j in range(P):
                h[r, T - P + j] = cls[batch.fuse_mat[r, j]]
    return model.norm(model.embeddingHead(h[:, 0]))


def test_sedr_matches_hand_written_reference(star_dir, doc_batch):
    model = build_model("SeDR", star_dir, max_seg_num=4).eval()
    with torch.no_grad():
        ours = model.encode_segments(doc_batch)
        ref = reference_sedr_segments(model, doc_batch)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    # The interaction matters: the same rows without it give different vectors.
    with torch.no_grad():
        plain = model.head(
            model._encode(doc_batch.input_ids, doc_batch.attention_mask, variant=enc.PLAIN)[:, 0]
        )
    assert (plain - ours)[doc_batch.seg_counts.repeat_interleave(doc_batch.seg_counts) > 1].abs().max() > 1e-3


def reference_global_segments(model, batch: SegmentBatch) -> torch.Tensor:
    """Global-Attention by hand: broadcast before each layer, then per-row key lists for the CLS,
    eager math everywhere."""
    bb = model.backbone
    ids, m = batch.input_ids, batch.attention_mask.float()
    fuse = batch.fuse_mat
    n, T = ids.shape
    P = fuse.shape[1]
    heads = bb.config.num_attention_heads
    H = bb.config.hidden_size
    dh = H // heads
    seg = bb.embeddings.segment_type_embeddings.weight[batch.segment_types()]
    pos = stock_position_ids(ids)
    h = bb.embeddings(position_ids=pos, inputs_embeds=bb.embeddings.word_embeddings(ids) + seg[:, None])
    addm = (1.0 - m) * -10000.0

    def split(x):
        return x.view(x.shape[0], -1, heads, dh).transpose(1, 2)

    for layer in bb.encoder.layer:
        h = h.clone()
        cls = h[:, 0].clone()
        for r in range(n):
            for j in range(P):
                h[r, T - P + j] = cls[fuse[r, j]]
        a = layer.attention.self
        q, k, v = split(a.query(h)), split(a.key(h)), split(a.value(h))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + addm[:, None, None, :], -1)
        ctx = (probs @ v).transpose(1, 2).reshape(n, T, H).clone()
        kg, vg = a.key_global(h), a.value_global(h)
        for r in range(n):
            keys, vals, mk = (
                [kg[r, t] for t in range(T)],
                [vg[r, t] for t in range(T)],
                [addm[r, t] for t in range(T)],
            )
            for j in range(P):
                s = int(fuse[r, j])
                for t in range(1, T - P):
                    keys.append(kg[s, t])
                    vals.append(vg[s, t])
                    mk.append(addm[s, t] + addm[r, T - P + j])
            K, V, mk = torch.stack(keys), torch.stack(vals), torch.stack(mk)
            qg = a.query_global(h[r, 0])
            out = []
            for hd in range(heads):
                sl = slice(hd * dh, (hd + 1) * dh)
                w = torch.softmax(K[:, sl] @ qg[sl] / math.sqrt(dh) + mk, 0)
                out.append(w @ V[:, sl])
            ctx[r, 0] = torch.cat(out)
        att = layer.attention.output(ctx, h)
        h = layer.output(layer.intermediate(att), att)
    return model.norm(model.embeddingHead(h[:, 0]))


def test_global_attention_matches_hand_written_reference(star_dir, doc_batch):
    model = build_model("SeDR_Global_Attention", star_dir, max_seg_num=4).eval()
    with torch.no_grad():
        for layer in model.backbone.encoder.layer:  # make global projections differ from the local ones
            for name in ("query_global", "key_global", "value_global"):
                getattr(layer.attention.self, name).weight.add_(
                    0.05 * torch.randn_like(getattr(layer.attention.self, name).weight)
                )
        ours = model.encode_segments(doc_batch)
        ref = reference_global_segments(model, doc_batch)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["SeDR", "SeDR_Global_Attention"])
def test_gradient_checkpointing_same_outputs_and_grads(star_dir, doc_batch, name):
    """Train mode (dropout on): non-reentrant checkpointing restores RNG, so results agree."""
    model = build_model(name, star_dir, max_seg_num=4).train()
    assert_checkpointing_agrees(model, doc_batch, seed=123)


def assert_checkpointing_agrees(model, batch, seed: int) -> None:
    """Same seed, checkpointing off then on: the documents' vectors and every gradient agree (atol 1e-6)."""
    results = []
    for ckpt in (False, True):
        model.gradient_checkpointing = ckpt
        model.zero_grad()
        torch.manual_seed(seed)
        out = model.encode_documents(batch)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append(
            (out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
        )
    (o1, g1), (o2, g2) = results
    assert torch.allclose(o1, o2, atol=1e-6)
    assert g1.keys() == g2.keys() and len(g1) > 10
    for k in g1:
        assert torch.allclose(g1[k], g2[k], atol=1e-6), k


def test_run_layer_accepts_tuple_and_tensor_returns():
    class TupleLayer(torch.nn.Module):  # 4.x style
        def forward(self, h, mask):
            return (h + 1, None)

    class TensorLayer(torch.nn.Module):  # 5.x style
        def forward(self, h, mask):
            return h + 1

    h = torch.zeros(1, 2, 3)
    assert torch.equal(enc.run_layer(TupleLayer(), h, None), enc.run_layer(TensorLayer(), h, None))


def test_eager_and_sdpa_agree(star_dir, doc_batch):
    sdpa = build_model("SeDR", star_dir, max_seg_num=4).eval()
    eager = build_model("SeDR", star_dir, max_seg_num=4, attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    with torch.no_grad():
        assert torch.allclose(sdpa.encode_segments(doc_batch), eager.encode_segments(doc_batch), atol=1e-5)


# --------------------------------------------------------------------------------------------
# Row groups: each layer runs on buckets of rows of similar width (docs/segmentation.md#row-groups)
# --------------------------------------------------------------------------------------------

GROUP_SHAPE = SegmentSpec(40, 4)  # L = 28, P = 3, T = 33
GROUP_LENGTHS = (9, 30, 20, 48, 100, 3, 37, 70)  # 1-4 segments, tails of mixed widths


def group_batches(cls_id=0, eos_id=2, pad_id=1, vocab=390):
    """The same rows twice: fixed padding (no groups) and row groups (no overhead, so several groups)."""
    rng = np.random.default_rng(5)
    docs = [rng.integers(5, vocab, size=n) for n in GROUP_LENGTHS]
    ids = {"cls_id": cls_id, "eos_id": eos_id, "pad_id": pad_id}
    fixed = collate_documents(docs, range(len(docs)), GROUP_SHAPE, **ids)
    grouped = collate_documents(docs, range(len(docs)), GROUP_SHAPE, row_groups=True, group_overhead=0, **ids)
    assert len(grouped.row_groups.sizes) >= 4
    return fixed, grouped


def kept_columns(batch: SegmentBatch) -> torch.Tensor:
    """``(n, T_grouped)`` bool: the columns each row's group runs on."""
    g = batch.row_groups
    n, T = batch.input_ids.shape
    keep = torch.zeros(n, T, dtype=torch.bool)
    for rows, w in zip(g.rows.split(list(g.sizes)), g.widths):
        keep[rows, :w] = True
        keep[rows, T - g.num_placeholders :] = True
    return keep


def encode_both(backbone, fixed, grouped, variant, **kw):
    """Every layer's states without and with groups;
    the grouped ones widened back to ``T`` (zeros between)."""
    seg_types = fixed.segment_types() if hasattr(backbone.embeddings, "segment_type_embeddings") else None
    fuse = fixed.fuse_mat if variant != enc.PLAIN else None
    _, ref = enc.encode(
        backbone,
        fixed.input_ids,
        fixed.attention_mask,
        segment_types=seg_types,
        fuse_mat=fuse,
        variant=variant,
        output_hidden_states=True,
        **kw,
    )
    _, ours = enc.encode(
        backbone,
        grouped.input_ids,
        grouped.attention_mask,
        segment_types=seg_types,
        fuse_mat=fuse,
        variant=variant,
        output_hidden_states=True,
        row_groups=grouped.row_groups,
        **kw,
    )
    Tg, P = grouped.input_ids.shape[1], grouped.row_groups.num_placeholders
    ref = [torch.cat([h[:, : Tg - P], h[:, -P:]], dim=1) for h in ref]  # fixed rows cut to the compact width
    return ref, ours


@pytest.mark.parametrize("variant", [enc.AFTER_LAYER, enc.PLAIN])
def test_row_groups_equal_full_width_roberta(star_dir, variant):
    """CLS states (and every kept column) after each layer equal the full-width pass;
    dropped columns are 0."""
    model = build_model("SeDR", star_dir, max_seg_num=4).eval()
    fixed, grouped = group_batches()
    with torch.no_grad():
        ref, ours = encode_both(model.backbone, fixed, grouped, variant)
    keep = kept_columns(grouped)
    assert not keep.all()  # some columns are dropped
    for r, o in zip(ref, ours):
        assert torch.allclose(o[:, 0], r[:, 0], atol=1e-5, rtol=0)
        assert torch.allclose(o[keep], r[keep], atol=1e-5, rtol=0)
        assert o[~keep].eq(0).all()
    if variant == enc.AFTER_LAYER:  # every placeholder holds its sibling's CLS, across groups too
        g = grouped.row_groups
        group_of = torch.repeat_interleave(torch.arange(len(g.sizes)), torch.tensor(g.sizes))[
            torch.argsort(g.rows)
        ]
        fuse = grouped.fuse_mat
        assert (group_of[fuse] != group_of[:, None]).any()
        for h in ours:
            assert torch.equal(h[:, -3:], h[:, 0][fuse])


def test_row_groups_equal_full_width_bert_absolute_positions():
    """BERT positions 0..T-1 are taken on the full row, so the placeholders keep positions T-P..T-1."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    enc.add_segment_type_embeddings(bert, 4, 0.02)
    fixed, grouped = group_batches(cls_id=101, eos_id=102, pad_id=0, vocab=100)
    with torch.no_grad():
        ref, ours = encode_both(
            bert, fixed, grouped, enc.AFTER_LAYER, position_rule=enc.ABSOLUTE_POSITIONS, padding_idx=0
        )
    for r, o in zip(ref, ours):
        assert torch.allclose(o[:, 0], r[:, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("ckpt", [False, True])
def test_row_groups_same_gradients(star_dir, ckpt):
    """Gradients of every parameter equal the full-width pass's, with and without gradient checkpointing."""
    model = build_model("SeDR", star_dir, max_seg_num=4).eval()  # eval: no dropout, so the passes compare
    fixed, grouped = group_batches()
    grads = []
    for batch, use_ckpt in ((fixed, False), (grouped, ckpt)):
        model.zero_grad()
        h = enc.encode(
            model.backbone,
            batch.input_ids,
            batch.attention_mask,
            segment_types=batch.segment_types(),
            fuse_mat=batch.fuse_mat,
            variant=enc.AFTER_LAYER,
            gradient_checkpointing=use_ckpt,
            row_groups=batch.row_groups,
        )
        out = model.head(h[:, 0])
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    ref, ours = grads
    assert ref.keys() == ours.keys() and len(ref) > 10
    for k in ref:
        assert torch.allclose(ours[k], ref[k], atol=1e-5, rtol=1e-4), k


def test_row_groups_checkpointing_in_train_mode(star_dir):
    """Dropout on: non-reentrant checkpointing of each group's layer call restores the RNG, results agree."""
    model = build_model("SeDR", star_dir, max_seg_num=4).train()
    _, grouped = group_batches()
    assert grouped.row_groups is not None
    assert_checkpointing_agrees(model, grouped, seed=7)


@pytest.mark.parametrize(
    "name",
    [
        "SeDR",
        "SeDR_without_LateCache",
        "SeDR_MaxP",
        "SeDR_Transformer_Head",
        "STAR_MaxP",
        "SeDR_Global_Attention",
    ],
)
def test_model_classes_with_row_groups(star_dir, name):
    """``encode_segments`` of a grouped batch equals fixed padding;
    the Global-Attention encoder ignores groups."""
    model = build_model(name, star_dir, max_seg_num=4).eval()
    fixed, grouped = group_batches()
    with torch.no_grad():
        ours, ref = model.encode_segments(grouped), model.encode_segments(fixed)
        assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
        if name == "SeDR_Global_Attention":
            plain = SegmentBatch(
                grouped.input_ids,
                grouped.attention_mask,
                grouped.seg_counts,
                grouped.fuse_mat,
                grouped.doc_offsets,
                grouped.max_seg_num,
            )
            assert torch.equal(ours, model.encode_segments(plain))


def test_row_groups_must_match_the_fuse_matrix(star_dir):
    model = build_model("SeDR", star_dir, max_seg_num=4).eval()
    _, grouped = group_batches()
    bad = dataclasses.replace(grouped.row_groups, num_placeholders=2)
    with pytest.raises(ValueError, match="placeholder"):
        enc.encode(
            model.backbone,
            grouped.input_ids,
            grouped.attention_mask,
            fuse_mat=grouped.fuse_mat,
            variant=enc.AFTER_LAYER,
            row_groups=bad,
        )
