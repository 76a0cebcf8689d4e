"""ADORE stage (SPEC §8): fine-tune the query encoder against a frozen segment index.

Each step encodes 32 training queries (dropout on), searches the frozen index with the
detached vectors, and trains with softmax cross-entropy over the best segment of the first
relevant document and the best segments of the non-relevant documents among the first
``metric_cut`` unique hits. Model selection by dev MRR@100 + R@100, evaluated before training,
every ``save_steps`` optimizer steps and after every epoch; only improvements are saved.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from SeDR import data, embeddings, indexes
from SeDR.constants import EVAL_DOCS_KEPT, SEGMENT_HITS
from SeDR.encoding import encode_queries
from SeDR.evaluation import evaluate_rankings, format_results_table
from SeDR.modeling import save_pretrained
from SeDR.optim import build_optimizer, linear_schedule_with_warmup
from SeDR.ranking import OriginalIds, retrieve_documents, unique_docs
from SeDR.runtime import Precision, seed_everything

logger = logging.getLogger(__name__)

# ADORE keeps the first `metric_cut` unique documents of each query's hits.
ADORE_METRIC_CUT = 200


@dataclass
class AdoreTargets:
    """One query's ADORE training rows and its retrieval quality (for logging).

    ``positive_row`` is the best retrieved row of the first relevant document among the first
    ``metric_cut`` unique documents, else the best row (by ``q·E[row]``) of the first relevant
    document in qrels order; ``negative_rows`` are the best rows of the non-relevant documents.
    """

    positive_row: int
    negative_rows: np.ndarray  # int64 [<= metric_cut]
    positive_retrieved: bool
    rr_at_100: float
    recall_at_100: float  # 1 if any relevant document is in the first 100


def best_row_of_doc(doc: int, query_vec: np.ndarray, vectors: np.ndarray, first_row: np.ndarray) -> int:
    """The row of document ``doc`` with the largest ``q·E[row]`` among all its rows."""
    lo, hi = int(first_row[doc]), int(first_row[doc + 1])
    seg = np.asarray(vectors[lo:hi], dtype=np.float32)  # (s, d)
    return lo + int(np.argmax(seg @ np.asarray(query_vec, dtype=np.float32)))


def adore_targets(rows: np.ndarray, row_doc_ids: np.ndarray, relevant: Sequence[int], query_vec: np.ndarray,
                  vectors: np.ndarray, first_row: np.ndarray, metric_cut: int = ADORE_METRIC_CUT,
                  mrr_cutoff: int = 100) -> AdoreTargets:
    """SPEC §8 step 4 for one query.

    Args:
        rows: int ``[k]`` index hits, best first (``-1`` entries are ignored).
        row_doc_ids: int ``[S]`` document offset of each row.
        relevant: relevant documents in qrels order (the fallback uses ``relevant[0]``).
        query_vec: float ``[d]`` the (detached) query vector the hits were searched with.
        vectors: float32 ``[S, d]`` the frozen segment vectors; ``first_row`` int ``[N + 1]``.
    """
    if len(relevant) == 0:
        raise ValueError("ADORE needs at least one relevant document per query")
    docs, best_rows, _ = unique_docs(rows, row_doc_ids, k_docs=metric_cut)
    rel_set = set(int(d) for d in relevant)
    y = np.fromiter((int(d) in rel_set for d in docs), dtype=bool, count=len(docs))
    hit = np.flatnonzero(y)
    top = np.flatnonzero(y[:mrr_cutoff])
    rr = 1.0 / (top[0] + 1) if len(top) else 0.0
    if len(hit):
        pos = int(best_rows[hit[0]])
    else:
        pos = best_row_of_doc(int(relevant[0]), query_vec, vectors, first_row)
    return AdoreTargets(pos, best_rows[~y].astype(np.int64), bool(len(hit)), float(rr), float(len(top) > 0))


def adore_batch_targets(rows: np.ndarray, queries: np.ndarray, relevant: Sequence[Sequence[int]],
                        row_doc_ids: np.ndarray, vectors: np.ndarray, first_row: np.ndarray,
                        metric_cut: int = ADORE_METRIC_CUT) -> list[AdoreTargets]:
    """:func:`adore_targets` for a batch: ``rows [B, k]``, ``queries [B, d]``, one relevant list per query."""
    return [adore_targets(r, row_doc_ids, rel, q, vectors, first_row, metric_cut)
            for r, q, rel in zip(rows, queries, relevant)]


def adore_loss(query_emb: torch.Tensor, targets: Sequence[AdoreTargets], vectors: np.ndarray,
               nominal_batch_size: int, grad_accum: int = 1) -> torch.Tensor:
    """Sum over queries of CE(q · E[[pos] + negatives], 0), divided by ``nominal_batch_size · grad_accum``.

    The divisor uses the nominal batch size even for a short last batch (SPEC §8, §10 #37, KEEP).
    Scores are computed in fp32; only ``query_emb`` ``[B, d]`` carries gradients.
    """
    losses = []
    for q, t in zip(query_emb, targets):
        cand = np.concatenate([[t.positive_row], t.negative_rows]).astype(np.int64)
        emb = torch.as_tensor(np.asarray(vectors[cand], dtype=np.float32), device=q.device)  # (1 + n, d)
        logits = emb @ q.float()  # (1 + n,)
        losses.append(torch.nn.functional.cross_entropy(logits[None], logits.new_zeros(1, dtype=torch.long)))
    if not losses:
        return query_emb.sum() * 0.0
    return torch.stack(losses).sum() / (nominal_batch_size * grad_accum)


class AdoreRun:
    def __init__(self, args, model, device: torch.device, precision: Precision):
        self.args, self.model, self.device, self.precision = args, model, device, precision
        self.preprocess_dir = Path(args.preprocess_dir)
        self.emb = embeddings.load_segment_embeddings(args.pembed_dir)
        self.first_row = embeddings.load_or_build_first_row(args.pembed_dir, self.emb.doc_ids)
        self.index = indexes.build_index(self.emb.vectors, args.faiss_gpu_index, backend=args.search_backend,
                                         faiss_threads=args.faiss_omp_num_threads)
        self.train_queries = data.queries(self.preprocess_dir, "train")
        self.rel = data.load_rel(self.preprocess_dir / "train-qrel.tsv")
        self.train_offsets = sorted(self.rel)
        self.pad_id = model.special_ids["pad_id"]
        splits = [s for s in EVAL_DOCS_KEPT if (self.preprocess_dir / f"{s}-query_meta").exists()]
        self.eval_splits = splits
        self.original_ids = OriginalIds.load(self.preprocess_dir, splits)
        self.name = Path(args.init_path).resolve().name
        self.save_dir = Path(args.model_save_dir)
        self.writer = None

    def rank(self) -> dict:
        """Rankings of every evaluated split by the current query encoder (queries at max_seq_length)."""
        rankings = {}
        for split in self.eval_splits:
            qcache = data.queries(self.preprocess_dir, split)
            qv = encode_queries(self.model, qcache, self.args.max_seq_length, self.args.per_gpu_batch_size,
                                self.device, self.precision, show_progress=False)
            rankings[split] = retrieve_documents(self.index, self.emb.doc_ids, qv, range(len(qcache)),
                                                           EVAL_DOCS_KEPT[split], show_progress=False)
        self.model.train()
        return rankings

    def evaluate(self, tag: str, rankings: dict | None = None, out_dir: Path | None = None):
        """Metrics of ``rankings`` (default: rank now); with ``out_dir``, also its run files and metrics.json."""
        return evaluate_rankings(self.rank() if rankings is None else rankings, self.preprocess_dir, out_dir,
                                 run_tag=f"{self.name}-adore", original_ids=self.original_ids,
                                 history_record={"checkpoint": tag}, write_runs=out_dir is not None)

    def run(self):
        a = self.args
        from torch.utils.tensorboard import SummaryWriter  # slow import (TensorBoard): only when training

        self.writer = SummaryWriter(log_dir=str(Path(a.log_dir) / f"adore-{self.name}"))
        n_batches = math.ceil(len(self.train_offsets) / a.per_gpu_batch_size)
        total = (n_batches // a.gradient_accumulation_steps) * a.num_train_epochs
        optimizer = build_optimizer("adamw", self.model, lr=a.learning_rate, weight_decay=a.weight_decay,
                                    eps=a.adam_epsilon)
        scheduler = linear_schedule_with_warmup(optimizer, a.warmup_steps, total)
        logger.info("***** ADORE: %s *****", a.init_path)
        logger.info("  %d training queries, %d segment rows, %d optimizer steps, lr %g", len(self.train_offsets),
                    len(self.emb.doc_ids), total, a.learning_rate)
        seed_everything(a.seed)  # the original seeds again right before the first evaluation (SPEC §8)
        best = self.evaluate("init").selection_score
        logger.info("initial dev MRR@100 + R@100 = %.4f", best)
        self.save_dir.mkdir(parents=True, exist_ok=True)
        step, saved = 0, []
        rng = random.Random(a.seed)
        self.model.train()
        for epoch in range(a.num_train_epochs):
            order = list(self.train_offsets)
            rng.shuffle(order)
            window = []
            bar = tqdm(range(n_batches), desc=f"ADORE epoch {epoch + 1}/{a.num_train_epochs}", unit="batch")
            for b in bar:
                batch_q = order[b * a.per_gpu_batch_size: (b + 1) * a.per_gpu_batch_size]
                qb = data.collate_queries([self.train_queries[q] for q in batch_q], batch_q, a.max_seq_length,
                                          pad_id=self.pad_id, pad_to_max_length=False).to(self.device)
                with self.precision.autocast():
                    q_emb = self.model.encode_queries(qb)
                q_emb = q_emb.float()
                q_np = q_emb.detach().cpu().numpy()
                _, rows = self.index.search(q_np, SEGMENT_HITS)
                targets = adore_batch_targets(rows, q_np, [self.rel[q] for q in batch_q],
                                                        self.emb.doc_ids, self.emb.vectors, self.first_row,
                                                        a.metric_cut)
                loss = adore_loss(q_emb, targets, self.emb.vectors, a.per_gpu_batch_size,
                                            a.gradient_accumulation_steps)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.max_grad_norm)
                window.append((loss.item() * a.gradient_accumulation_steps,
                               np.mean([t.rr_at_100 for t in targets]), np.mean([t.recall_at_100 for t in targets])))
                if (b + 1) % a.gradient_accumulation_steps == 0:
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    if step % a.logging_steps == 0:
                        self._log(window, step, scheduler.get_last_lr()[0], bar)
                        window = []
                    if step % a.save_steps == 0:
                        best = self._maybe_save(best, f"{self.name}-ckpt-{step}", saved)
            best = self._maybe_save(best, f"{self.name}-epoch-{epoch + 1}", saved)
        self.writer.close()
        (self.save_dir / f"{self.name}-best.json").write_text(json.dumps(
            {"best_selection_score": best, "saved": [str(p) for p in saved]}, indent=2))
        return saved

    def _log(self, window, step, lr, bar):
        loss, mrr, rec = (float(np.mean([w[i] for w in window])) for i in range(3))
        bar.set_postfix(loss=f"{loss:.4f}", mrr=f"{mrr:.3f}")
        logger.info("step %d | lr %.3e | loss %.5f | train MRR@100 %.4f | R@100 %.4f", step, lr, loss, mrr, rec)
        for k, v in (("loss", loss), ("train_MRR@100", mrr), ("train_R@100", rec), ("lr", lr)):
            self.writer.add_scalar(f"adore/{k}", v, step)

    def _maybe_save(self, best: float, name: str, saved: list) -> float:
        rankings = self.rank()
        ev = self.evaluate(name, rankings)
        score = ev.selection_score
        self.writer.add_scalar("adore/dev_selection", score, len(saved))
        logger.info("%s: dev MRR@100 + R@100 = %.4f (best %.4f)", name, score, best)
        if score is None or score <= best:
            return best
        target = self.save_dir / name
        save_pretrained(self.model, target)
        self.evaluate(name, rankings, out_dir=target)  # run files + metrics.json beside the weights
        print(format_results_table(ev.metrics))
        saved.append(target)
        return score
