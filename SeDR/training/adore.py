"""ADORE stage (docs/adore.md): fine-tune the query encoder against a frozen segment index.

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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from SeDR.core.constants import EVAL_DOCS_KEPT, SEGMENT_HITS
from SeDR.core.errors import SeDRInputError
from SeDR.core.outputs import (
    BACKUP,
    KEEP,
    REFUSE,
    RUN_FOLDER,
    Claim,
    atomic_save_dir,
    atomic_write,
    atomic_write_text,
    check_saved_state,
    claim,
    fingerprint,
    flag_changes,
    read_saved_state,
)
from SeDR.core.progress import progress
from SeDR.core.runtime import Precision, rng_state, seed_everything, set_rng_state
from SeDR.data import collation, preprocess_folder
from SeDR.modeling import save_pretrained
from SeDR.modeling.checkpoint import model_fingerprint
from SeDR.retrieval import embedding_files, exact_search
from SeDR.retrieval.encoding import encode_queries
from SeDR.retrieval.evaluation import evaluate_rankings, format_results_table
from SeDR.retrieval.ranking import OriginalIds, retrieve_documents, unique_docs
from SeDR.training.optimizers import build_optimizer, linear_schedule_with_warmup

logger = logging.getLogger(__name__)

# ADORE keeps the first `metric_cut` unique documents of each query's hits.
ADORE_METRIC_CUT = 200
# --adore_optimizer -> SeDR.training.optimizers.build_optimizer name
# ("original": transformers 4.x AdamW, the original's).
ADORE_OPTIMIZERS = {"original": "transformers_adamw", "torch_adamw": "adamw"}


def adore_optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    """The optimizer ``--adore_optimizer`` names, over every parameter with the usual no-decay groups."""
    return build_optimizer(
        ADORE_OPTIMIZERS[args.adore_optimizer],
        model,
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        eps=args.adam_epsilon,
    )


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


def adore_targets(
    rows: np.ndarray,
    row_doc_ids: np.ndarray,
    relevant: Sequence[int],
    query_vec: np.ndarray,
    vectors: np.ndarray,
    first_row: np.ndarray,
    metric_cut: int = ADORE_METRIC_CUT,
    mrr_cutoff: int = 100,
) -> AdoreTargets:
    """The positive and negative rows of one query (docs/adore.md#adore-targets).

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


def adore_batch_targets(
    rows: np.ndarray,
    queries: np.ndarray,
    relevant: Sequence[Sequence[int]],
    row_doc_ids: np.ndarray,
    vectors: np.ndarray,
    first_row: np.ndarray,
    metric_cut: int = ADORE_METRIC_CUT,
) -> list[AdoreTargets]:
    """:func:`adore_targets` for a batch: ``rows [B, k]``, ``queries [B, d]``, one relevant list per query."""
    return [
        adore_targets(r, row_doc_ids, rel, q, vectors, first_row, metric_cut)
        for r, q, rel in zip(rows, queries, relevant)
    ]


def adore_loss(
    query_emb: torch.Tensor,
    targets: Sequence[AdoreTargets],
    vectors: np.ndarray,
    nominal_batch_size: int,
    grad_accum: int = 1,
) -> torch.Tensor:
    """Sum over queries of CE(q · E[[pos] + negatives], 0), divided by ``nominal_batch_size · grad_accum``.

    The divisor uses the nominal batch size even for a short last batch, as the original
    (docs/adore.md#adore-loss). Scores are computed in fp32; only ``query_emb`` ``[B, d]`` carries gradients.
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


# Flags a resumed ADORE run may change; the others are fixed by the saved state.
ADORE_RESUMABLE_FLAGS = frozenset(
    {
        "resume",
        "overwrite_output_dir",
        "logging_steps",
        "log_dir",
        "no_cuda",
        "model_gpu_index",
        "faiss_gpu_index",
        "faiss_omp_num_threads",
    }
)


def adore_outputs(save_dir: Path, name: str) -> list[Path]:
    """What a run from checkpoint ``name`` has written into ``save_dir``: checkpoints, best.json, state."""
    own = re.compile(
        re.escape(name) + r"-(ckpt|epoch)-\d+|" + re.escape(name) + r"-(best\.json|adore-state\.pt)"
    )
    return sorted(p for p in save_dir.iterdir() if own.fullmatch(p.name)) if save_dir.is_dir() else []


def _embeddings_content(folder: str) -> str:
    """What an embedding folder holds, for a moved ``--pembed_dir``: its record and sizes."""
    paths = embedding_files.embedding_paths(folder)
    sizes = [p.stat().st_size if p.exists() else -1 for p in paths[:2]]
    return fingerprint([paths[2]]) + str(sizes)


# Flags naming files or folders: compared on --resume by what they hold, not by their spelling.
ADORE_PATH_FLAGS = {
    "model_save_dir": RUN_FOLDER,
    "init_path": model_fingerprint,
    "pembed_dir": _embeddings_content,
    "preprocess_dir": preprocess_folder.preprocess_fingerprint,
}
# How to get past a saved state that cannot be read.
UNREADABLE_STATE_FIX = (
    "restore the file, or start again with --overwrite_output_dir (this run's outputs move to a dated backup)"
)


def claim_save_dir(args, name: str) -> Claim:
    """Lock this run's outputs in ``--model_save_dir``;
    earlier ones need ``--resume`` or ``--overwrite_output_dir``."""
    save_dir = Path(args.model_save_dir)
    state = save_dir / f"{name}-adore-state.pt"
    how = (
        "it has no resumable state: pass --overwrite_output_dir"
        if args.resume
        else (
            "pass --resume to continue it, or --overwrite_output_dir to start again "
            "(they move to a dated backup)"
        )
    )
    held = claim(
        save_dir,
        lock_in=save_dir,
        lock_name=f"{name}-adore",
        earlier=lambda: adore_outputs(save_dir, name),
        when_taken=(
            BACKUP if args.overwrite_output_dir else KEEP if args.resume and state.exists() else REFUSE
        ),
        refusal=lambda found: f"{found[0]} already exists (an earlier ADORE run from {name}); {how}",
        backup_folder=save_dir / f"{name}-adore",
        what="ADORE checkpoints",
    )
    if held.backup is not None:
        logger.warning(
            "--overwrite_output_dir: moved the earlier outputs of this ADORE run to %s", held.backup
        )
    elif held.earlier and state.exists():
        try:
            check_saved_state(state, UNREADABLE_STATE_FIX)
        except BaseException:
            held.release()
            raise
    return held


def open_frozen_embeddings(folder, init_path, dim: int):
    """The segment index ADORE trains against: ours (made by ``init_path``'s weights) or
    the original code's."""
    if embedding_files.foreign_embeddings(folder):
        logger.warning(
            "%s has no record of ours (written by the original code?): its vectors are used as they are "
            "and nothing is written into that folder",
            folder,
        )
        return embedding_files.load_segment_embeddings(folder, legacy_dim=dim), False
    emb = embedding_files.load_segment_embeddings(folder)
    made_by = emb.info.get("model_fingerprint")
    if made_by and made_by != model_fingerprint(init_path):
        raise SeDRInputError(
            f"the embeddings in {folder} were made by {emb.info.get('model_path')}, whose weights "
            f"differ from --init_path {init_path}; encode with this model first "
            "(`python SeDR/inference.py --model_path ...`)"
        )
    return emb, True


class AdoreRun:
    def __init__(self, args, model, device: torch.device, precision: Precision):
        self.args, self.model, self.device, self.precision = args, model, device, precision
        self.preprocess_dir = Path(args.preprocess_dir)
        self.emb, ours = open_frozen_embeddings(args.pembed_dir, args.init_path, model.embedding_dim)
        self.first_row = embedding_files.load_or_build_first_row(
            args.pembed_dir, self.emb.doc_ids, cache=ours
        )
        self.index = exact_search.build_index(
            self.emb.vectors,
            args.faiss_gpu_index,
            backend=args.search_backend,
            faiss_threads=args.faiss_omp_num_threads,
        )
        self.train_queries = preprocess_folder.queries(self.preprocess_dir, "train")
        self.rel = preprocess_folder.load_rel(self.preprocess_dir / "train-qrel.tsv")
        self.train_offsets = sorted(self.rel)
        self.pad_id = model.special_ids["pad_id"]
        splits = [s for s in EVAL_DOCS_KEPT if (self.preprocess_dir / f"{s}-query_meta").exists()]
        self.eval_splits = splits
        self.original_ids = OriginalIds.load(self.preprocess_dir, splits)
        self.name = Path(args.init_path).resolve().name
        self.save_dir = Path(args.model_save_dir)
        self.state_path = self.save_dir / f"{self.name}-adore-state.pt"
        self.writer = None

    def rank(self) -> dict:
        """Rankings of every evaluated split by the current query encoder (queries at max_seq_length)."""
        rankings = {}
        for split in self.eval_splits:
            qcache = preprocess_folder.queries(self.preprocess_dir, split)
            qv = encode_queries(
                self.model,
                qcache,
                self.args.max_seq_length,
                self.args.per_gpu_batch_size,
                self.device,
                self.precision,
                show_progress=False,
            )
            rankings[split] = retrieve_documents(
                self.index,
                self.emb.doc_ids,
                qv,
                range(len(qcache)),
                EVAL_DOCS_KEPT[split],
                show_progress=False,
            )
        self.model.train()
        return rankings

    def evaluate(self, tag: str, rankings: dict | None = None, out_dir: Path | None = None):
        """Metrics of ``rankings`` (default: rank now); with ``out_dir``,
        also its run files and metrics.json."""
        return evaluate_rankings(
            self.rank() if rankings is None else rankings,
            self.preprocess_dir,
            out_dir,
            run_tag=f"{self.name}-adore",
            original_ids=self.original_ids,
            history_record={"checkpoint": tag},
            write_runs=out_dir is not None,
        )

    def run(self):
        a = self.args
        from torch.utils.tensorboard import SummaryWriter  # slow import (TensorBoard): only when training

        self.writer = SummaryWriter(log_dir=str(Path(a.log_dir) / f"adore-{self.name}"))
        n_batches = math.ceil(len(self.train_offsets) / a.per_gpu_batch_size)
        total = (n_batches // a.gradient_accumulation_steps) * a.num_train_epochs
        optimizer = adore_optimizer(self.model, a)
        scheduler = linear_schedule_with_warmup(optimizer, a.warmup_steps, total)
        logger.info("***** ADORE: %s *****", a.init_path)
        logger.info(
            "  %d training queries, %d segment rows, %d optimizer steps, lr %g, %s",
            len(self.train_offsets),
            len(self.emb.doc_ids),
            total,
            a.learning_rate,
            type(optimizer).__name__,
        )
        rng = random.Random(a.seed)
        if a.resume and self.state_path.exists():
            start_epoch, step, best, saved = self._load_state(optimizer, scheduler, rng)
        else:
            seed_everything(a.seed)  # the original seeds again right before the first evaluation
            best = self.evaluate("init").selection_score
            logger.info("initial dev MRR@100 + R@100 = %.4f", best)
            start_epoch, step, saved = 0, 0, []
        self.model.train()
        for epoch in range(start_epoch, a.num_train_epochs):
            order = list(self.train_offsets)
            rng.shuffle(order)
            window = []
            bar = progress(
                range(n_batches), desc=f"ADORE epoch {epoch + 1}/{a.num_train_epochs}", unit="batch"
            )
            for b in bar:
                batch_q = order[b * a.per_gpu_batch_size : (b + 1) * a.per_gpu_batch_size]
                qb = collation.collate_queries(
                    [self.train_queries[q] for q in batch_q],
                    batch_q,
                    a.max_seq_length,
                    pad_id=self.pad_id,
                    pad_to_max_length=False,
                ).to(self.device)
                with self.precision.autocast():
                    q_emb = self.model.encode_queries(qb)
                q_emb = q_emb.float()
                q_np = q_emb.detach().cpu().numpy()
                _, rows = self.index.search(q_np, SEGMENT_HITS)
                targets = adore_batch_targets(
                    rows,
                    q_np,
                    [self.rel[q] for q in batch_q],
                    self.emb.doc_ids,
                    self.emb.vectors,
                    self.first_row,
                    a.metric_cut,
                )
                loss = adore_loss(
                    q_emb, targets, self.emb.vectors, a.per_gpu_batch_size, a.gradient_accumulation_steps
                )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.max_grad_norm)
                window.append(
                    (
                        loss.item() * a.gradient_accumulation_steps,
                        np.mean([t.rr_at_100 for t in targets]),
                        np.mean([t.recall_at_100 for t in targets]),
                    )
                )
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
            self._save_state(epoch + 1, step, best, saved, optimizer, scheduler, rng)
        self.writer.close()
        atomic_write_text(
            self.save_dir / f"{self.name}-best.json",
            json.dumps({"best_selection_score": best, "saved": [str(p) for p in saved]}, indent=2),
        )
        return saved

    def _save_state(self, epoch, step, best, saved, optimizer, scheduler, rng) -> None:
        """Everything ``--resume`` needs to continue after ``epoch`` exactly as an uninterrupted run."""
        state = {
            "epoch": epoch,
            "step": step,
            "best": best,
            "saved": [str(p) for p in saved],
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "shuffle": rng.getstate(),
            "rng": rng_state(),
            "args": json.loads(json.dumps(vars(self.args), default=str)),
        }
        atomic_write(self.state_path, lambda f: torch.save(state, f))

    def _load_state(self, optimizer, scheduler, rng):
        state = read_saved_state(self.state_path, UNREADABLE_STATE_FIX)
        conflicts = flag_changes(state["args"], self.args, ADORE_RESUMABLE_FLAGS, ADORE_PATH_FLAGS)
        if conflicts:
            raise SeDRInputError(
                f"--resume from {self.state_path}: the saved state fixes these flags; rerun with "
                f"the saved values or start again with --overwrite_output_dir: {'; '.join(conflicts)}"
            )
        self.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.setstate(state["shuffle"])
        set_rng_state(state["rng"])
        logger.info(
            "resuming ADORE after epoch %d (step %d) from %s", state["epoch"], state["step"], self.state_path
        )
        return state["epoch"], state["step"], state["best"], [Path(p) for p in state["saved"]]

    def _log(self, window, step, lr, bar):
        loss, mrr, rec = (float(np.mean([w[i] for w in window])) for i in range(3))
        bar.set_postfix(loss=f"{loss:.4f}", mrr=f"{mrr:.3f}")
        logger.info(
            "step %d | lr %.3e | loss %.5f | train MRR@100 %.4f | R@100 %.4f", step, lr, loss, mrr, rec
        )
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

        def write(folder: Path) -> None:
            save_pretrained(self.model, folder)
            self.evaluate(name, rankings, out_dir=folder)  # run files + metrics.json beside the weights

        atomic_save_dir(target, write)
        print(format_results_table(ev.metrics))
        saved.append(target)
        return score
