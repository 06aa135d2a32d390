"""The training loop, readable top to bottom: data → tokenizer → model → steps → validation → checkpoints.

Resuming is exact: the data order is a pure function of (seed, epoch) and the checkpoint stores the
position inside the epoch, the optimizer, the scheduler and every RNG state, so N steps and a resume
for N more give the same weights as 2N steps straight.

Under torchrun the same loop runs in every process (see translator/distributed.py): each rank trains on
its shard of the epoch's batches, DDP averages the gradients, and rank 0 alone validates, logs and
writes files; decisions that change training (the plateau schedule, early stopping, stopping on the
time budget or Ctrl-C) are taken from values all ranks share, so the replicas never diverge.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from translator import distributed
from translator.checkpoint import load_checkpoint, load_weights, save_checkpoint, weights_checksum
from translator.config import SCORE_PREFIXES, Config, ConfigError, DataConfig, config_from_dict, save_config
from translator.data import (Batch, Example, clean_pairs, collate, drop_words, load_training_data, make_batches,
                             make_examples)
from translator.evaluation import is_accepted, score_corpus
from translator.io import atomic_write_text
from translator.model import Seq2Seq, build_model, count_parameters
from translator.phrases import phrase_examples, read_glossary, read_phrase_corpus
from translator.plots import plot_training_curves
from translator.search import decode
from translator.tokenizer import Tokenizer

log = logging.getLogger("translator.training")

# Sections that define the model; they must match the checkpoint when resuming with a new config.
FROZEN_SECTIONS = ("data", "tokenizer", "model")
# Training settings a resume cannot honour: the restored optimizer/scheduler state would silently
# override them (or fail to load), or they define the data split, batch order and best score.
_OPTIMIZER_STATE = "the optimizer and scheduler state restored from the checkpoint fix it"
FROZEN_TRAINING = {
    "seed": "it fixes the dev split and the batch order",
    "scheduler": _OPTIMIZER_STATE,
    "learning_rate": _OPTIMIZER_STATE,
    "betas": _OPTIMIZER_STATE,
    "weight_decay": _OPTIMIZER_STATE,
    "plateau_factor": _OPTIMIZER_STATE,
    "plateau_patience": _OPTIMIZER_STATE,
    "min_learning_rate": _OPTIMIZER_STATE,
    "best_metric": "the best score and patience so far are counted in it",
}


@dataclass
class EncodedSet:
    """Examples with their token ids, ready to batch."""

    examples: list[Example]
    sources: list[list[int]]
    targets: list[list[int]]

    @property
    def lengths(self) -> list[tuple[int, int]]:
        return [(len(s), len(t) + 1) for s, t in zip(self.sources, self.targets)]

    def batch(self, indices: list[int], tokenizer: Tokenizer, context_word_dropout: float = 0.0,
              rng: Optional[random.Random] = None) -> Batch:
        """The examples at `indices` as a padded batch; with `context_word_dropout`, context words drawn
        from `rng` become <unk> (`drop_words`)."""
        sources = [self.sources[i] for i in indices]
        if context_word_dropout > 0:
            if rng is None:
                raise ValueError("context word dropout needs a random stream (rng)")
            sources = [drop_words(s, tokenizer.context_words(s), context_word_dropout, rng, tokenizer.unk_id)
                       for s in sources]
        return collate(
            sources,
            [self.targets[i] for i in indices],
            tokenizer.pad_id,
            tokenizer.bos_id,
            tokenizer.eos_id,
            indices,
        )


def encode_examples(examples: list[Example], tokenizer: Tokenizer, max_tokens: int,
                    context_encoding: str = "separator") -> EncodedSet:
    """Tokenize examples, dropping those whose source or target is longer than `max_tokens` pieces."""
    kept = EncodedSet([], [], [])
    for example in examples:
        source = tokenizer.encode_source(example.src, example.tgt_lang, example.context or None, context_encoding)
        target = tokenizer.encode_target(example.tgt)
        if len(source) <= max_tokens and len(target) + 1 <= max_tokens and target:
            kept.examples.append(example)
            kept.sources.append(source)
            kept.targets.append(target)
    return kept


def load_examples(data: DataConfig, seed: int) -> tuple[list[Example], list[Example]]:
    """All training and dev examples: parallel corpora (each direction), glossary pairs and the
    phrase corpus (repeated `phrase_repeat` times). Dev examples never appear in training."""
    directions = data.directions
    train: list[Example] = []
    dev: list[Example] = []
    if data.train:
        train_pairs, dev_pairs = load_training_data(data, seed)
        train += make_examples(train_pairs, directions)
        dev += make_examples(dev_pairs, directions)
    rows = [row for spec in data.phrases for row in read_phrase_corpus(spec)]
    if data.glossary:
        # Words the phrase corpus teaches sense by sense stay out of the glossary.
        ambiguous = {row.word.lower() for row in rows if row.word}
        glossary = [pair for spec in data.glossary for pair in read_glossary(spec, ambiguous, ambiguous)]
        train += make_examples(clean_pairs(glossary, data.max_chars), directions)
    phrases = phrase_examples(rows, directions, data.reverse_phrases, data.lowercase, data.context_windows)
    dev_rows = [row for spec in data.phrases_dev for row in read_phrase_corpus(spec)]
    dev += phrase_examples(dev_rows, directions, reverse_plain=False, lowercase=data.lowercase)
    train += phrases * data.phrase_repeat
    held_out = set(dev)
    train = [example for example in train if example not in held_out]
    if not dev:
        raise ConfigError("data: no dev examples (give data.dev, data.phrases_dev, or data.train to split)")
    return train, dev


@dataclass
class TrainingState:
    """Everything besides weights and optimizer that `--resume` needs."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained on
    best_score: float = -1.0  # best dev value of training.best_metric
    validations_without_improvement: int = 0
    best_checkpoints: list[list[Any]] = field(default_factory=list)  # [score, step, filename]
    last_validated_step: int = -1


def sequence_loss(logits: torch.Tensor, batch: Batch, label_smoothing: float, pad_id: int,
                  n_tokens: Optional[int] = None) -> torch.Tensor:
    """Mean token cross-entropy (with label smoothing) over the non-pad target tokens; divided by
    `n_tokens` instead of the batch's own count when given (the global count under DDP)."""
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),  # bf16 logits (mixed precision): the loss in float32
        batch.tgt_out.reshape(-1),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    return loss / max(batch.n_tokens if n_tokens is None else n_tokens, 1)


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def precision_context(precision: str, device: torch.device) -> Callable[[], AbstractContextManager[Any]]:
    """What train_step runs the forward pass under: nothing (float32) or bf16 autocast."""
    if precision == "float32":
        return contextlib.nullcontext
    if device.type == "cpu" and not cpu_has_bf16():
        # Without native bf16 the casts are emulated and training gets slower, not faster.
        raise ConfigError("training.precision: bfloat16 needs a CPU with bf16 instructions (AVX512-BF16 or AMX); "
                          "this one has none, use float32")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("training.precision: bfloat16 needs a GPU with bf16 support (Ampere or newer); use float32")
    return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)


def limit_onednn_caches() -> None:
    """oneDNN and torch's ideep layer over it cache a primitive (with its own copy of the weights,
    bf16 ones under mixed precision) per batch shape, up to 1,024 each by default; bucketed batches
    have hundreds of shapes. Measured on the benchmark model's 5-minute bf16 run: peak RSS 1,385 →
    808 MB at the same speed (float32, 54 steps: 857 → 810 MB). Read when oneDNN first runs; the
    user's values win."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    os.environ.setdefault("LRU_CACHE_CAPACITY", "64")


def build_optimizer(model: Seq2Seq, config: Config) -> torch.optim.Optimizer:
    t = config.training
    # fused: one kernel over all parameters; measured ~4x faster per step than the default foreach Adam
    # on CPU (7 of ~113 ms per benchmark step before).
    return torch.optim.Adam(model.parameters(), lr=t.learning_rate, betas=t.betas, weight_decay=t.weight_decay, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, config: Config) -> Optional[Any]:
    t = config.training
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=t.plateau_factor, patience=t.plateau_patience, min_lr=t.min_learning_rate
        )
    if t.scheduler == "warmup":
        floor = t.min_learning_rate / t.learning_rate

        def warmup_then_inverse_sqrt(step: int) -> float:
            step += 1
            return max(floor, min(step / t.warmup_steps, math.sqrt(t.warmup_steps / step)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_inverse_sqrt)
    return None


def rng_states(device: Optional[torch.device] = None) -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device is not None and device.type == "cuda":  # dropout on a GPU draws from the GPU's generator
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(_as_tuple(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"].cpu())


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class Trainer:
    def __init__(self, config: Config, output_dir: Path, resume: Optional[dict[str, Any]] = None,
                 init: Optional[dict[str, Any]] = None, dist: distributed.Context = distributed.SINGLE):
        self.config, self.output_dir, self.dist, self.device = config, output_dir, dist, dist.device
        t = config.training
        torch.set_num_threads(distributed.threads_per_rank(t.num_threads, dist))
        limit_onednn_caches()
        random.seed(t.seed)
        torch.manual_seed(t.seed)

        train_examples, dev_examples = load_examples(config.data, t.seed)
        if t.best_metric == "sense" and not any(e.context for e in dev_examples):
            raise ConfigError("training.best_metric: sense needs dev rows with a context (data.phrases_dev)")
        start = resume if resume is not None else init
        if start is not None:  # the vocabulary is part of the weights: keep the checkpoint's
            self.tokenizer = Tokenizer.from_proto(start["tokenizer"])
        else:
            texts = [text for e in train_examples for text in (e.src, e.tgt, e.context) if text]
            if dist.is_main:
                self.tokenizer = Tokenizer.train(texts, config.tokenizer, seed=t.seed)
            if dist.enabled:  # trained once, by rank 0: every rank must use the very same vocabulary
                self.tokenizer = Tokenizer.from_proto(dist.broadcast(self.tokenizer.proto if dist.is_main else None))
        encoding = config.data.context_encoding
        self.train_set = encode_examples(train_examples, self.tokenizer, config.data.max_tokens, encoding)
        self.dev_set = encode_examples(dev_examples, self.tokenizer, 10**9, encoding)
        if not self.train_set.examples:
            raise ConfigError(f"data.max_tokens: {config.data.max_tokens} leaves no training example")

        self.model = build_model(config.model, self.tokenizer.vocab_size, self.tokenizer.pad_id, seed=t.seed).to(self.device)
        if dist.rank > 0:  # the same initial weights on every rank, but each its own dropout masks
            torch.manual_seed(t.seed + dist.rank)
        self.autocast = precision_context(t.precision, self.device)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.state = TrainingState()
        if resume is not None:
            self._restore(resume)
        elif init is not None:  # warm start: the weights only; optimizer, schedule and data order start fresh
            load_weights(self.model, init["model"], "--init-from checkpoint")
        # What train_step calls: DDP (gradients averaged across ranks in backward) or the model itself.
        # Validation, decoding and saving use the bare model.
        self.train_model = distributed.wrap_model(self.model, dist)
        self.replica_checksums: list[str] = []  # every rank's weights checksum at the last save (DDP)
        self.step_tokens = 0  # target tokens of the last step, over all ranks
        self.stop_requested = False
        self.stop_requested_at = 0.0
        self.writer = None

    # --- checkpoints -------------------------------------------------------------------------
    def _restore(self, payload: dict[str, Any]) -> None:
        training = payload.get("training")
        if not training:
            raise ConfigError("--resume: this checkpoint has no training state (it is an inference-only model)")
        load_weights(self.model, payload["model"], "--resume checkpoint")
        self.optimizer.load_state_dict(training["optimizer"])
        if self.scheduler is not None and training.get("scheduler") is not None:
            self.scheduler.load_state_dict(training["scheduler"])
        self.state = TrainingState(**training["state"])
        saved_world = training.get("world_size", 1)
        if saved_world == self.dist.world_size:  # exact: each rank continues its own random streams
            per_rank = training.get("rng_per_rank")
            restore_rng_states(per_rank[self.dist.rank] if per_rank else training["rng"])
            return
        # Another number of processes shards the epoch differently: continue after about as many
        # batches, with rank 0's random state (ranks > 0 reseeded). Not bitwise exact.
        log.warning("--resume: the checkpoint was written by %d process(es) and this run has %d: the position in "
                    "the epoch and the random states are approximated, so the run is not bitwise exact",
                    saved_world, self.dist.world_size)
        consumed = self.state.batch_in_epoch * saved_world
        self.state.batch_in_epoch = -(-consumed // self.dist.world_size)
        restore_rng_states(training["rng"])
        if self.dist.rank > 0:
            torch.manual_seed(self.config.training.seed + self.dist.rank + self.state.step)

    def save(self, name: str) -> Path:
        """Write a checkpoint (rank 0 writes). Under DDP every rank calls this at the same step: it gathers
        each rank's random state (so --resume is exact per rank) and checks the replicas are identical."""
        path = self.output_dir / name
        training = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "state": self.state.__dict__.copy(),
            "rng": rng_states(self.device),
        }
        if self.dist.enabled:
            checksum = weights_checksum(self.model.state_dict())
            gathered = self.dist.gather({"rng": training["rng"], "weights": checksum})
            self.replica_checksums = [item["weights"] for item in gathered]
            distributed.check_replicas(self.replica_checksums)
            training["rng_per_rank"] = [item["rng"] for item in gathered]
            training["world_size"] = self.dist.world_size
        if not self.dist.is_main:
            return path
        metrics = {"step": self.state.step, "best_metric": self.config.training.best_metric,
                   "best_score": self.state.best_score}
        save_checkpoint(path, self.model.state_dict(), self.config.to_dict(), self.tokenizer.proto, training, metrics)
        return path

    def _keep_best(self, score: float) -> None:
        """Keep the N best step checkpoints by dev `best_metric`."""
        name = f"step-{self.state.step:07d}.pt"
        self.state.best_checkpoints.append([score, self.state.step, name])
        self.state.best_checkpoints.sort(key=lambda item: (-item[0], item[1]))
        dropped = self.state.best_checkpoints[self.config.training.keep_best :]
        self.state.best_checkpoints = self.state.best_checkpoints[: self.config.training.keep_best]
        if any(item[2] == name for item in self.state.best_checkpoints):
            self.save(name)
        for _, _, old in dropped if self.dist.is_main else ():
            (self.output_dir / old).unlink(missing_ok=True)

    # --- one step ------------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> tuple[float, float]:
        """One update; returns the loss (over all ranks' batches) and the gradient norm before clipping."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        t = self.config.training
        batch = batch.to(self.device)
        world = self.dist.world_size
        # Normalise by the global token count, then undo DDP's division by the world size: the summed
        # gradient is that of one process on the union batch (a mean of per-rank means would weight
        # the tokens of short batches more).
        n_tokens = int(self.dist.all_sum([batch.n_tokens])[0])
        with self.autocast():
            logits, _ = self.train_model(batch.src, batch.src_lengths, batch.tgt_in, t.teacher_forcing, t.truncated_bptt)
        loss = sequence_loss(logits, batch, t.label_smoothing, self.tokenizer.pad_id, n_tokens)
        (loss * world if world > 1 else loss).backward()
        # The norm is always measured (and logged); it is clipped only when clip_norm > 0.
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm if t.clip_norm > 0 else float("inf"))
        self.optimizer.step()
        if self.config.training.scheduler == "warmup":
            self.scheduler.step()
        self.step_tokens = n_tokens
        return self.dist.all_sum([loss.item()])[0], norm.item()

    # --- validation ----------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Dev loss (no smoothing), greedy BLEU/chrF per direction and overall, and example lines."""
        self.model.eval()
        dev = self.dev_set
        total_loss, total_tokens = 0.0, 0
        hypotheses: list[str] = [""] * len(dev.examples)
        batches = make_batches(dev.lengths, self.config.training.batch_tokens, 0, 0, shuffle=False)
        with torch.inference_mode():
            for indices in batches:
                batch = dev.batch(indices, self.tokenizer).to(self.device)
                logits, _ = self.model(batch.src, batch.src_lengths, batch.tgt_in)
                total_loss += float(sequence_loss(logits, batch, 0.0, self.tokenizer.pad_id)) * batch.n_tokens
                total_tokens += batch.n_tokens
                hyps = decode(self.model, batch.src, batch.src_lengths, self.tokenizer.bos_id, self.tokenizer.eos_id,
                              max_ratio=self.config.training.dev_max_ratio)
                for i, nbest in zip(indices, hyps):
                    hypotheses[i] = self.tokenizer.decode(nbest[0].tokens)
        dev_loss = total_loss / max(total_tokens, 1)
        result: dict[str, Any] = {"step": self.state.step, "dev_loss": round(dev_loss, 4), "dev_ppl": round(math.exp(min(dev_loss, 50)), 2)}
        directions = sorted({f"{e.src_lang}-{e.tgt_lang}" for e in dev.examples})
        bleus, chrfs = [], []
        for direction in directions:
            rows = [i for i, e in enumerate(dev.examples) if f"{e.src_lang}-{e.tgt_lang}" == direction]
            scores = score_corpus([hypotheses[i] for i in rows], [dev.examples[i].tgt for i in rows])
            result[f"bleu_{direction}"], result[f"chrf_{direction}"] = scores.bleu, scores.chrf
            bleus.append(scores.bleu)
            chrfs.append(scores.chrf)
        result["bleu"] = round(sum(bleus) / len(bleus), 2)
        result["chrf"] = round(sum(chrfs) / len(chrfs), 2)
        # Corpus BLEU is 0 on word/phrase-only dev sets (no 4-grams); exact match is telling there.
        exact = sum(hypotheses[i] == e.tgt for i, e in enumerate(dev.examples))
        result["exact"] = round(100.0 * exact / max(len(dev.examples), 1), 2)
        if any(e.context for e in dev.examples):  # only dev sets with word-in-context rows have a sense score
            result["sense"] = sense_accuracy(dev.examples, hypotheses)
        result["examples"] = [
            {"source": dev.examples[i].src, "reference": dev.examples[i].tgt, "hypothesis": hypotheses[i]}
            for i in _spread(len(dev.examples), self.config.training.dev_examples)
        ]
        return result

    def _after_validation(self, result: dict[str, Any]) -> bool:
        """Update best/patience/scheduler from a scheduled validation; returns True to stop early."""
        score = result[self.config.training.best_metric]
        self.state.last_validated_step = self.state.step
        if self.scheduler is not None and self.config.training.scheduler == "plateau":
            self.scheduler.step(score)
        improved = score > self.state.best_score
        if improved:
            self.state.best_score = score
            self.state.validations_without_improvement = 0
        else:
            self.state.validations_without_improvement += 1
        self._keep_best(score)
        if improved:  # saved after _keep_best so that resuming from best.pt knows every step-*.pt
            self.save("best.pt")
        patience = self.config.training.patience
        return patience > 0 and self.state.validations_without_improvement >= patience

    # --- the loop ------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        t = self.config.training
        main = self.dist.is_main  # rank 0 (or the only process) validates, logs and writes files
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.output_dir / "config.yaml")
        metrics: MetricsLog | _NoMetrics = MetricsLog(self.output_dir, self.state.step) if main else _NoMetrics()
        log.info("model: %s parameters; %d training and %d dev examples; vocabulary %d",
                 f"{count_parameters(self.model):,}", len(self.train_set.examples), len(self.dev_set.examples),
                 self.tokenizer.vocab_size)
        previous_handler = signal.signal(signal.SIGINT, self._request_stop)
        started = time.monotonic()
        stop_reason = "max_steps"
        progress = tqdm(total=t.max_steps, initial=self.state.step, desc="train", unit="step", dynamic_ncols=True,
                        disable=None if main else True)
        window_tokens, window_start = 0, time.monotonic()
        try:
            while self.state.step < t.max_steps:
                if self.state.epoch >= t.max_epochs:
                    stop_reason = "max_epochs"
                    break
                # Every rank builds the same order and takes its shard (all of it in a single process).
                batches = make_batches(self.train_set.lengths, t.batch_tokens, t.seed, self.state.epoch)
                batches = distributed.shard_batches(batches, self.dist.rank, self.dist.world_size)
                while self.state.batch_in_epoch < len(batches) and self.state.step < t.max_steps:
                    # Dropout masks drawn from the step number: --resume repeats them exactly.
                    mask_rng = random.Random(f"{t.seed}:{self.state.step}:{self.dist.rank}")
                    batch = self.train_set.batch(batches[self.state.batch_in_epoch], self.tokenizer,
                                                 t.context_word_dropout, mask_rng)
                    loss, norm = self.train_step(batch)
                    self.state.step += 1
                    self.state.batch_in_epoch += 1
                    window_tokens += self.step_tokens
                    progress.update(1)
                    step = self.state.step
                    if step % t.log_every == 0:
                        elapsed = max(time.monotonic() - window_start, 1e-9)
                        entry = {"step": step, "epoch": self.state.epoch, "loss": round(loss, 4),
                                 "grad_norm": round(norm, 4), "lr": self.learning_rate,
                                 "tokens_per_sec": round(window_tokens / elapsed, 1)}
                        metrics.write("train", entry)
                        progress.set_postfix(loss=f"{loss:.3f}", tok_s=f"{entry['tokens_per_sec']:.0f}",
                                             lr=f"{self.learning_rate:.2e}", gnorm=f"{norm:.2f}")
                        if main and progress.disable:  # no terminal (e.g. output to a log file): log a line instead
                            log.info("step %d  loss %.4f  %s tok/s  lr %.2e  grad norm %.3f", step, loss,
                                     entry["tokens_per_sec"], self.learning_rate, norm)
                        window_tokens, window_start = 0, time.monotonic()
                    if step % t.validate_every == 0:
                        # Rank 0 validates; every rank applies the result, so LR and patience agree.
                        result = self.dist.broadcast(self.validate() if main else None)
                        metrics.write("dev", result)
                        if main:
                            _log_validation(result)
                        if self._after_validation(result):
                            stop_reason = "early_stopping"
                    if step % t.save_every == 0:
                        self.save("last.pt")
                    out_of_time = bool(t.max_minutes) and time.monotonic() - started > t.max_minutes * 60
                    out_of_time, interrupted = self.dist.any_of(out_of_time, self.stop_requested)
                    if out_of_time:
                        stop_reason = "time_budget"
                    if interrupted:
                        stop_reason = "interrupted"
                    if stop_reason not in ("max_steps", "max_epochs"):
                        raise _StopTraining
                if self.state.batch_in_epoch >= len(batches):
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
        except _StopTraining:
            pass
        finally:
            progress.close()
            signal.signal(signal.SIGINT, previous_handler)
        self.save("last.pt")  # under DDP this also checks that the ranks' weights are identical
        final = None
        if main and stop_reason != "interrupted" and self.state.last_validated_step != self.state.step:
            # A report-only validation: it changes no training state, so resuming stays exact.
            final = self.validate()
            metrics.write("dev", {**final, "final": True})
            _log_validation(final)
        metrics.close()
        if main:
            plot_training_curves(metrics.path, self.output_dir / "training_curves.png")
        summary = {
            "stop_reason": stop_reason,
            "steps": self.state.step,
            "epochs_completed": self.state.epoch,
            "minutes": round((time.monotonic() - started) / 60, 2),
            "best_metric": self.config.training.best_metric,
            "best_score": self.state.best_score,
            "final": {k: v for k, v in (final or metrics.last_dev or {}).items() if k != "examples"},
            "output_dir": str(self.output_dir),
        }
        if self.dist.enabled:
            summary.update(rank=self.dist.rank, world_size=self.dist.world_size, replica_checksums=self.replica_checksums)
        if main:
            atomic_write_text(self.output_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        self.dist.barrier()  # the other ranks wait here while rank 0 validates and writes
        return summary

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self.stop_requested:  # a second Ctrl-C stops at once
            # Under torchrun one Ctrl-C arrives twice (from the terminal and forwarded by torchrun).
            if not (self.dist.enabled and time.monotonic() - self.stop_requested_at < 2.0):
                raise KeyboardInterrupt
            return
        self.stop_requested, self.stop_requested_at = True, time.monotonic()
        if self.dist.is_main:
            tqdm.write("interrupt: finishing this step, saving last.pt and stopping (Ctrl-C again to abort)")


class _StopTraining(Exception):
    pass


class _NoMetrics:
    """The metrics log of ranks > 0: they train but do not log."""

    last_dev: Optional[dict[str, Any]] = None

    def write(self, kind: str, entry: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class MetricsLog:
    """Metrics to a JSONL file (always) and TensorBoard (when installed)."""

    def __init__(self, output_dir: Path, resume_step: int):
        self.path = output_dir / "metrics.jsonl"
        self.last_dev: Optional[dict[str, Any]] = None
        # On resume, forget entries logged after the checkpoint so the curves show one history.
        if self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if (entry := _json_or_none(line)) is not None and entry.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.handle = open(self.path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer: Any = SummaryWriter(str(output_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.writer = None

    def write(self, kind: str, entry: dict[str, Any]) -> None:
        self.handle.write(json.dumps({"kind": kind, **entry, "time": round(time.time(), 3)}, ensure_ascii=False) + "\n")
        self.handle.flush()
        if kind == "dev":
            self.last_dev = entry
        if self.writer is not None:
            for key, value in entry.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{kind}/{key}", value, entry["step"])

    def close(self) -> None:
        self.handle.close()
        if self.writer is not None:
            self.writer.close()


def _json_or_none(line: str) -> Optional[dict[str, Any]]:
    """A metrics line as a dict; None for blank lines and for a last line torn by a hard kill, which
    must not make the run impossible to resume."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def sense_accuracy(examples: list[Example], hypotheses: list[str]) -> float:
    """Word-in-context accuracy (%) on the dev examples that carry a context, scored by the
    disambiguation rule (Korean substring, English whole word): the product's own quality measure,
    which exact match dilutes with every sentence pair. 0.0 when the dev set has no contexts."""
    rows = [i for i, e in enumerate(examples) if e.context]
    if not rows:
        return 0.0
    correct = sum(is_accepted(hypotheses[i], [examples[i].tgt], examples[i].tgt_lang) for i in rows)
    return round(100.0 * correct / len(rows), 2)


def _log_validation(result: dict[str, Any]) -> None:
    scores = "  ".join(f"{k} {v}" for k, v in result.items() if k.startswith(SCORE_PREFIXES))
    tqdm.write(f"[step {result['step']}] dev loss {result['dev_loss']:.3f}  ppl {result['dev_ppl']}  {scores}")
    for example in result.get("examples", []):
        tqdm.write(f"  src: {example['source']}\n  ref: {example['reference']}\n  hyp: {example['hypothesis']}")


def _spread(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(total): the same dev examples every validation."""
    if total == 0 or count == 0:
        return []
    count = min(count, total)
    return sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})


def train(config: Config, output_dir: str | Path, resume: Optional[str | Path] = None,
          init_from: Optional[str | Path] = None) -> dict[str, Any]:
    """Train from a config. With `resume`, continue exactly from a checkpoint's training state; with
    `init_from`, start from a checkpoint's weights and tokenizer (fine-tuning, e.g. on new data).
    Started by torchrun, each process trains its shard with DDP (translator/distributed.py)."""
    if resume is not None and init_from is not None:
        raise ConfigError("--resume and --init-from exclude each other (resume continues a run; init-from starts a new one)")
    payload = init = None
    if resume is not None:
        payload = load_checkpoint(resume)
        check_resume_config(config, config_from_dict(payload["config"]))
    if init_from is not None:
        init = load_checkpoint(init_from)
        check_init_config(config, config_from_dict(init["config"]))
    # Under torchrun this joins the process group (one rank per process); otherwise one process.
    with distributed.session() as dist:
        return Trainer(config, Path(output_dir), payload, init, dist).train()


def _first_difference(new: dict[str, Any], old: dict[str, Any], keys) -> Optional[str]:
    return next((key for key in keys if new.get(key) != old.get(key)), None)


def check_init_config(config: Config, saved: Config) -> None:
    """Warm starting needs the same model shape; data and training settings are free to change."""
    new, old = config.to_dict()["model"], saved.to_dict()["model"]
    key = _first_difference(new, old, new)
    if key is not None:
        raise ConfigError(f"model.{key}: {new[key]!r} differs from the --init-from checkpoint's {old.get(key)!r}")


def check_resume_config(config: Config, saved: Config) -> None:
    """The data, tokenizer and model sections must match the checkpoint; training settings may change,
    except those in `FROZEN_TRAINING`."""
    new, old = config.to_dict(), saved.to_dict()
    for section in FROZEN_SECTIONS:
        key = _first_difference(new[section], old[section], new[section])
        if key is not None:
            raise ConfigError(f"{section}.{key}: {new[section][key]!r} differs from the checkpoint's "
                              f"{old[section].get(key)!r}; only training settings may change on --resume")
    key = _first_difference(new["training"], old["training"], FROZEN_TRAINING)
    if key is not None:
        raise ConfigError(f"training.{key}: {new['training'][key]!r} differs from the checkpoint's "
                          f"{old['training'][key]!r}; it cannot change on --resume ({FROZEN_TRAINING[key]})")
