"""The five tokenizer rules and the stored-document example of docs/data.md#star-tokenizer, checked against
the tokenizer's own per-piece encoding and against the independent pure-Python 2.8 restatement
(``ReferenceRobertaTokenizer``)."""

import pickle
import random

import pytest

from SeDR.data.tokenization import StarTokenizer, byte_to_unicode, lower_per_character

BIG = 10**6


def bpe(tokenizer, text):
    """Plain BPE of one piece through transformers' own tokenizer (no specials, no prefix space)."""
    return tokenizer.encode(text, add_special_tokens=False)


def test_special_ids_come_from_the_tokenizer(star, tokenizer):
    assert (star.cls_id, star.eos_id) == (0, 2)
    assert star.special_ids == {
        "<s>": 0,
        "<pad>": 1,
        "</s>": 2,
        "<unk>": 3,
        "<mask>": tokenizer.mask_token_id,
    }


def test_T15_document_shape(star, tokenizer):
    ids = star.encode_documents(["https://a.b/</s>Foo Bar</s>Baz."], BIG)[0]
    first, second, third = bpe(tokenizer, "https://a.b/"), bpe(tokenizer, "foo bar"), bpe(tokenizer, "baz.")
    assert ids == first + [2] + second + [2] + third
    pieces = [tokenizer.convert_ids_to_tokens(p) for p in (first, second, third)]
    # no leading-space marker on the first word of any piece, "Ġbar" inside the second one
    assert [p[0][0] for p in pieces] == ["h", "f", "b"]
    assert "".join(pieces[1]) == "fooĠbar"
    assert 0 not in ids and ids[-1] != 2  # no CLS / EOS added to documents


def test_T15_query_shape(star, tokenizer):
    ids = star.encode_queries(["What is X"], 64)[0]
    assert ids == [0] + bpe(tokenizer, " what is x") + [2]
    assert tokenizer.convert_ids_to_tokens(ids[1]).startswith("Ġ")


def test_rule1_prefix_space_only_for_queries_without_leading_whitespace(star, tokenizer):
    assert star.encode_queries(["  two spaces"], 64)[0] == [0] + bpe(tokenizer, "  two spaces") + [2]
    assert star.encode_queries(["\tx"], 64)[0] == [0] + bpe(tokenizer, "\tx") + [2]
    assert star.encode_documents(["word"], BIG)[0] == bpe(tokenizer, "word")
    assert star.encode_queries([""], 64)[0] == [0, 2]


def test_rule2_lower_casing_per_character(star, tokenizer):
    assert star.encode_documents(["HeLLo WORLD"], BIG) == star.encode_documents(["hello world"], BIG)
    # Greek final sigma: one character at a time never yields the final form "ς".
    assert lower_per_character("ΟΔΟΣ ΣΑΣ") == "οδοσ σασ" != "ΟΔΟΣ ΣΑΣ".lower()
    assert star.encode_documents(["ΟΔΟΣ"], BIG)[0] == bpe(tokenizer, "οδοσ")
    # "İ" grows to two characters, as str.lower() of that one character does.
    assert lower_per_character("İx") == "i\u0307x"
    # Upper-case special strings become special after lower-casing (2.8 lower-cased, then split).
    assert star.encode_documents(["a</S>b"], BIG)[0] == bpe(tokenizer, "a") + [2] + bpe(tokenizer, "b")


def test_lower_per_character_matches_brute_force():
    rng = random.Random(1)
    alphabet = "aZΣσςİIıΩ ΆΪ\u1e9eß ǅǄ\n\t.ΣA"
    for _ in range(500):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert lower_per_character(s) == "".join(c.lower() for c in s)


def test_rule3_special_splitting_rstrip_and_empties(star, tokenizer):
    enc = star.encode_documents
    assert enc(["x <unk> y"], BIG)[0] == bpe(tokenizer, "x") + [3] + bpe(tokenizer, " y")
    assert enc(["a<mask>"], BIG)[0] == bpe(tokenizer, "a") + [tokenizer.mask_token_id]
    # rstrip of the piece before a special string, never lstrip of the one after
    assert enc(["a   </s>  b  "], BIG)[0] == bpe(tokenizer, "a") + [2] + bpe(tokenizer, "  b")
    # empty (or whitespace-only) pieces are dropped, the special ids stay
    assert enc(["</s>  </s><s>"], BIG)[0] == [2, 2, 0]
    assert enc(["   \n "], BIG)[0] == []
    assert enc(["<pad><s>"], BIG)[0] == [1, 0]


def test_rule4_each_piece_without_prefix_space(star, tokenizer):
    ids = star.encode_documents(["title</s>body text"], BIG)[0]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[tokens.index("</s>") + 1].startswith("b")


def test_rule5_truncation(star, tokenizer):
    text = "kalo mine ruta " * 20
    full = star.encode_documents([text], BIG)[0]
    assert len(full) > 20
    assert star.encode_documents([text], 20)[0] == full[:20]
    q = star.encode_queries([text], BIG)[0]
    assert star.encode_queries([text], 7)[0] == [0, *q[1:6], 2]  # CLS + 5 content + EOS = 7
    short = star.encode_queries(["x"], 64)[0]
    assert short == [0] + bpe(tokenizer, " x") + [2] and len(short) < 64
    with pytest.raises(ValueError):
        star.encode_queries(["x"], 1)


def test_reference_tokenizer_hand_checked(ref):
    # The byte table maps printable bytes to themselves and space to "Ġ" (U+0120).
    assert byte_to_unicode()[ord("a")] == "a" and byte_to_unicode()[ord(" ")] == "Ġ"
    assert len(set(byte_to_unicode().values())) == 256
    assert "".join(ref.tokenize("Foo Bar", add_special_tokens=False)) == "fooĠbar"
    assert "".join(ref.tokenize("Foo Bar", add_special_tokens=True)) == "ĠfooĠbar"
    assert (
        "".join(ref.tokenize("https://a.b/</s>Foo Bar</s>Baz.", add_special_tokens=False))
        == "https://a.b/</s>fooĠbar</s>baz."
    )
    ids = ref.encode("What is X", add_special_tokens=True, max_length=64)
    assert ids[0] == 0 and ids[-1] == 2
    assert ref.encode("What is X", add_special_tokens=True, max_length=4) == [0, *ids[1:3], 2]


def test_matches_reference_on_random_and_tricky_strings(star, ref):
    rng = random.Random(0)
    texts = [
        "https://a.b/</s>Foo Bar</s>Baz.",
        "don't  've 's  '  s",
        "tab\tnew\nline\r\n  ",
        "a\u00a0b \u2003c",
        "İstanbul ΟΔΟΣ",
        "emoji 😀 cafe\u0301 日本語",
        "x</s></s>y",
        " <s> ",
        "",
        "  'll",
        "12 345,67 € ...",
    ]
    alphabet = list("abcXYZ '\t\n.,!?0123 ") + [
        "</s>",
        "<unk>",
        "<mask>",
        "<pad>",
        "<s>",
        "</S>",
        "Σ",
        "İ",
        "é",
        "\u00a0",
        "😀",
        "'s",
        "'ll",
        "  ",
    ]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(1500)]
    docs, queries = star.encode_documents(texts, BIG), star.encode_queries(texts, BIG)
    for text, d, q in zip(texts, docs, queries):
        assert d == ref.encode(text, False, BIG), text
        assert q == ref.encode(text, True, BIG), text


def test_matches_reference_on_corpus_documents(star, ref, msmarco):
    from SeDR.data.msmarco_files import document_text

    lines = (msmarco.data_dir / "msmarco-docs.tsv").read_text(encoding="utf-8").splitlines()
    texts = [document_text(line, 10000) for line in lines[:15]]
    assert star.encode_documents(texts, 2048) == [ref.encode(t, False, 2048) for t in texts]


def test_pickles_for_worker_processes(star):
    texts = ["Some </s> Text", "What is X"]
    again = pickle.loads(pickle.dumps(star))
    assert again.encode_documents(texts, 50) == star.encode_documents(texts, 50)
    assert again.encode_queries(texts, 50) == star.encode_queries(texts, 50)


def test_roberta_base_resolves_offline(hf_home, star):
    rb = StarTokenizer.from_pretrained("roberta-base")
    assert rb.encode_queries(["What is X"], 64) == star.encode_queries(["What is X"], 64)


# ----------------------------------------------------------------------------------------------
# A BERT WordPiece tokenizer (the demo's all-MiniLM-L6-v2 kind): hand-written vocabulary, hand ids
# ----------------------------------------------------------------------------------------------

# id = line number: [PAD]=0, [UNK]=2, [CLS]=3, [SEP]=4, [MASK]=5, "open"=8, "file"=9, "##s"=16, ...
WORDPIECE_VOCAB = (
    "[PAD] [unused0] [UNK] [CLS] [SEP] [MASK] the a open file read write name change "
    "location of ##s ##ing to man : ( ) , . 1 2"
).split()


def write_bert_tokenizer(folder):
    """A tiny uncased BERT tokenizer folder (vocab.txt + config), loadable with AutoTokenizer."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDPIECE_VOCAB) + "\n")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"})
    )
    return folder


@pytest.fixture(scope="module")
def bert_star(tmp_path_factory):
    return StarTokenizer.from_pretrained(str(write_bert_tokenizer(tmp_path_factory.mktemp("wordpiece"))))


def test_bert_special_ids_and_field_separator(bert_star, star):
    assert (bert_star.cls_id, bert_star.eos_id) == (3, 4)
    assert bert_star.special_ids == {"[PAD]": 0, "[UNK]": 2, "[CLS]": 3, "[SEP]": 4, "[MASK]": 5}
    assert bert_star.field_separator == "[SEP]"  # BERT has no "</s>"
    assert star.field_separator == "</s>"  # RoBERTa keeps the literal field separator


def test_bert_document_and_query_ids_hand_checked(bert_star):
    # man : open ( 2 ) [SEP] open [SEP] the file ##s  (upper case lowered first, [SEP] still split)
    assert bert_star.encode_documents(["man:open(2)[SEP]Open[SEP]the FILES"], BIG) == [
        [19, 20, 8, 21, 26, 22, 4, 8, 4, 6, 9, 16]
    ]
    assert bert_star.encode_queries(["Open a file"], 64) == [[3, 8, 7, 9, 4]]  # [CLS] ... [SEP]
    assert bert_star.encode_queries(["Open a file"], 4) == [[3, 8, 7, 4]]  # cut before [SEP] is added
    assert bert_star.encode_documents(["reading zzz"], BIG) == [[10, 17, 2]]  # read ##ing [UNK]


def test_bert_document_text_uses_the_separator(bert_star, tokenizer_dir):
    from SeDR.data.msmarco_files import document_text

    line = "D1\tman:open(2)\tOpen \tthe files\n"
    assert document_text(line, 100, bert_star.field_separator) == "man:open(2)[SEP]Open[SEP]the files"
    assert document_text(line, 100) == "man:open(2)</s>Open</s>the files"  # default unchanged
    assert bert_star.encode_documents([document_text(line, 100, "[SEP]")], BIG)[0].count(4) == 2


# ----------------------------------------------------------------------------------------------
# The word-cache path (our regex + per-pre-token ids) against the backend alone
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend_only(star):
    return StarTokenizer(star.backend, star.special_ids, star.cls_id, star.eos_id, word_cache=False)


def random_texts(seed, n, max_len):
    # U+0558 and U+208F: classified differently by the regex module's and the backend's Unicode
    # tables at the time of writing; \x1c and \x85: whitespace edge cases; the rest common text.
    alphabet = list("abcXYZ '\t\n.,!?0123-") + [
        "  ",
        "   ",
        "'s",
        "'ll",
        "</s>",
        "<mask>",
        "é",
        "’",
        "—",
        "\u00a0",
        "\u2003",
        "\x85",
        "\x1c",
        "😀",
        "日本",
        "İ",
        "Σ",
        "\u0558",
        "\u208f",
        "caf\u0301e",
        " word",
        " x1",
    ]
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len))) for _ in range(n)]


def test_word_cache_path_equals_the_backend_alone(star, backend_only):
    assert star._words is not None and backend_only._words is None  # byte-level BPE: path in use
    for seed in range(4):  # several calls: later ones read ids cached by earlier ones
        texts = random_texts(seed, 400, 60)
        assert star.encode_documents(texts, BIG) == backend_only.encode_documents(texts, BIG)
        assert star.encode_queries(texts, 40) == backend_only.encode_queries(texts, 40)
    assert star._char_ok["é"] is True and "a" not in star._char_ok  # only non-ASCII is probed


def test_a_character_the_engines_disagree_on_goes_to_the_backend(star, backend_only):
    fresh = StarTokenizer(star.backend, star.special_ids, star.cls_id, star.eos_id)
    assert fresh._pretokenizable("plain ascii") and fresh._pretokenizable("café")
    fresh._char_ok["é"] = False  # as if the tables differed for "é"
    assert not fresh._pretokenizable("café") and fresh._pretokenizable("cafe")
    before = len(fresh._word_ids)
    assert fresh.encode_documents(["café au lait"], BIG) == backend_only.encode_documents(
        ["café au lait"], BIG
    )
    assert len(fresh._word_ids) == before  # the piece never reached the word cache


def test_word_cache_is_emptied_when_full(star, backend_only, monkeypatch):
    import regex

    from SeDR.data import tokenization

    monkeypatch.setattr(tokenization, "WORD_CACHE_LIMIT", 30)
    fresh = StarTokenizer(star.backend, star.special_ids, star.cls_id, star.eos_id)
    first = ["one two three four five six seven eight nine ten"]
    second = [" ".join(f"w{i}x" for i in range(25))]
    fresh.encode_documents(first, BIG)
    assert len(fresh._word_ids) == 10
    assert fresh.encode_documents(second, BIG) == backend_only.encode_documents(second, BIG)
    # 10 + 25 > 30: emptied, then filled with the second call's pre-tokens only
    assert set(fresh._word_ids) == set(regex.findall(tokenization.GPT2_PATTERN, second[0]))
