"""ADORE targets (positive choice, fallback, negatives) and its loss."""

import numpy as np
import pytest
import torch

from SeDR.retrieval import embedding_files
from SeDR.training import adore


def adore_fixture():
    """6 docs a..f = offsets 0..5 with 2 rows each; hits in rank order give unique docs a,b,c,d,e."""
    row_doc_ids = np.repeat(np.arange(6), 2)  # rows 2d, 2d+1 belong to doc d
    rows = np.array([1, 2, 1, 5, 4, 7, 6, 9, 3, 8])  # docs a(1) b(2) a c(5) c d(7) d e(9) b e
    return row_doc_ids, rows


def test_adore_positive_is_first_relevant_retrieved():
    row_doc_ids, rows = adore_fixture()
    first_row = embedding_files.first_row_index(row_doc_ids)
    vectors = np.zeros((12, 2), dtype=np.float32)
    t = adore.adore_targets(
        rows, row_doc_ids, relevant=[3, 1], query_vec=np.ones(2), vectors=vectors, first_row=first_row
    )
    # unique docs [a,b,c,d,e] with best rows [1,2,5,7,9]; b (doc 1) is the first relevant -> row 2;
    # negatives: best rows of a, c, e (relevant d excluded).
    assert t.positive_row == 2 and t.negative_rows.tolist() == [1, 5, 9]
    assert t.positive_retrieved and t.rr_at_100 == 0.5 and t.recall_at_100 == 1.0


def test_adore_fallback_positive():
    row_doc_ids, rows = adore_fixture()
    first_row = embedding_files.first_row_index(row_doc_ids)
    vectors = np.zeros((12, 2), dtype=np.float32)
    vectors[10] = [1.0, 0.0]  # doc 5 (f), never retrieved: q·E = 1 for row 10, 3 for row 11
    vectors[11] = [0.0, 3.0]
    q = np.array([1.0, 1.0], dtype=np.float32)
    t = adore.adore_targets(
        rows, row_doc_ids, relevant=[5, 0], query_vec=q, vectors=vectors, first_row=first_row, metric_cut=3
    )
    # doc 0 is relevant and retrieved at rank 1 -> positive = its best row 1, not the fallback.
    assert t.positive_row == 1
    t = adore.adore_targets(
        rows, row_doc_ids, relevant=[5], query_vec=q, vectors=vectors, first_row=first_row, metric_cut=3
    )
    # no relevant doc in the first 3 unique docs: argmax over all rows of relevant[0] = doc 5 -> row 11;
    # negatives = all metric_cut documents' best rows.
    assert t.positive_row == 11 and t.negative_rows.tolist() == [1, 2, 5]
    assert not t.positive_retrieved and t.rr_at_100 == 0.0 and t.recall_at_100 == 0.0


def test_adore_loss_matches_hand_cross_entropy():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    q = torch.tensor([[2.0, 1.0]], requires_grad=True)
    t = adore.AdoreTargets(0, np.array([1, 2]), True, 1.0, 1.0)
    loss = adore.adore_loss(q, [t], vectors, nominal_batch_size=32)
    # logits = (2, 1, 3), CE with target 0 = log(e^2 + e^1 + e^3) - 2; divided by the nominal 32.
    expected = (np.log(np.exp(2) + np.exp(1) + np.exp(3)) - 2) / 32
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_adore_optimizer_is_the_originals_unless_told():
    """The README command builds transformers 4.x AdamW at 3e-6;
    --adore_optimizer torch_adamw gives torch's."""
    from conftest import ROOT

    from SeDR.cli.flags import build_adore_parser
    from SeDR.training.optimizers import TransformersAdamW

    line = next(
        ln
        for ln in (ROOT / "README.md").read_text().splitlines()
        if ln.startswith("python SeDR/adore_train.py")
    )
    argv = line.split()[2:]
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    opt = adore.adore_optimizer(model, build_adore_parser().parse_args(argv))
    assert type(opt) is TransformersAdamW and opt.defaults["lr"] == 3e-6 and opt.defaults["eps"] == 1e-8
    # The no-decay rule is by name, as before: biases are not decayed; "1.weight" (a LayerNorm not called
    # LayerNorm, like the output norm) is.
    assert [(g["param_names"], g["weight_decay"]) for g in opt.param_groups] == [
        (["0.weight", "1.weight"], 0.01),
        (["0.bias", "1.bias"], 0.0),
    ]
    torch_opt = adore.adore_optimizer(
        model, build_adore_parser().parse_args([*argv, "--adore_optimizer", "torch_adamw"])
    )
    assert type(torch_opt) is torch.optim.AdamW
