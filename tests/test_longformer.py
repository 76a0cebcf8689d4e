"""SeDR-Longformer (docs/longformer.md): conversion, global CLS positions, equivalence with
STAR on short inputs, the Global-Attention initialisation, and the scripts end to end (in-process).

The HF Longformer is slow on CPU (banded attention over a 512-token window), so the heavy tests use a
conversion with a 64-token window; the README's default conversion (window 512) is used where the
window matters (equivalence with STAR, the verbatim conversion command).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cwd, load_script
from safetensors.torch import load_file, save_file

from SeDR import testing
from SeDR.core.errors import SeDRInputError
from SeDR.data import preprocess_folder
from SeDR.data.batches import TrainBatch
from SeDR.data.collation import collate_queries
from SeDR.data.segmentation import SegmentSpec, collate_documents
from SeDR.modeling import MODEL_REGISTRY, ModelConfigError, build_model, load_model, save_pretrained
from SeDR.modeling.longformer import (
    ALLENAI_KEYS,
    CLS_STRIDE,
    SeDRLongformer,
    build_longformer,
    cls_positions,
    load_longformer,
    place_global_cls,
    register_longformer,
)
from SeDR.training.loop import LongformerTrainer

star2lf = load_script("SeDR_Longformer/Star2Star_Longformer.py")

ROOT = Path(__file__).resolve().parents[1]
POS = "roberta.embeddings.position_embeddings.weight"
WEIGHTS = "model.safetensors"
HARDNEG_CMD = (
    "--model_class STAR_MaxP --max_query_length 32 --max_seg_length 512 --max_seg_num 1 "
    "--model_path ./data/star --faiss_gpus 0 --gen_hardneg"
).split()
README_TRAIN = (
    "--max_query_length 32 --max_doc_length 2048 --max_seg_num 4 --max_bsize 7 --preprocess_dir "
    "./data/preprocess --hardneg_path ./data/hard_negative.json --init_path ./data/starlongformer "
    "--output_dir ./data/models --logging_dir ./data/log --learning 5e-5 --hardneg_topk 100 --cache_size 50 "
    "--gradient_accumulation_steps 4 --fp16 --use_gradient_checkpointing"
).split()
# Tests' window: 32 tokens each side (the README's is 256); the CLS stride stays 512.
SMALL_WINDOW = ["--attention_window", "64", "--max_doc_length", "1100"]


def star_state(folder) -> dict[str, torch.Tensor]:
    return torch.load(Path(folder) / "pytorch_model.bin", weights_only=True)


@pytest.fixture(scope="module")
def star(tmp_path_factory, tokenizer, tokenizer_dir):
    """Tiny STAR checkpoint (hidden 32, 2 layers, 2 heads: fewer banded score tensors than 4 heads)."""
    return testing.make_star_checkpoint(
        tmp_path_factory.mktemp("lf-star") / "star",
        vocab_size=len(tokenizer),
        tokenizer_dir=tokenizer_dir,
        num_attention_heads=2,
        seed=1,
    )


@pytest.fixture(scope="module")
def converted(star, tmp_path_factory):
    """README conversion (window 512, 2050 position rows)."""
    return star2lf.main(
        ["--star_path", str(star), "--output_path", str(tmp_path_factory.mktemp("lf") / "starlf")]
    )


@pytest.fixture(scope="module")
def converted_small(star, tmp_path_factory):
    return star2lf.main(
        [
            "--star_path",
            str(star),
            "--output_path",
            str(tmp_path_factory.mktemp("lf") / "small"),
            *SMALL_WINDOW,
        ]
    )


# ------------------------------------------------------------------------------------------- conversion


def test_position_table_rows_0_1_copied_and_tiled(star, converted):
    old = star_state(star)[POS]  # (514, 32)
    new = load_file(str(converted / "model.safetensors"))[POS]
    assert new.shape == (2050, old.shape[1])
    assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])  # not left empty, unlike the original
    for block in range(4):  # rows 2..513 | 514..1025 | 1026..1537 | 1538..2049
        assert torch.equal(new[2 + 512 * block : 514 + 512 * block], old[2:514])
    assert torch.equal(new[514], old[2]) and torch.equal(new[2049], old[513])


def test_global_projections_are_copies_and_config(star, converted):
    old, new = star_state(star), load_file(str(converted / "model.safetensors"))
    for n in range(2):
        base = f"roberta.encoder.layer.{n}.attention.self."
        for name in ("query", "key", "value"):
            for part in ("weight", "bias"):
                assert torch.equal(new[f"{base}{name}_global.{part}"], old[f"{base}{name}.{part}"])
    shared = [k for k in old if k != POS and "position_ids" not in k]
    assert all(torch.equal(new[k], old[k]) for k in shared)  # encoder, embeddingHead, norm unchanged
    assert {k.split(".", 1)[0] for k in new} == {
        "roberta",
        "embeddingHead",
        "norm",
    }  # the original's parameter names
    cfg = json.loads((converted / "config.json").read_text())
    assert cfg["model_type"] == "longformer" and cfg["max_position_embeddings"] == 2050
    assert cfg["attention_window"] == [512, 512]  # HF counts both sides: allenai's 256 one-sided
    assert cfg["sedr_model_class"] == "SeDR_Longformer" and cfg["max_seg_num"] == 4


def test_readme_conversion_command_defaults(star, tmp_path):
    """``python SeDR_Longformer/Star2Star_Longformer.py`` with no flags:
    ./data/star -> ./data/starlongformer."""
    shutil.copytree(star, tmp_path / "data" / "star")
    with cwd(tmp_path):
        out = star2lf.main([])
    assert out == Path("./data/starlongformer")
    assert (tmp_path / "data" / "starlongformer" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------- semantics


def _stock_star(star):
    """STAR as a stock ``RobertaModel`` + head, independent of our encoder code."""
    from transformers import RobertaConfig, RobertaModel

    cfg = RobertaConfig.from_dict(json.loads((star / "config.json").read_text()))
    enc = RobertaModel(cfg, add_pooling_layer=False).eval()
    sd = star_state(star)
    enc.load_state_dict(
        {k[len("roberta.") :]: v for k, v in sd.items() if k.startswith("roberta.")}, strict=False
    )
    head = torch.nn.Linear(cfg.hidden_size, cfg.hidden_size)
    norm = torch.nn.LayerNorm(cfg.hidden_size, eps=1e-5)
    head.load_state_dict({"weight": sd["embeddingHead.weight"], "bias": sd["embeddingHead.bias"]})
    norm.load_state_dict({"weight": sd["norm.weight"], "bias": sd["norm.bias"]})
    return enc, lambda h: norm(head(h))


@pytest.mark.parametrize("lengths, one_layer", [([200, 257, 90], False), ([512, 300], True)])
def test_cls_output_equals_star_on_short_inputs(star, converted, tmp_path, lengths, one_layer):
    """Only the CLS is global: with every token within ±256 of every other (<= 257 tokens) the converted
    model is STAR exactly; up to 512 tokens the CLS of a one-layer model still is (it attends to all tokens
    with copies of STAR's projections). Tolerance 1e-5 (fp32; observed ~1e-6)."""
    if one_layer:
        star = testing.make_star_checkpoint(
            tmp_path / "star1", vocab_size=400, num_hidden_layers=1, num_attention_heads=2, seed=2
        )
        converted = star2lf.main(["--star_path", str(star), "--output_path", str(tmp_path / "lf1")])
    enc, head = _stock_star(star)
    lf = load_longformer(converted).eval()
    gen = torch.Generator().manual_seed(0)
    queries = [
        np.concatenate([[0], torch.randint(5, 400, (n - 2,), generator=gen).numpy(), [2]]) for n in lengths
    ]
    qb = collate_queries(queries, range(len(lengths)), max(lengths), pad_to_max_length=False)
    with torch.no_grad():
        ref = enc(input_ids=qb.input_ids, attention_mask=qb.attention_mask).last_hidden_state[:, 0]
        got_vec = lf.encode_queries(qb)
    torch.testing.assert_close(got_vec, head(ref), rtol=0, atol=1e-5)


def t11_rows(content_lengths):
    rng = np.random.default_rng(0)
    docs = [rng.integers(5, 400, size=n) for n in content_lengths]
    return docs, collate_documents(docs, range(len(docs)), SegmentSpec(2048, 1))


def test_t11_global_positions_and_masks():
    docs, batch = t11_rows([1100, 511])
    assert batch.input_ids.shape == (2, 2048) and batch.fuse_mat is None  # [CLS] + 2046 + [EOS], M = 1
    mask_before = batch.attention_mask.clone()
    ids, glob, valid = place_global_cls(batch.input_ids, batch.attention_mask, cls_id=0, max_seg_num=4)
    assert cls_positions(4) == [0, 512, 1024, 1536] and CLS_STRIDE == 512
    assert (ids[:, [0, 512, 1024, 1536]] == 0).all()  # CLS written everywhere, even on PAD (1536)
    # Content length 1100: tokens #511 and #1023 are overwritten; 1536 is outside -> mask 0, invalid.
    assert batch.input_ids[0, 512] == docs[0][511] and batch.input_ids[0, 1024] == docs[0][1023]
    assert glob[0].nonzero().flatten().tolist() == [0, 512, 1024]
    assert valid[0].tolist() == [True, True, True, False]
    # Content length 511: the EOS sits at 512 and becomes a second global CLS (2 segments).
    assert batch.input_ids[1, 512] == 2 and batch.input_ids[1, 513] == 1
    assert glob[1].nonzero().flatten().tolist() == [0, 512]
    assert valid[1].tolist() == [True, True, False, False]
    changed = (ids != batch.input_ids).nonzero()[:, 1].unique().tolist()
    assert set(changed) <= {512, 1024, 1536}  # nothing else is touched; no shift
    assert torch.equal(batch.attention_mask, mask_before)  # the 0/1 mask itself is not altered


def test_t11_slot_values_training_vs_inference(converted_small):
    """Invalid slots: norm(embeddingHead.bias) in training (as the original),
    exact zeros at inference; valid slots agree."""
    lf = load_longformer(converted_small).eval()  # eval: no dropout, so the two paths are comparable
    batch = collate_documents(
        [np.arange(5, 5 + 1098) % 390 + 5, np.arange(511) % 390 + 5], [0, 1], SegmentSpec(1100, 1)
    )
    with torch.no_grad():
        train = lf.encode_documents(batch)  # (2, 4, d)
        inf = lf.encode_segments(batch).view(2, 4, -1)
        c = lf.norm(lf.embeddingHead.bias)
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(train[~valid], c.expand(int((~valid).sum()), -1), rtol=0, atol=1e-6)
    assert torch.all(inf[~valid] == 0)
    torch.testing.assert_close(train[valid], inf[valid], rtol=0, atol=1e-6)
    assert lf.rows_per_document(torch.tensor([1, 1])).tolist() == [4, 4]


def test_global_and_local_attention_ranges(star, tmp_path):
    """One layer, 32-token window: the global CLS at 1024 sees position 3, a local token at 700 does not."""
    one = testing.make_star_checkpoint(
        tmp_path / "star1", vocab_size=400, num_hidden_layers=1, num_attention_heads=2, seed=3
    )
    lf = load_longformer(
        star2lf.main(["--star_path", str(one), "--output_path", str(tmp_path / "lf1"), *SMALL_WINDOW])
    ).eval()
    doc = np.arange(1098) % 390 + 5
    other = doc.copy()
    other[2] = 7 if doc[2] != 7 else 8  # row position 3
    batch = collate_documents([doc, other], [0, 1], SegmentSpec(1100, 1))
    ids, glob, _ = place_global_cls(batch.input_ids, batch.attention_mask, cls_id=0, max_seg_num=4)
    with torch.no_grad():
        H = lf.run_encoder(ids, batch.attention_mask, glob)  # (2, 1100, H)
    assert (H[0, 1024] - H[1, 1024]).abs().max() > 1e-6  # global: attends to every token of the document
    assert torch.equal(H[0, 700], H[1, 700])  # local: window 668..732 plus the global tokens only
    assert (H[0, 30] - H[1, 30]).abs().max() > 1e-6  # local, inside position 3's window


def test_forward_is_late_cache_ce_over_max_of_four_slots(converted_small):
    lf = load_longformer(converted_small).eval()  # no dropout: the brute force below sees the same vectors
    rng = np.random.default_rng(1)
    spec = SegmentSpec(1100, 1)
    pos = collate_documents([rng.integers(5, 400, size=n) for n in (600, 40)], [0, 1], spec)
    neg = collate_documents([rng.integers(5, 400, size=n) for n in (30, 530)], [2, 3], spec)
    q = collate_queries([np.array([0, 9, 10, 2]), np.array([0, 11, 2])], [0, 1], 8)
    rel = torch.ones(2, 2) - torch.eye(2)
    rel[1, 0] = 0  # positive 0 is also relevant to query 1
    batch = TrainBatch(q, pos, neg, rel, torch.ones(2, 2))
    cache = lf.new_cache()
    with torch.no_grad():
        out = lf(batch, cache=cache)
        qv, P, N = lf.encode_queries(q), lf.encode_documents(pos), lf.encode_documents(neg)
    scores = np.array([[max(float(qv[i] @ D[k]) for k in range(4)) for D in [*P, *N]] for i in range(2)])
    scores[1, 0] = -10000.0  # masked false negative
    expect = np.mean([np.log(np.exp(scores[i]).sum()) - scores[i, i] for i in range(2)])
    assert out.loss.item() == pytest.approx(expect, rel=1e-5)
    assert len(cache) == 2 and cache.positives.shape == (2, 4, lf.embedding_dim)


# ------------------------------------------------------------------------------------------- checkpoints


def test_global_attention_init_picks_up_converted_projections(converted, tmp_path):
    """SeDR_Global_Attention from ./data/starlongformer: its *_global weights are the conversion's (not
    re-copied from the local ones) and its position table is the first 514 rows
    (docs/longformer.md#global-attention-init)."""
    folder = tmp_path / "starlf"
    shutil.copytree(converted, folder)
    sd = load_file(str(folder / "model.safetensors"))
    key = "roberta.encoder.layer.1.attention.self.key_global.weight"
    sd[key] = torch.randn_like(sd[key])  # make the global weights distinguishable from the local copies
    save_file(sd, str(folder / "model.safetensors"))
    model = build_model("SeDR_Global_Attention", folder, max_seg_num=4)
    got = model.state_dict()
    assert torch.equal(got[key], sd[key])
    assert torch.equal(got[POS], sd[POS][:514])
    for k, v in sd.items():
        if k != POS:
            assert torch.equal(got[k], v), k
    assert model.backbone.config.max_position_embeddings == 514


def test_checkpoint_round_trip_and_load_model(converted_small, tmp_path):
    lf = build_longformer(converted_small, max_seg_num=3, cache_size=7)
    save_pretrained(lf, tmp_path / "ck")
    back = load_longformer(tmp_path / "ck")
    assert back.max_seg_num == 3 and back.config.cache_size == 7 and back.max_doc_length == 1100
    q = collate_queries([np.array([0, 5, 6, 7, 2])], [0], 8)
    with torch.no_grad():
        ref = lf.eval().encode_queries(q)
        torch.testing.assert_close(back.eval().encode_queries(q), ref, rtol=0, atol=0)
    try:  # opt-in registration: SeDR.modeling.load_model then reads our checkpoints by their recorded class
        register_longformer()
        assert register_longformer() is SeDRLongformer  # idempotent
        via = load_model(tmp_path / "ck")
        assert isinstance(via, SeDRLongformer) and via.max_doc_length == 1100
        with torch.no_grad():
            torch.testing.assert_close(via.eval().encode_queries(q), ref, rtol=0, atol=0)
    finally:
        MODEL_REGISTRY.pop("SeDR_Longformer", None)


# ---------------------------------------------------------------------------------- the original's folders


def original_folder(star, converted, folder, *, trained=False) -> Path:
    """A folder as the original's transformers 3.0.2 wrote it: allenai config keys with the one-sided
    window 256, ``pytorch_model.bin`` with ``roberta.*`` (pooler included), 2050 position rows,
    ``embeddingHead.*``, ``norm.*``.

    ``trained``: a SeDR_Longformer checkpoint of its training script (RobertaConfig, so model_type roberta,
    and its finetuning_task / gradient_checkpointing fields); else the conversion (HF 3.0.2 LongformerConfig).
    """
    folder.mkdir()
    sd = load_file(str(converted / WEIGHTS))
    H = sd["embeddingHead.weight"].shape[1]
    gen = torch.Generator().manual_seed(5)
    sd["roberta.pooler.dense.weight"] = torch.randn(H, H, generator=gen)
    sd["roberta.pooler.dense.bias"] = torch.randn(H, generator=gen)
    sd[POS] = sd[POS].clone()
    sd[POS][0] = 1e30  # left uninitialised by the original's conversion; position 0 is never looked up
    torch.save(sd, folder / "pytorch_model.bin")
    cfg = json.loads((star / "config.json").read_text())
    layers = cfg["num_hidden_layers"]
    cfg.update(
        max_position_embeddings=2050,
        attention_window=[256] * layers,
        attention_dilation=[1] * layers,
        attention_mode="sliding_chunks",
        autoregressive=False,
        architectures=["SeDR_Longformer"],
        sep_token_id=2,
        model_type="longformer",
    )
    if trained:
        cfg.update(model_type="roberta", finetuning_task="msmarco", gradient_checkpointing=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _reference(star, sd, window):
    """Stock ``LongformerModel`` with the window given explicitly (HF counts both sides)."""
    from transformers import LongformerConfig, LongformerModel

    cfg = json.loads((star / "config.json").read_text())
    cfg.update(model_type="longformer", max_position_embeddings=2050, attention_window=window)
    ref = LongformerModel(LongformerConfig.from_dict(cfg), add_pooling_layer=False).eval()
    ref.load_state_dict(
        {k[len("roberta.") :]: v for k, v in sd.items() if k.startswith("roberta.") and ".pooler." not in k},
        strict=True,
    )
    return ref


def test_original_folder_attends_to_its_trained_span(star, converted, tmp_path, caplog):
    """allenai's 256 (one-sided) is read as HF 512: outputs equal a stock Longformer with window 512, and the
    silent misreading (HF 256 = 128 per side) would change them on a 400-token row. One INFO line says so."""
    folder = original_folder(star, converted, tmp_path / "starlongformer")
    with caplog.at_level(logging.INFO, logger="SeDR.modeling.longformer"):
        lf = load_longformer(folder).eval()
    (note,) = [
        r for r in caplog.records if r.name == "SeDR.modeling.longformer" and "allenai" in r.getMessage()
    ]
    assert note.levelno == logging.INFO
    for part in (str(folder / "config.json"), "256 on each side", "attention_window 512"):
        assert part in note.getMessage()
    assert lf.config.attention_window == [512, 512]
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 390, (2, 400), generator=gen)
    ids[:, 0], ids[0, -1], ids[1, 299], ids[1, 300:] = 0, 2, 2, 1
    mask = (ids != 1).long()
    glob = torch.zeros_like(mask)
    glob[:, 0] = 1
    with torch.no_grad():
        ours = lf.run_encoder(ids, mask, glob)[mask.bool()]
        right = _reference(star, sd, 512)(
            ids, attention_mask=mask, global_attention_mask=glob
        ).last_hidden_state
        wrong = _reference(star, sd, 256)(
            ids, attention_mask=mask, global_attention_mask=glob
        ).last_hidden_state
    torch.testing.assert_close(ours, right[mask.bool()], rtol=0, atol=1e-6)
    assert (ours - wrong[mask.bool()]).abs().max() > 1e-3


def test_original_trained_checkpoint_loads_for_inference(star, converted, tmp_path, caplog):
    """model_type roberta + allenai keys (the original's training config): same vectors as our conversion, the
    pooler dropped, HF's own checkpointing not switched on by the old config flag, nothing warned."""
    folder = original_folder(star, converted, tmp_path / "epoch-4-2048-4-7-SeDR_Longformer", trained=True)
    with caplog.at_level(logging.WARNING):
        lf = load_longformer(folder, max_seg_num=4).eval()
    assert caplog.records == []
    assert not any(getattr(m, "gradient_checkpointing", False) for m in lf.modules())
    ours = load_longformer(converted).eval()
    batch = collate_documents([np.arange(600) % 380 + 5, np.arange(40) + 5], [0, 1], SegmentSpec(2048, 1))
    q = collate_queries([np.array([0, 9, 10, 2])], [0], 8)
    with torch.no_grad():
        assert torch.equal(lf.encode_segments(batch), ours.encode_segments(batch))
        assert torch.equal(lf.encode_queries(q), ours.encode_queries(q))


@pytest.mark.parametrize(
    "key, value",
    [
        ("attention_window", [256, 128]),
        ("attention_window", 256),
        ("attention_dilation", [2, 2]),
        ("autoregressive", True),
        ("attention_mode", "tvm"),
        ("attention_mode", None),
    ],
)
def test_ambiguous_original_configs_are_refused(star, converted, tmp_path, key, value):
    folder = original_folder(star, converted, tmp_path / "orig")
    cfg = json.loads((folder / "config.json").read_text())
    if value is None:
        del cfg[key]
    else:
        cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError) as err:
        load_longformer(folder)
    for part in (str(folder / "config.json"), key, "Star2Star_Longformer.py"):
        assert part in str(err.value)


@pytest.mark.parametrize("case", ["ours_without_window", "roberta_with_window"])
def test_configs_without_a_known_side_count_are_refused(converted, tmp_path, case):
    """Our config lacking attention_window (HF would default to 512), or a window without allenai's keys."""
    folder = tmp_path / "ck"
    shutil.copytree(converted, folder)
    cfg = json.loads((folder / "config.json").read_text())
    if case == "ours_without_window":
        del cfg["attention_window"]
        key = "attention_window"
    else:
        cfg["model_type"] = "roberta"
        key = "model_type"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError) as err:
        build_longformer(folder)
    assert str(folder / "config.json") in str(err.value) and key in str(err.value)
    assert "Star2Star_Longformer.py" in str(err.value)


def test_non_finite_padding_position_row_is_refused(star, converted, tmp_path):
    folder = original_folder(star, converted, tmp_path / "orig")
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    sd[POS][1] = float("nan")  # row 1 = padding positions, read by every padded row
    torch.save(sd, folder / "pytorch_model.bin")
    with pytest.raises(SeDRInputError, match=r"position_embeddings.weight rows \[1\]"):
        load_longformer(folder)


@pytest.mark.parametrize("trained", [False, True])
def test_global_attention_from_an_original_starlongformer(star, converted, tmp_path, trained):
    """SeDR_Global_Attention from the original's ./data/starlongformer (or one of its trained Longformer
    checkpoints, model_type roberta): its own global projections, the first 514 position rows, pooler dropped,
    and none of the Longformer fields left in the config it will save."""
    folder = original_folder(star, converted, tmp_path / "starlongformer", trained=trained)
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    key = "roberta.encoder.layer.1.attention.self.value_global.weight"
    sd[key] = torch.randn_like(sd[key])
    torch.save(sd, folder / "pytorch_model.bin")
    model = build_model("SeDR_Global_Attention", folder, max_seg_num=4)
    got = model.state_dict()
    assert torch.equal(got[key], sd[key]) and torch.equal(got[POS], sd[POS][:514])
    for k, v in sd.items():
        if k != POS and ".pooler." not in k:
            assert torch.equal(got[k], v), k
    saved = json.loads((save_pretrained(model, tmp_path / "ga") / "config.json").read_text())
    assert saved["model_type"] == "roberta" and saved["max_position_embeddings"] == 514
    assert not {"attention_window", "gradient_checkpointing", *ALLENAI_KEYS} & set(saved)


# ------------------------------------------------------------------------------------------- scripts


def run_preprocess(argv):
    spec = importlib.util.spec_from_file_location("sedr_preprocess_script_lf", ROOT / "SeDR_preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


@pytest.fixture(scope="module")
def root(tmp_path_factory, hf_home, star):
    """data/ + star + preprocess + hard negatives (STAR FirstP), made by the README commands."""
    from SeDR import inference as sedr_inference

    root = tmp_path_factory.mktemp("lf-root")
    testing.make_msmarco_data(root / "data", n_docs=8, n_train=3, n_dev=3, n_test=2, max_words=400, seed=4)
    shutil.copytree(star, root / "data" / "star")
    with cwd(root):
        run_preprocess(["--data_path", "./data", "--max_seq_length", "2048"])
        sedr_inference.main(HARDNEG_CMD)
    return root


def readme_lines(script: str) -> list[list[str]]:
    """Argument lists of the README's ``python <script> ...`` lines."""
    import shlex

    out = []
    for line in (ROOT / "README.md").read_text().splitlines():
        words = shlex.split(line) if line.startswith("python ") else []
        if len(words) >= 2 and words[1] == script:
            out.append(words[2:])
    return out


def test_readme_longformer_commands_parse():
    from SeDR.cli.flags import build_longformer_inference_parser, build_longformer_train_parser

    assert readme_lines("SeDR_Longformer/Star2Star_Longformer.py") == [[]]
    (train,) = readme_lines("SeDR_Longformer/train.py")
    assert train == README_TRAIN
    ns = build_longformer_train_parser().parse_args(train)
    assert (ns.learning_rate, ns.max_doc_length, ns.max_seg_num, ns.max_bsize) == (5e-5, 2048, 4, 7)
    assert not hasattr(ns, "model_class") and not hasattr(ns, "max_seg_length")
    (inf,) = readme_lines("SeDR_Longformer/inference.py")
    ns = build_longformer_inference_parser().parse_args(inf)
    assert (ns.max_doc_length, ns.max_seg_num, ns.max_bsize, ns.eval_batch_size, ns.faiss_gpus) == (
        2048,
        4,
        50,
        32,
        [0],
    )
    assert ns.model_path == "./data/models/epoch-4-2048-4-7-SeDR_Longformer"
    with pytest.raises(SystemExit):  # no --model_class in the Longformer scripts
        build_longformer_train_parser().parse_args([*train, "--model_class", "SeDR"])


def test_readme_training_command_names_and_horizon(root):
    """The README's training flags: checkpoint names and a schedule horizon without the factor M."""
    from SeDR.cli.flags import build_longformer_train_parser
    from SeDR.core.runtime import resolve_precision
    from SeDR.training.loop import load_train_data

    with cwd(root):
        star2lf.main([])
        args = build_longformer_train_parser().parse_args(README_TRAIN)
        args.model_class = "SeDR_Longformer"
        assert args.learning_rate == 5e-5 and args.num_train_epochs == 25 and args.max_doc_length == 2048
        model = build_longformer(args.init_path, max_seg_num=4)
        train_data = load_train_data(args.preprocess_dir, args.hardneg_path, SegmentSpec(2048, 1))
        cpu = torch.device("cpu")
        trainer = LongformerTrainer(args, model, train_data, cpu, resolve_precision(cpu))
    assert trainer.name_of_epoch(4) == "epoch-4-2048-4-7-SeDR_Longformer"
    assert trainer.total_steps == (3 * 25) // (7 * 4)  # = 2; with the factor M it would be 10
    assert set(train_data.seg_counts.tolist()) == {1}  # one row per document


@pytest.mark.slow
def test_train_and_inference_end_to_end(root, tmp_path):
    """README flags with 700-token rows and a small window; 4 index rows per document."""
    lf_inference = load_script("SeDR_Longformer/inference.py")
    lf_train = load_script("SeDR_Longformer/train.py")

    work = tmp_path / "root"
    shutil.copytree(root, work)
    with cwd(work):
        star2lf.main(["--attention_window", "64", "--max_doc_length", "700"])
        argv = [a if a != "2048" else "700" for a in README_TRAIN]
        argv = [
            a if a != "4" or argv[i - 1] != "--gradient_accumulation_steps" else "1"
            for i, a in enumerate(argv)
        ]
        # Horizon floor(3·10/7) = 4 steps, so the optimizer really moves the weights within 2 epochs.
        saved = lf_train.main(
            argv + ["--num_train_epochs", "10", "--epochs_to_run", "2", "--warmup_steps", "0"]
        )
        assert [p.name for p in saved] == [
            "epoch-1-700-4-7-SeDR_Longformer",
            "epoch-2-700-4-7-SeDR_Longformer",
        ]
        args = json.loads((saved[-1] / "training_args.json").read_text())
        assert args["model_class"] == "SeDR_Longformer" and args["max_doc_length"] == 700
        before = load_file("data/starlongformer/model.safetensors")
        after = load_file(str(saved[-1] / "model.safetensors"))
        assert not torch.equal(before[POS], after[POS])  # accumulation 1: the optimizer stepped
        ev = lf_inference.main(
            [
                "--max_query_length",
                "32",
                "--max_doc_length",
                "700",
                "--max_seg_num",
                "4",
                "--model_path",
                "./data/models/epoch-2-700-4-7-SeDR_Longformer",
                "--faiss_gpus",
                "0",
            ]
        )
        out = Path("data/evaluate/epoch-2-700-4-7-SeDR_Longformer-inf700-4")
        ids = np.fromfile(out / "passages-id.memmap", dtype=np.int32)
        vecs = np.fromfile(out / "passages.memmap", dtype=np.float32).reshape(len(ids), -1)
        lengths = np.load("data/preprocess/passages_length.npy")
        passages = preprocess_folder.passages("data/preprocess")
        model = load_longformer(saved[-1]).eval()
    assert 0.0 <= ev.metrics["scores"]["dev_MRR@100"] <= 1.0
    n = len(lengths)
    assert np.array_equal(ids, np.repeat(np.arange(n), 4))  # 4 rows per document, id repeated
    content = np.minimum(lengths, 698)
    expect_valid = np.arange(4)[None, :] * 512 <= content[:, None] + 1  # position 512k inside [CLS] … [EOS]
    assert np.array_equal(np.abs(vecs).sum(1).reshape(n, 4) > 0, expect_valid)
    assert expect_valid.sum(1).min() == 1 and expect_valid.sum(1).max() == 2  # both cases in the fixture
    d = int(np.argmax(lengths))  # alone in a batch, untrimmed: the same vectors
    one = collate_documents([passages[d]], [d], SegmentSpec(700, 1))
    with torch.no_grad():
        np.testing.assert_allclose(
            model.encode_segments(one).numpy(), vecs[4 * d : 4 * d + 4], rtol=0, atol=1e-5
        )


def test_global_attention_scripts_from_the_conversion(root, tmp_path):
    """README's SeDR_Global_Attention commands with --init_path ./data/starlongformer
    (short segments, 1 epoch)."""
    from SeDR import inference as sedr_inference
    from SeDR import train as sedr_train

    work = tmp_path / "root"
    shutil.copytree(root, work)
    with cwd(work):
        star2lf.main([])
        (saved,) = sedr_train.main(
            [
                "--model_class",
                "SeDR_Global_Attention",
                "--max_query_length",
                "16",
                "--max_seg_length",
                "64",
                "--max_seg_num",
                "4",
                "--max_bsize",
                "6",
                "--preprocess_dir",
                "./data/preprocess",
                "--hardneg_path",
                "./data/hard_negative.json",
                "--init_path",
                "./data/starlongformer",
                "--output_dir",
                "./data/models",
                "--logging_dir",
                "./data/log",
                "--learning",
                "5e-5",
                "--hardneg_topk",
                "100",
                "--cache_size",
                "50",
                "--num_train_epochs",
                "1",
            ]
        )
        assert saved.name == "epoch-1-64-4-6-SeDR_Global_Attention"
        ev = sedr_inference.main(
            [
                "--model_class",
                "SeDR_Global_Attention",
                "--max_query_length",
                "16",
                "--max_seg_length",
                "64",
                "--max_seg_num",
                "4",
                "--model_path",
                str(saved),
                "--faiss_gpus",
                "0",
            ]
        )
    assert 0.0 <= ev.metrics["scores"]["dev_MRR@100"] <= 1.0
    assert "roberta.encoder.layer.0.attention.self.query_global.weight" in load_file(
        str(work / saved / WEIGHTS)
    )
