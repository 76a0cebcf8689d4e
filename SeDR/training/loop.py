"""The training loop (docs/training.md): segment-budget micro-batches, LAMB, warm-up + linear decay,
gradient accumulation with per-micro-step clipping in every precision, per-epoch checkpoints and an
exact ``--resume``. Where it differs from the original, and why: docs/deviations.md (``--model_class``
honoured, real mixed precision, gradient checkpointing, rows grouped by width, owned outputs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from SeDR.core.constants import TRAINING_ARGS
from SeDR.core.errors import DataFormatError, SeDRInputError
from SeDR.core.outputs import (
    BACKUP,
    KEEP,
    RECORDED,
    REFUSE,
    RUN_FOLDER,
    Claim,
    atomic_save_dir,
    check_saved_state,
    claim,
    ensure_writable,
    flag_changes,
    read_saved_state,
)
from SeDR.core.progress import progress
from SeDR.core.runtime import Precision, loader_workers, rng_state, set_rng_state
from SeDR.data import collation, preprocess_folder, segmentation
from SeDR.data.sampling import ItemDataset, SegmentBudgetBatchSampler, without_hard_negatives
from SeDR.data.segmentation import SegmentSpec
from SeDR.modeling import TrainOutput, load_weights_into, save_pretrained
from SeDR.modeling.checkpoint import model_fingerprint
from SeDR.modeling.cross_device import globalize_batch
from SeDR.modeling.longformer import MODEL_CLASS_NAME as LONGFORMER_CLASS
from SeDR.retrieval.hard_negatives import load_hard_negatives
from SeDR.training.optimizers import build_optimizer, linear_schedule_with_warmup, total_training_steps

logger = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pt"
TRAIN_HISTORY = "train_history.json"


def checkpoint_name(
    epoch: int, max_seg_length: int, max_seg_num: int, max_bsize: int, model_class: str, postfix: str = ""
) -> str:
    """``epoch-{e}-{Lraw}-{M}-{max_bsize}-{class}{postfix}``, e.g. ``epoch-4-512-4-17-SeDR``
    (docs/training.md#checkpoint-names)."""
    return f"epoch-{epoch}-{max_seg_length}-{max_seg_num}-{max_bsize}-{model_class}{postfix}"


def run_checkpoint_name(args, epoch: int) -> str:
    """The checkpoint folder name of ``epoch`` for a run's flags (SeDR-Longformer names its row length)."""
    length = args.max_doc_length if args.model_class == LONGFORMER_CLASS else args.max_seg_length
    return checkpoint_name(epoch, length, args.max_seg_num, args.max_bsize, args.model_class, args.postfix)


def existing_checkpoints(output_dir: Path, name_of_epoch) -> dict[int, Path]:
    """Epoch → folder of this run's checkpoints already in ``output_dir``."""
    suffix = name_of_epoch(0)[len("epoch-0") :]
    pattern = re.compile(r"^epoch-(\d+)" + re.escape(suffix) + "$")
    found = {}
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            m = pattern.match(p.name)
            if m and p.is_dir():
                found[int(m.group(1))] = p
    return found


# Flags a resumed run may change; every other flag (and recorded fact) is fixed by the saved state
# (docs/training.md#resume-flags).
RESUMABLE_FLAGS = frozenset(
    {
        "resume",
        "overwrite_output_dir",
        "epochs_to_run",
        "logging_steps",
        "logging_dir",
        "no_cuda",
        "local_rank",
        "use_gradient_checkpointing",
        "num_workers",
        "ddp_timeout",
    }
)


# Flags naming files or folders: compared on --resume by what they hold, not by their spelling. The run
# folder may have moved; the preprocess folder and hard negatives have recorded fingerprints.
PATH_FLAGS = {
    "output_dir": RUN_FOLDER,
    "preprocess_dir": RECORDED,
    "hardneg_path": RECORDED,
    "init_path": model_fingerprint,
}
# How to get past a saved state that cannot be read.
UNREADABLE_STATE_FIX = (
    "restore the file, or train again with --overwrite_output_dir "
    "(the run's checkpoints move to a dated backup)"
)


def claim_output_dir(args, name_of_epoch) -> Claim:
    """Before any long work: lock this run's checkpoints in ``--output_dir`` and settle what is already there.

    Existing checkpoints of the run are refused unless ``--resume`` (whose fixed flags must equal the
    saved ones, and whose saved state must be readable) or ``--overwrite_output_dir`` (which moves them
    to a dated backup folder first).
    """
    out = Path(args.output_dir)
    run = name_of_epoch(0)[len("epoch-0-") :]

    def earlier() -> list[Path]:
        return [p for _, p in sorted(existing_checkpoints(out, name_of_epoch).items())]

    held = claim(
        out,
        lock_in=out,
        lock_name=run,
        earlier=earlier,
        when_taken=BACKUP if args.overwrite_output_dir else KEEP if args.resume else REFUSE,
        refusal=lambda found: (
            f"{found[-1]} already exists: pass --resume to continue this run, or "
            "--overwrite_output_dir to train again (its checkpoints are moved to a dated backup)"
        ),
        backup_folder=out / run,
        what="checkpoints",
    )
    try:
        if held.backup is not None:
            logger.warning(
                "--overwrite_output_dir: moved the earlier checkpoints of this run (%s) to %s",
                ", ".join(p.name for p in sorted(held.earlier)),
                held.backup,
            )
        elif held.earlier:
            resumable = [p for p in held.earlier if (p / TRAINING_STATE).exists()]
            if resumable:
                check_saved_state(resumable[-1] / TRAINING_STATE, UNREADABLE_STATE_FIX)
            if resumable and (resumable[-1] / TRAINING_ARGS).exists():
                conflicts = flag_changes(
                    json.loads((resumable[-1] / TRAINING_ARGS).read_text()),
                    args,
                    RESUMABLE_FLAGS,
                    PATH_FLAGS,
                )
                if conflicts:
                    raise SeDRInputError(
                        f"--resume from {resumable[-1]}: the saved state fixes these flags; "
                        f"rerun with the saved values or start a new run: {'; '.join(conflicts)}"
                    )
    except BaseException:
        held.release()
        raise
    return held


@dataclass
class TrainData:
    """Everything the loop reads, loaded once."""

    passages: preprocess_folder.TokenCache
    queries: preprocess_folder.TokenCache
    rel: dict[int, list[int]]
    hard_negatives: dict[int, list[int]]
    spec: SegmentSpec
    seg_counts: np.ndarray

    @property
    def query_offsets(self) -> list[int]:
        return sorted(self.rel)


def load_train_data(preprocess_dir, hardneg_path, spec: SegmentSpec, split: str = "train") -> TrainData:
    """The corpus, the ``split`` queries with their relevant documents (queries with none are left out),
    and the hard negatives of every such query."""
    passages = preprocess_folder.passages(preprocess_dir)
    queries = preprocess_folder.queries(preprocess_dir, split)
    rel = preprocess_folder.load_rel(Path(preprocess_dir) / f"{split}-qrel.tsv")
    if len(rel) < len(queries):
        logger.info(
            "%d of the %d %s queries have no relevant document (rel >= 1) and are not trained on",
            len(queries) - len(rel),
            len(queries),
            split,
        )
    hard = load_hard_negatives(hardneg_path, num_docs=len(passages))
    if problem := without_hard_negatives(sorted(rel), hard):
        raise DataFormatError(hardneg_path, None, problem)
    seg_counts = np.asarray(segmentation.num_segments(passages.lengths, spec), dtype=np.int64)
    return TrainData(passages, queries, rel, hard, spec, seg_counts)


def _running_sum(device: torch.device) -> torch.Tensor:
    """A float64 sum kept on the device: adding a step's loss is no host sync, and the float64
    total equals the sum of the values read one by one (``.item()``), as the logs had it."""
    return torch.zeros((), dtype=torch.float64, device=device)


def _fresh_window(device: torch.device) -> dict:
    """Running sums between two log lines."""
    return {
        "loss": _running_sum(device),
        "acc": _running_sum(device),
        "docs": 0,
        "n": 0,
        "t": time.time(),
        "segs": 0,
    }


def uses_no_sync(args, world_size: int) -> bool:
    """Whether DDP skips the all-reduce (``no_sync``) on the micro-steps of an accumulation cycle but
    its last: only when nothing reads the partial sum in between. The clip after every micro-step
    reads it (its coefficient comes from the norm of the sum averaged over the ranks), so with
    clipping on every micro-step syncs, as before (docs/distributed.md#ddp-no-sync)."""
    return world_size > 1 and args.gradient_accumulation_steps > 1 and args.max_grad_norm == -1


class _TupleOutput(torch.nn.Module):
    """DDP's static-graph mode hooks the tensors it finds in the forward output; a dataclass hides them."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch, cache=None, negatives_x_device=False):
        out = self.model(batch, cache=cache, negatives_x_device=negatives_x_device)
        return out.loss, out.accuracy, out.num_rows


class Trainer:
    """Runs the README training commands. ``args`` is the namespace of
    :func:`SeDR.cli.flags.build_train_parser`."""

    def __init__(
        self,
        args,
        model,
        train_data: TrainData,
        device: torch.device,
        precision: Precision,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.args, self.model, self.data = args, model, train_data
        self.device, self.precision = device, precision
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.output_dir = Path(args.output_dir)
        self.epochs_to_run = args.epochs_to_run or args.num_train_epochs
        special = model.special_ids
        self.sampler = SegmentBudgetBatchSampler(
            train_data.query_offsets,
            train_data.rel,
            train_data.hard_negatives,
            train_data.seg_counts,
            max_bsize=args.max_bsize,
            hardneg_topk=args.hardneg_topk,
            seed=args.seed,
            rank=rank,
            world_size=world_size,
        )
        # Under torchrun: gradients are averaged over ranks; each rank keeps its own Late-Cache.
        # static_graph lets classes that never read some parameters (E_seg of the MaxP-style
        # classes) work with non-reentrant checkpointing, which find_unused_parameters does not.
        self.forward_model = model
        # Cross-device negatives only mean something with several ranks (SeDR.modeling.cross_device).
        self.negatives_x_device = args.negatives_x_device and world_size > 1
        if args.negatives_x_device and world_size == 1:
            logger.warning(
                "--negatives_x_device has no effect in a single process (one rank's batch is all there is)"
            )
        if world_size > 1:
            self.forward_model = DistributedDataParallel(
                _TupleOutput(model),
                device_ids=[device.index] if device.type == "cuda" else None,
                static_graph=True,
            )
        self.no_sync = uses_no_sync(args, world_size)
        self.num_workers = loader_workers(args.num_workers, device)
        self.collator = collation.TrainCollator(
            train_data.passages,
            train_data.queries,
            train_data.rel,
            train_data.spec,
            max_query_length=args.max_query_length,
            max_bsize=args.max_bsize,
            row_groups=True,
            **special,
        )
        self.optimizer = build_optimizer(
            args.optimizer_str,
            model,
            lr=args.learning_rate,
            weight_decay=args.weight_decay,
            eps=args.adam_epsilon,
            betas=(args.adam_beta1, args.adam_beta2),
        )
        self.total_steps = total_training_steps(
            len(train_data.query_offsets),
            args.num_train_epochs,
            self.schedule_seg_num(),
            args.max_bsize,
            args.gradient_accumulation_steps,
        )
        self.scheduler = linear_schedule_with_warmup(self.optimizer, args.warmup_steps, self.total_steps)
        self.cache = model.new_cache()
        self.global_step = 0  # optimizer steps taken (= the scheduler's position)
        self.skipped_steps = 0  # steps the GradScaler skipped (inf/nan gradients)
        self.start_epoch = 0
        self.writer = None
        self.history: list[dict] = []  # per-epoch means, saved in every checkpoint (train_history.json)
        self.saved: list[Path] = []  # checkpoint folders written by this run (rank 0)

    def schedule_seg_num(self) -> int:
        """``M`` in the schedule horizon (docs/training.md#schedule-horizon);
        SeDR-Longformer's trainer omits it."""
        return self.args.max_seg_num

    # ---------------------------------------------------------------- checkpoints
    def name_of_epoch(self, epoch: int) -> str:
        return run_checkpoint_name(self.args, epoch)

    def check_space(self) -> None:
        """A checkpoint (weights + resumable state: optimizer moments and leftover gradients) must fit."""
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        ensure_writable(self.output_dir, need_bytes=4 * weights, what="the next checkpoint")

    def rank_state(self) -> dict:
        """What differs between ranks: the Late-Cache and the random generators (the CPU's and the
        GPU this rank uses)."""
        return {
            "device": str(self.device),
            "rng": rng_state(self.device),
            "cache": None if self.cache is None else self.cache.state_dict(),
        }

    def save_epoch(self, epoch: int) -> Path | None:
        """Every rank hands its own state to rank 0, which writes the checkpoint folder (returned on
        rank 0; ``None`` elsewhere). One file, renamed into place with the folder, holds every rank's
        part, so no crash can leave ranks' states of different epochs (docs/training.md#resume)."""
        mine = self.rank_state()
        ranks = [mine]
        if self.world_size > 1:
            ranks = [None] * self.world_size if self.is_main else None
            dist.gather_object(mine, ranks, dst=0)
        if not self.is_main:
            return None
        target = self.output_dir / self.name_of_epoch(epoch)
        state = {
            "epoch": epoch,
            "global_step": self.global_step,
            "skipped_steps": self.skipped_steps,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None if self.precision.scaler is None else self.precision.scaler.state_dict(),
            "world_size": self.world_size,
            "ranks": ranks,  # rank r's rank_state() at index r
            # Averaged over the ranks at the epoch's last micro-step, so equal on every rank.
            "leftover_grads": {
                n: p.grad.detach().cpu() for n, p in self.model.named_parameters() if p.grad is not None
            },
        }

        def write(folder: Path):
            save_pretrained(self.model, folder)
            args = {k: v for k, v in vars(self.args).items()}
            (folder / TRAINING_ARGS).write_text(json.dumps(args, indent=2, sort_keys=True, default=str))
            (folder / TRAIN_HISTORY).write_text(json.dumps(self.history, indent=2))
            torch.save(state, folder / TRAINING_STATE)

        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_save_dir(target, write)
        # Only the newest checkpoint keeps the (large) resumable state.
        for e, folder in existing_checkpoints(self.output_dir, self.name_of_epoch).items():
            if e != epoch and (folder / TRAINING_STATE).exists():
                (folder / TRAINING_STATE).unlink()
        logger.info("saved %s", target)
        return target

    def try_resume(self) -> None:
        found = {
            e: p
            for e, p in existing_checkpoints(self.output_dir, self.name_of_epoch).items()
            if (p / TRAINING_STATE).exists()
        }
        if not found:
            logger.info(
                "--resume: no checkpoint of this run in %s; starting from --init_path", self.output_dir
            )
            return
        epoch = max(found)
        folder = found[epoch]
        logger.info("resuming from %s", folder)
        load_weights_into(self.model, folder)
        state = read_saved_state(folder / TRAINING_STATE, UNREADABLE_STATE_FIX)
        saved_world = int(state.get("world_size", len(state.get("ranks", [None]))))
        if "ranks" in state and saved_world != self.world_size:
            raise SeDRInputError(
                f"--resume from {folder}: it was saved by {saved_world} processes and this run has "
                f"{self.world_size}; resume with {saved_world} (each rank continues its own Late-Cache "
                "and random state) or start a new run"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.precision.scaler is not None and state["scaler"] is not None:
            self.precision.load_scaler_state(state["scaler"])
        params = dict(self.model.named_parameters())
        for n, g in state["leftover_grads"].items():
            params[n].grad = g.to(params[n].device)
        self.restore_rank_state(state, folder)
        self.global_step = state["global_step"]
        self.skipped_steps = state.get("skipped_steps", 0)
        self.start_epoch = epoch
        if (folder / TRAIN_HISTORY).exists():
            self.history = json.loads((folder / TRAIN_HISTORY).read_text())

    def restore_rank_state(self, state: dict, folder: Path) -> None:
        """This rank's Late-Cache and random generators, from its own part of the saved state."""
        if "ranks" in state:
            mine = state["ranks"][self.rank]
        else:  # written before the per-rank layout: rank 0's state only
            mine = {"rng": state["rng"], "cache": state["cache"]}
            if self.world_size > 1:
                logger.warning(
                    "%s holds the state of rank 0 only (an earlier layout): every rank restores it, "
                    "so this resume is not exact",
                    folder / TRAINING_STATE,
                )
        if self.cache is not None and mine["cache"] is not None:
            self.cache.load_state_dict(mine["cache"])
        set_rng_state(mine["rng"], self.device)

    # ---------------------------------------------------------------- loop
    def log_header(self) -> None:
        a = self.args
        n_q = len(self.data.query_offsets)
        logger.info("***** Running training: %s *****", a.model_class)
        logger.info(
            "  queries %d | documents %d | segments %d (M=%d, L=%d)",
            n_q,
            len(self.data.passages),
            int(self.data.seg_counts.sum()),
            a.max_seg_num,
            self.data.spec.content_len,
        )
        logger.info(
            "  micro-batches in epoch 1: %d | accumulation %d | epochs run %d of %d",
            len(self.sampler),
            a.gradient_accumulation_steps,
            self.epochs_to_run,
            a.num_train_epochs,
        )
        logger.info(
            "  schedule horizon: %d optimizer steps, warm-up %d, peak lr %g, %s, %s",
            self.total_steps,
            a.warmup_steps,
            a.learning_rate,
            a.optimizer_str,
            self.precision.name,
        )
        if self.world_size > 1:
            logger.info(
                "  %d processes; gradients averaged %s",
                self.world_size,
                "at the last micro-step of each accumulation cycle (no_sync before)"
                if self.no_sync
                else "after every micro-step (the clip after every micro-step reads the average)",
            )

    def _clip(self) -> None:
        if self.args.max_grad_norm != -1:
            self.precision.clip_(self.model.parameters(), self.args.max_grad_norm)

    def _optimizer_step(self) -> None:
        """The schedule advances only on steps the optimizer took (the GradScaler skips inf/nan ones)."""
        if self.precision.step(self.optimizer):
            self.scheduler.step()
            self.global_step += 1
        else:
            self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)

    def micro_step(self, batch, sync: bool = True) -> TrainOutput:
        """Forward, backward (gradients added to the accumulation) and the clip of one micro-batch;
        ``sync=False`` skips DDP's all-reduce (``no_sync``: the next synced micro-step averages the
        whole local sum)."""
        skip = not sync and self.world_size > 1
        with self.forward_model.no_sync() if skip else contextlib.nullcontext():
            with self.precision.autocast():
                out = self.forward_model(batch, cache=self.cache, negatives_x_device=self.negatives_x_device)
                if isinstance(out, tuple):
                    out = TrainOutput(*out)
            loss = out.loss
            if self.args.gradient_accumulation_steps > 1:
                loss = loss / self.args.gradient_accumulation_steps
            self.precision.backward(loss)
        self._clip()  # every micro-step, on the partial accumulation, in every precision
        return out

    def train(self) -> list[Path]:
        a = self.args
        if a.resume:
            self.try_resume()
        if self.is_main:
            self.writer = tensorboard_writer(
                Path(a.logging_dir) / self.name_of_epoch(0).replace("epoch-0-", "")
            )
            self.log_header()
        # Workers collate the next micro-batches while the model runs (pinned for an asynchronous
        # copy to the GPU); the plan is the sampler's either way, so results do not depend on them.
        # A new iterator every epoch (no persistent workers) draws the loader's seed from torch's
        # generator every epoch, as the in-line loader does: dropout draws stay the same too.
        loader = torch.utils.data.DataLoader(
            ItemDataset(),
            batch_sampler=self.sampler,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        accum = a.gradient_accumulation_steps
        saved: list[Path] = self.saved
        self.model.train()
        for epoch in range(self.start_epoch, self.epochs_to_run):
            self.sampler.set_epoch(epoch)
            window = _fresh_window(self.device)
            epoch_loss, epoch_acc = _running_sum(self.device), _running_sum(self.device)
            epoch_batches, t_epoch = 0, time.time()
            n_micro = len(self.sampler)
            bar = progress(
                loader,
                total=n_micro,
                desc=f"epoch {epoch + 1}/{self.epochs_to_run}",
                unit="batch",
                enabled=self.is_main,
            )
            for micro_step, batch in enumerate(bar):
                if self.negatives_x_device:
                    batch = globalize_batch(batch, self.data.rel)  # masks over every rank's documents
                batch = batch.to(self.device)
                steps = (micro_step + 1) % accum == 0
                # The epoch's last micro-step syncs too: leftover gradients are then equal on every rank.
                out = self.micro_step(batch, sync=not self.no_sync or steps or micro_step + 1 == n_micro)
                if steps:
                    self._optimizer_step()
                loss_value, acc_value = out.loss.detach(), out.accuracy.detach()  # read at log lines only
                window["loss"] += loss_value
                window["acc"] += acc_value
                epoch_loss += loss_value
                epoch_acc += acc_value
                epoch_batches += 1
                window["docs"] += batch.num_queries
                window["segs"] += batch.positives.num_segments + batch.negatives.num_segments
                window["n"] += 1
                if self.is_main and (micro_step + 1) % a.logging_steps == 0:
                    self._log(window, micro_step, bar)
                    window = _fresh_window(self.device)
            self.history.append(
                {
                    "epoch": epoch + 1,
                    "mean_loss": float(epoch_loss) / max(epoch_batches, 1),
                    "mean_accuracy": float(epoch_acc) / max(epoch_batches, 1),
                    "micro_batches": epoch_batches,
                    "optimizer_steps": self.global_step,
                    "skipped_steps": self.skipped_steps,
                    "seconds": time.time() - t_epoch,
                }
            )
            if self.is_main:
                if window["n"]:
                    self._log(window, micro_step, bar)
                if self.writer is not None:
                    self.writer.add_scalar("epoch/mean_loss", self.history[-1]["mean_loss"], epoch + 1)
            folder = self.save_epoch(epoch + 1)  # every rank hands its state to rank 0
            if folder is not None:
                saved.append(folder)
        if self.writer is not None:
            self.writer.close()
        return saved

    def _log(self, w: dict, micro_step: int, bar) -> None:
        n = max(w["n"], 1)
        lr = self.scheduler.get_last_lr()[0]
        elapsed = max(time.time() - w["t"], 1e-9)
        loss, acc = float(w["loss"]) / n, float(w["acc"]) / n  # the host reads the device sums here
        docs_per_step = w["docs"] / n * self.args.gradient_accumulation_steps
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", lr=f"{lr:.2e}")
        logger.info(
            "step %d | lr %.3e | docs/step %.1f | loss %.5f | acc %.4f | %.1f seg/s",
            self.global_step + 1,
            lr,
            docs_per_step,
            loss,
            acc,
            w["segs"] / elapsed,
        )
        if self.writer is not None:
            step = self.global_step
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/accuracy", acc, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/docs_per_step", docs_per_step, step)
            self.writer.add_scalar("train/segments_per_second", w["segs"] / elapsed, step)
            if self.cache is not None:
                self.writer.add_scalar("train/cache_fill", len(self.cache), step)


def tensorboard_writer(log_dir: Path):
    """A TensorBoard writer, or None (one warning) where TensorBoard is not installed, as on a bare
    CUDA torch image: training needs torch, transformers and numpy only; the log lines stay."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when training
    except ImportError:
        logger.warning(
            "TensorBoard is not installed: no training curves in --logging_dir (pip install tensorboard)"
        )
        return None
    return SummaryWriter(log_dir=str(log_dir))


class LongformerTrainer(Trainer):
    """:class:`Trainer` with SeDR-Longformer's schedule horizon (no factor ``M``)."""

    def schedule_seg_num(self) -> int:
        return 1  # 367,013·25/(7·4) -> 327,690 steps for the README run


def warn_if_positives_in_hard_negatives(train_data: TrainData, n_check: int = 1000) -> None:
    """The original asserted on query 0; we check a sample and warn instead
    (docs/deviations.md#dev-hardneg-check)."""
    bad = 0
    for q in train_data.query_offsets[:n_check]:
        if set(train_data.rel[q]) & set(train_data.hard_negatives.get(q, [])[:200]):
            bad += 1
    if bad:
        logger.warning(
            "%d of the first %d training queries have a positive among their hard negatives "
            "(masked in the loss; regenerate hard negatives?)",
            bad,
            min(n_check, len(train_data.rel)),
        )
