"""Model classes and registry (docs/models.md#model-classes): gradients, Late-Cache equivalence,
per-class document encoders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from SeDR.data.batches import TrainBatch
from SeDR.data.collation import collate_queries
from SeDR.data.segmentation import SegmentSpec, collate_documents
from SeDR.modeling import (
    MODEL_REGISTRY,
    UnknownModelClassError,
    build_model,
    get_model_class,
    register,
)
from SeDR.modeling.models import DenseRetriever, init_fresh

README_NAMES = {
    "SeDR_without_LateCache",
    "SeDR",
    "SeDR_MaxP",
    "SeDR_Transformer_Head",
    "SeDR_Global_Attention",
    "STAR_MaxP",
    "STAR_Multi",
}
SEG_TABLE = "roberta.embeddings.segment_type_embeddings.weight"
# Parameters a class carries (for checkpoint compatibility with the original) but whose forward never reads.
UNREAD = {
    "STAR_MaxP": {SEG_TABLE},
    "STAR_Multi": {SEG_TABLE},
    "SeDR_MaxP": {SEG_TABLE},
    "SeDR_Transformer_Head": {SEG_TABLE},
}


def make_batch(spec: SegmentSpec, seed: int = 0, B: int = 3, h: int = 1, pad_id: int = 1) -> TrainBatch:
    rng = np.random.default_rng(seed)
    lengths = [9, 30, 48, 20, 40, 15][:B]
    pos_docs = [rng.integers(5, 390, size=n) for n in lengths]
    neg_docs = [rng.integers(5, 390, size=int(n)) for n in rng.integers(5, 50, size=B * h)]
    queries = [
        np.concatenate([[0], rng.integers(5, 390, size=int(n)), [2]]) for n in rng.integers(3, 7, size=B)
    ]
    rel = torch.ones(B, B) - torch.eye(B)
    if B > 2:
        rel[2, 0] = 0  # document 0 is also relevant to query 2
    hard = torch.ones(B, B * h)
    hard[0, -1] = 0
    return TrainBatch(
        collate_queries(queries, range(B), 8, pad_id=pad_id),
        collate_documents(pos_docs, range(B), spec),
        collate_documents(neg_docs, range(B, B + B * h), spec),
        rel,
        hard,
    )


def spec_for(model, Lraw=24) -> SegmentSpec:
    return SegmentSpec(Lraw, model.max_seg_num, extra_reserve=model.extra_content_reserve)


def build(name, star_dir, **kw):
    return build_model(name, star_dir, max_seg_num=1 if name == "STAR_Multi" else 4, **kw)


def test_registry_names_and_errors():
    assert set(MODEL_REGISTRY) == README_NAMES
    with pytest.raises(UnknownModelClassError) as err:
        get_model_class("SeDR_Longformer_typo")
    assert ", ".join(sorted(README_NAMES)) in str(err.value)
    with pytest.raises(ValueError, match="registered twice"):
        register("SeDR")(type("Dup", (DenseRetriever,), {}))


@pytest.mark.parametrize("name", sorted(README_NAMES))
def test_every_used_parameter_gets_a_gradient(star_dir, name):
    model = build(name, star_dir).train()
    out = model(make_batch(spec_for(model)), cache=model.new_cache())
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    no_grad = {k for k, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    expected = set(UNREAD.get(name, set()))
    if name == "SeDR_Global_Attention":
        # The last layer's local attention only feeds non-CLS outputs: its CLS context is the global one.
        last = model.config.num_hidden_layers - 1
        expected |= {
            f"roberta.encoder.layer.{last}.attention.self.{w}.{p}"
            for w in ("query", "key", "value")
            for p in ("weight", "bias")
        }
    assert no_grad == expected


def test_empty_cache_equals_without_late_cache(star_dir):
    """Loss and every parameter gradient; dropout on with the same seed."""
    a = build("SeDR", star_dir).train()
    b = build("SeDR_without_LateCache", star_dir).train()
    b.load_state_dict(a.state_dict())
    batch = make_batch(spec_for(a))
    torch.manual_seed(7)
    cache = a.new_cache()
    out_a = a(batch, cache=cache)
    torch.manual_seed(7)
    out_b = b(batch)
    out_a.loss.backward()
    out_b.loss.backward()
    assert out_a.loss.item() == pytest.approx(out_b.loss.item(), abs=1e-7)
    gb = dict(b.named_parameters())
    for k, p in a.named_parameters():
        assert (p.grad is None) == (gb[k].grad is None), k
        if p.grad is not None:
            assert torch.allclose(p.grad, gb[k].grad, atol=1e-7), k
    # The cache now holds the batch and changes the next loss (more rows, unmasked cached columns).
    assert len(cache) == 3 and b.new_cache() is None
    torch.manual_seed(7)
    again = a(batch, cache=cache)
    assert again.num_rows == 6 and abs(again.loss.item() - out_a.loss.item()) > 1e-4


def test_cache_persists_and_truncates(star_dir):
    model = build("SeDR", star_dir, cache_size=4).eval()
    cache = model.new_cache()
    spec = spec_for(model)
    with torch.no_grad():
        for seed in range(3):
            model(make_batch(spec, seed=seed), cache=cache)
    assert len(cache) == 4 and cache.positives.shape == (4, 4, 32)
    with torch.no_grad():
        q_last = model.encode_queries(make_batch(spec, seed=2).queries)
    assert torch.allclose(cache.queries[-3:], q_last, atol=1e-6)


def test_cache_size_rules(star_dir):
    for name in ("SeDR", "SeDR_MaxP", "SeDR_Transformer_Head", "SeDR_Global_Attention"):
        with pytest.raises(ValueError, match="SeDR_without_LateCache"):
            build(name, star_dir, cache_size=0)
    model = build("STAR_MaxP", star_dir, cache_size=0)  # no cache: the value is unused
    assert model.new_cache() is None
    with pytest.raises(ValueError, match="does not use a Late-Cache"):
        model(make_batch(spec_for(model)), cache=build("SeDR", star_dir).new_cache())


def test_sedr_maxp_inference_is_its_training_encoder(star_dir):
    """docs/deviations.md#dev-sedr-maxp-inference: SeDR_MaxP encodes without fuse matrix / segment types,
    like STAR_MaxP."""
    maxp = build("SeDR_MaxP", star_dir).eval()
    star = build("STAR_MaxP", star_dir).eval()
    sedr = build("SeDR", star_dir).eval()
    star.load_state_dict(maxp.state_dict())
    sedr.load_state_dict(maxp.state_dict())
    batch = make_batch(spec_for(maxp)).positives
    with torch.no_grad():
        assert torch.equal(maxp.encode_segments(batch), star.encode_segments(batch))
        assert not torch.allclose(maxp.encode_segments(batch), sedr.encode_segments(batch), atol=1e-4)
        R = maxp.encode_documents(batch)
    assert R.shape == (3, 4, 32)
    assert R[0, 1:].abs().sum() == 0 and R[0, 0].abs().sum() > 0  # 1-segment document: zero slots


def test_transformer_head_slots(star_dir):
    model = build("SeDR_Transformer_Head", star_dir).eval()
    batch = make_batch(spec_for(model)).positives
    assert batch.seg_counts.tolist() == [1, 3, 4]
    with torch.no_grad():
        R = model.encode_documents(batch)
        rows = model.encode_segments(batch)
    assert R[0, 1:].abs().sum() > 0  # empty slots are head(layer(0...)), not zero
    assert rows.shape == (8, 32)
    assert torch.equal(rows[0], R[0, 0]) and torch.equal(rows[1:4], R[1, :3]) and torch.equal(rows[4:], R[2])


def test_transformer_head_init_is_the_originals(star_dir):
    """Weights redrawn N(0, 0.02); biases PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    not zero; LayerNorm 1/0."""
    torch.manual_seed(0)
    head = build("SeDR_Transformer_Head", star_dir).trans_head
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 6  # query, key, value, attention output, intermediate, output
    spread = []
    for lin in linears:
        bound = 1.0 / math.sqrt(lin.in_features)  # 1/sqrt(32) = 0.177, 1/sqrt(37) = 0.164
        b = lin.bias.detach()
        assert b.abs().max() <= bound and b.abs().max() > 0.5 * bound
        spread.append(b.abs() / bound)
        # kaiming-uniform (PyTorch's default weight) has std bound/sqrt(3) = 0.09-0.10 here.
        assert 0.017 < lin.weight.detach().std().item() < 0.023
    # |U(-1, 1)| has mean 1/2 (N(0, 0.02) biases would give ~0.09); 197 biases: standard error 0.021.
    assert 0.42 < torch.cat(spread).mean().item() < 0.58
    norms = [m for m in head.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 and all(bool((n.weight == 1).all() and (n.bias == 0).all()) for n in norms)


@pytest.mark.parametrize("zero_bias", [True, False])
def test_fresh_modules_draw_their_weights_in_module_order(zero_bias):
    """HF's init (biases zeroed) for the head, the original's (biases kept) for the Transformer head:
    Linear/Embedding weights N(0, 0.02²) drawn in ``modules()`` order, LayerNorm 1/0."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Embedding(5, 3))
    with torch.no_grad():
        module[1].weight.fill_(7.0), module[1].bias.fill_(7.0)
    bias = module[0].bias.detach().clone()
    torch.manual_seed(1)
    init_fresh(module, 0.02, zero_bias=zero_bias)
    torch.manual_seed(1)
    linear, embedding = torch.empty(3, 4).normal_(0, 0.02), torch.empty(5, 3).normal_(0, 0.02)
    assert torch.equal(module[0].weight, linear) and torch.equal(module[2].weight, embedding)
    assert torch.equal(module[0].bias, torch.zeros(3) if zero_bias else bias)
    assert torch.equal(module[1].weight, torch.ones(3)) and torch.equal(module[1].bias, torch.zeros(3))


def test_star_multi_views(star_dir, tokenizer):
    V = len(tokenizer)
    model = build("STAR_Multi", star_dir).eval()
    assert model.K == 4 and model.extra_content_reserve == 3
    assert model.config.vocab_size == V + 4  # grown at construction, before any optimizer
    assert model.view_token_ids.tolist() == [V, V + 1, V + 2, V + 3]
    assert model.rows_per_document(torch.tensor([1, 1])).tolist() == [4, 4]
    star = torch.load(star_dir / "pytorch_model.bin", weights_only=True)
    W = model.backbone.embeddings.word_embeddings.weight
    assert torch.equal(W[:V], star["roberta.embeddings.word_embeddings.weight"])
    # Lraw 512: content budget 507, the longest row reaches position id 513 (the last row of 514).
    spec = spec_for(model, Lraw=512)
    assert spec.content_len == 507
    doc = collate_documents([np.arange(700) % 300 + 5, np.arange(40) + 5], [0, 1], spec)
    with torch.no_grad():
        out = model.encode_segments(doc)
    assert out.shape == (8, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="max_seg_num=1"):
        model.encode_segments(collate_documents([np.arange(40) + 5], [0], SegmentSpec(24, 4)))


def test_views_are_first_k_positions(star_dir):
    """The K view tokens replace CLS: outputs equal a hand-built row through the plain encoder."""
    model = build("STAR_Multi", star_dir).eval()
    doc = collate_documents([np.arange(10) + 5], [0], SegmentSpec(24, 1, extra_reserve=3))
    ids = torch.cat([model.view_token_ids[None], doc.input_ids[:, 1:]], 1)
    mask = torch.cat([torch.ones(1, 4, dtype=torch.long), doc.attention_mask[:, 1:]], 1)
    with torch.no_grad():
        want = model.head(model._encode(ids, mask)[0, :4])
        got = model.encode_documents(doc)[0]
    assert torch.equal(got, want)


def test_bf16_autocast_keeps_loss_fp32(star_dir):
    model = build("SeDR_Global_Attention", star_dir).train()
    batch = make_batch(spec_for(model))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch, cache=model.new_cache())
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()


def test_special_ids_and_queries(star_dir):
    model = build("SeDR", star_dir)
    assert model.special_ids == {"cls_id": 0, "eos_id": 2, "pad_id": 1}
    assert model.embedding_dim == 32
