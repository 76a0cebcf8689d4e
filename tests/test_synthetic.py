from transformers import AutoTokenizer


def test_tokenizer_has_roberta_special_ids(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]] == [0, 1, 2, 3, 4]


def test_roberta_base_resolves_offline_from_cache(hf_home, tokenizer):
    tok = AutoTokenizer.from_pretrained("roberta-base")
    assert tok.get_vocab() == tokenizer.get_vocab()


def test_star_checkpoint_layout(star_dir):
    import torch

    state = torch.load(star_dir / "pytorch_model.bin", weights_only=True)
    assert all(k.split(".")[0] in {"roberta", "embeddingHead", "norm"} for k in state)
    assert "embeddingHead.weight" in state and "norm.bias" in state
    assert not any("pooler" in k for k in state)


def test_msmarco_fixture_files(msmarco):
    names = {p.name for p in msmarco.data_dir.iterdir()}
    assert len(names) == 9
    lines = (msmarco.data_dir / "msmarco-docs.tsv").read_text().splitlines()
    assert [int(line.split("\t")[0][1:]) for line in lines] == msmarco.doc_ids
