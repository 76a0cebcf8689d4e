"""The offline stand-ins (tokenizer, STAR checkpoint, MS MARCO folder) and the 2.8 reference tokenizer."""

import json

import torch
from transformers import AutoTokenizer

from SeDR.data.tokenization import byte_to_unicode
from SeDR.testing.reference_tokenizer import ReferenceRobertaTokenizer

BIG = 10**6


def test_tokenizer_has_roberta_special_ids(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]] == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_roberta_base_resolves_offline_from_cache(hf_home, tokenizer):
    tok = AutoTokenizer.from_pretrained("roberta-base")
    assert tok.get_vocab() == tokenizer.get_vocab()


def test_star_checkpoint_layout(star_dir):
    state = torch.load(star_dir / "pytorch_model.bin", weights_only=True)
    assert all(k.split(".")[0] in {"roberta", "embeddingHead", "norm"} for k in state)
    assert "embeddingHead.weight" in state and "norm.bias" in state
    assert not any("pooler" in k for k in state)


def test_msmarco_fixture_files(msmarco):
    names = {p.name for p in msmarco.data_dir.iterdir()}
    assert len(names) == 9
    lines = (msmarco.data_dir / "msmarco-docs.tsv").read_text().splitlines()
    assert [int(line.split("\t")[0][1:]) for line in lines] == msmarco.doc_ids


# ----------------------------------------------------------------------------------------------
# The 2.8 call path restated by the reference tokenizer (its agreement with StarTokenizer is in
# test_tokenization.py)
# ----------------------------------------------------------------------------------------------


def test_reference_truncation_and_model_inputs_as_2_8(ref):
    assert ref.truncate_sequences([1, 2, 3, 4, 5], num_tokens_to_remove=2) == ([1, 2, 3], [4, 5])
    assert ref.truncate_sequences([1, 2, 3, 4, 5], num_tokens_to_remove=2, stride=1) == ([1, 2, 3], [3, 4, 5])
    assert ref.truncate_sequences([1, 2], num_tokens_to_remove=0) == ([1, 2], [])
    out = ref.prepare_for_model([7, 8, 9], max_length=4, add_special_tokens=True)
    assert out == {"input_ids": [0, 7, 8, 2], "token_type_ids": [0] * 4, "attention_mask": [1] * 4}
    assert ref.prepare_for_model([7, 8, 9], max_length=2, add_special_tokens=False)["input_ids"] == [7, 8]
    assert ref.num_special_tokens_to_add() == 2


def test_reference_bpe_cache_holds_space_joined_strings(ref):
    word = "".join(byte_to_unicode()[b] for b in b" hello")
    joined = ref.bpe(word)
    assert "".join(joined.split(" ")) == word and ref.cache[word] == joined
    assert ref.bpe("x") == "x" and "x" not in ref.cache  # 2.8 returned single symbols uncached


def test_reference_special_strings_outside_the_vocabulary(star, ref):
    """The GPT-2 files case: special strings are 2.8 "added tokens" with ids after the vocabulary."""
    vocab = json.loads(star.backend.to_str())["model"]["vocab"]
    merges = list(ref.bpe_ranks)
    plain = {t: i for t, i in vocab.items() if t not in star.special_ids}
    shifted = {s: 10_000 + i for s, i in star.special_ids.items()}
    added = ReferenceRobertaTokenizer(plain, merges, shifted)
    assert added.added_tokens_encoder == shifted
    text = "Foo</s>bar <unk> baz"
    expected = [10_000 + i if i in star.special_ids.values() else i for i in ref.encode(text, False, BIG)]
    assert added.encode(text, False, BIG) == expected
    assert added.encode("x", True, BIG)[0] == 10_000 + star.cls_id
