"""Gradient flow through time: how far back a loss can reach in a plain RNN, an LSTM and a GRU.

Two diagnostics, both behind `translator gradflow`:

* `synthetic`: a recall task that is long-range by construction. The first of T tokens is one of
  `classes` symbols, the other T − 1 are random distractors, and the label is the first token, read
  from the last hidden state only. The loss can therefore be lowered only by carrying information
  from step 1 to step T. For each cell we measure ‖∂L/∂h_t‖ for every step t at initialisation and
  after brief training with and without gradient clipping, plus task accuracy.
* `saliency`: for a trained translation model and one input, ‖∂ log p(y|x) / ∂e(x_t)‖ per source
  piece (embedding saliency) and ‖∂ log p(y|x) / ∂s_t‖ per encoder state.

Norms are per example (the loss is summed over the batch, so each row of ∂L/∂h_t is one example's
gradient) and averaged over the examples.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from translator.io import atomic_write_text
from translator.model import RNN_CELLS, make_rnn

CONDITIONS = ("init", "trained", "trained_clipped")  # the three measurements per cell


# ---------------------------------------------------------------------------------------------------
# The synthetic recall task


@dataclass
class SyntheticSettings:
    """Everything one `translator gradflow --synthetic` run depends on (defaults: < 1 min on 2 cores)."""

    cells: list[str] = field(default_factory=lambda: ["rnn", "lstm", "gru"])
    length: int = 50  # T: the first token must be carried through T − 1 distractor steps
    steps: int = 1000  # training steps per cell and clipping condition
    batch_size: int = 64
    embedding: int = 16
    hidden: int = 32
    classes: int = 8  # symbols the first token is drawn from (chance accuracy = 1 / classes)
    distractors: int = 8  # other symbols filling steps 2..T
    learning_rate: float = 0.01
    clip_norm: float = 1.0  # the clipped condition's max global gradient norm
    seed: int = 1
    eval_size: int = 1000  # held-out sequences for accuracy
    measure_size: int = 256  # held-out sequences the gradient norms are averaged over

    def check(self) -> None:
        """Raise ValueError (one line naming the option) for impossible settings."""
        unknown = [c for c in self.cells if c not in RNN_CELLS]
        if unknown or not self.cells:
            raise ValueError(f"--cells: {','.join(unknown) or 'nothing'} is not a list of {', '.join(RNN_CELLS)}")
        for name, low in (("length", 2), ("steps", 1), ("batch_size", 1), ("embedding", 1), ("hidden", 1),
                          ("classes", 2), ("distractors", 1), ("eval_size", 1), ("measure_size", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        for name, option in (("learning_rate", "--lr"), ("clip_norm", "--clip-norm")):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{option} must be a finite number > 0, got {value}")


def recall_batch(settings: SyntheticSettings, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`size` sequences [size, T]: a class symbol in 0..classes-1, then distractors; labels [size]."""
    labels = torch.randint(0, settings.classes, (size,), generator=generator)
    noise = torch.randint(settings.classes, settings.classes + settings.distractors, (size, settings.length - 1),
                          generator=generator)
    return torch.cat([labels.unsqueeze(1), noise], dim=1), labels


class RecallNet(nn.Module):
    """Embedding → one unidirectional layer of the translator's own cell (`make_rnn`) → linear
    classifier on the last hidden state."""

    def __init__(self, cell: str, settings: SyntheticSettings):
        super().__init__()
        self.cell = cell
        self.embed = nn.Embedding(settings.classes + settings.distractors, settings.embedding)
        self.rnn = make_rnn(cell, settings.embedding, settings.hidden, 1, 0.0, False)
        self.classify = nn.Linear(settings.hidden, settings.classes)

    def forward(self, inputs: Tensor) -> Tensor:
        """Logits [B, classes] from one fused RNN call (training)."""
        out, _ = self.rnn(self.embed(inputs))
        return self.classify(out[:, -1])

    def unrolled(self, inputs: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The same logits, computed one step at a time so that every h_t is a node of the graph that
        the next step reads: its .grad is then the full ∂L/∂h_t (the fused call hides them)."""
        embedded = self.embed(inputs)
        state = None
        hidden: list[Tensor] = []
        for t in range(inputs.size(1)):
            _, state = self.rnn(embedded[:, t : t + 1], state)
            h = (state[0] if isinstance(state, tuple) else state)[0]  # [B, H] of the single layer
            h.retain_grad()
            hidden.append(h)
            state = (h.unsqueeze(0), state[1]) if isinstance(state, tuple) else h.unsqueeze(0)
        return self.classify(hidden[-1]), hidden


def hidden_gradient_norms(model: RecallNet, inputs: Tensor, labels: Tensor) -> list[float]:
    """Mean per-example ‖∂L/∂h_t‖ for t = 1..T, where L is the example's cross-entropy."""
    model.zero_grad(set_to_none=True)
    logits, hidden = model.unrolled(inputs)
    F.cross_entropy(logits, labels, reduction="sum").backward()
    norms = [float(h.grad.norm(dim=1).mean()) for h in hidden]
    model.zero_grad(set_to_none=True)
    return norms


def accuracy(model: RecallNet, inputs: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return float((model(inputs).argmax(-1) == labels).float().mean())


@dataclass
class TrainingTrace:
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # global norm before clipping
    applied_norm: list[float] = field(default_factory=list)  # global norm of the gradient the update used


def train_recall(model: RecallNet, settings: SyntheticSettings, clip_norm: float, progress: Optional[tqdm] = None) -> TrainingTrace:
    """Adam on fresh batches (the same stream for every cell and condition); clip_norm 0 = no clipping."""
    generator = torch.Generator().manual_seed(settings.seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    trace = TrainingTrace()
    model.train()
    for _ in range(settings.steps):
        inputs, labels = recall_batch(settings, settings.batch_size, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm if clip_norm > 0 else float("inf")))
        applied = float(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm())
        optimizer.step()
        trace.loss.append(loss.item())
        trace.grad_norm.append(norm)
        trace.applied_norm.append(applied)
        if progress is not None:
            progress.update(1)
    return trace


@dataclass
class CellResult:
    cell: str
    norms: dict[str, list[float]]  # condition -> ‖∂L/∂h_t‖ for t = 1..T
    accuracy: dict[str, float]  # condition -> held-out accuracy
    traces: dict[str, TrainingTrace]  # "trained" / "trained_clipped" -> per-step losses and norms

    def ratio(self, condition: str) -> float:
        """‖∂L/∂h_1‖ / ‖∂L/∂h_T‖: how much of the last step's gradient reaches the first step."""
        first, last = self.norms[condition][0], self.norms[condition][-1]
        return first / last if last > 0 else float("nan")


def run_cell(cell: str, settings: SyntheticSettings, progress: Optional[tqdm] = None) -> CellResult:
    """Measure one cell at initialisation, then train it twice from the same initial weights."""
    held_out = torch.Generator().manual_seed(settings.seed + 2)
    eval_inputs, eval_labels = recall_batch(settings, settings.eval_size, held_out)
    measure_inputs, measure_labels = recall_batch(settings, settings.measure_size, held_out)
    norms, accuracies, traces = {}, {}, {}
    for condition, clip in (("trained", 0.0), ("trained_clipped", settings.clip_norm)):
        torch.manual_seed(settings.seed)  # both conditions start from the same weights
        model = RecallNet(cell, settings)
        if "init" not in norms:
            norms["init"] = hidden_gradient_norms(model, measure_inputs, measure_labels)
            accuracies["init"] = accuracy(model, eval_inputs, eval_labels)
        traces[condition] = train_recall(model, settings, clip, progress)
        model.eval()
        norms[condition] = hidden_gradient_norms(model, measure_inputs, measure_labels)
        accuracies[condition] = accuracy(model, eval_inputs, eval_labels)
    return CellResult(cell, norms, accuracies, traces)


def run_synthetic(settings: SyntheticSettings, output: Path) -> list[CellResult]:
    """Run every cell and write gradflow.csv, gradflow-training.csv, gradflow.png, gradflow.txt and
    gradflow.json into `output`; returns the results (the summary paragraph is `summarise(...)`)."""
    settings.check()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny step-by-step RNNs only lose time to thread synchronisation
    try:
        results = _run_cells(settings)
    finally:
        torch.set_num_threads(threads)
    write_synthetic(results, settings, output)
    return results


def _run_cells(settings: SyntheticSettings) -> list[CellResult]:
    with tqdm(total=len(settings.cells) * 2 * settings.steps, desc="gradflow", unit="step", dynamic_ncols=True,
              disable=None) as progress:
        results = []
        for cell in settings.cells:
            progress.set_postfix(cell=cell)
            results.append(run_cell(cell, settings, progress))
    return results


def summarise(results: list[CellResult], settings: SyntheticSettings) -> str:
    """One paragraph: the ratio ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ and accuracy per cell, and what clipping did."""
    s = settings
    parts = [f"Recall task: the first of T = {s.length} tokens ({s.classes} classes, then {s.length - 1} random "
             f"distractors) must be output from the last hidden state; one {s.hidden}-unit layer per cell, "
             f"{s.steps} Adam steps (lr {s.learning_rate:g}, batch {s.batch_size}) without and with clipping at "
             f"{s.clip_norm:g}; chance accuracy {100 / s.classes:.1f}%."]
    ratios = ", ".join(f"{r.cell} {r.ratio('init'):.1e}" for r in results)
    parts.append(f"At initialisation ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ is {ratios}.")
    by_cell = {r.cell: r for r in results}
    if "rnn" in by_cell and "lstm" in by_cell:
        first_rnn, first_lstm = by_cell["rnn"].norms["init"][0], by_cell["lstm"].norms["init"][0]
        if first_rnn > 0:
            parts.append(f"The plain RNN's gradient at the first step is {first_lstm / first_rnn:.1e} times smaller "
                         "than the LSTM's.")
        else:
            parts.append("The plain RNN's gradient at the first step underflows to 0.")
    trained = "; ".join(
        f"{r.cell} {100 * r.accuracy['trained']:.1f}% / {100 * r.accuracy['trained_clipped']:.1f}% "
        f"(ratio {r.ratio('trained'):.1e} / {r.ratio('trained_clipped'):.1e})" for r in results)
    parts.append(f"After training, accuracy without / with clipping: {trained}.")
    clipped = "; ".join(
        f"{r.cell} {sum(n > s.clip_norm for n in r.traces['trained_clipped'].grad_norm)} of {s.steps} steps "
        f"(largest norm {max(r.traces['trained_clipped'].grad_norm):.3g}, largest applied "
        f"{max(r.traces['trained_clipped'].applied_norm):.3g}; unclipped run's largest "
        f"{max(r.traces['trained'].grad_norm):.3g})" for r in results)
    parts.append(f"Clipping rescaled the global gradient to norm {s.clip_norm:g} in: {clipped}.")
    return " ".join(parts)


def write_synthetic(results: list[CellResult], settings: SyntheticSettings, output: Path) -> None:
    from translator.plots import plot_gradient_flow

    rows = [[r.cell, condition, t + 1, f"{norm:.6e}"] for r in results for condition in CONDITIONS
            for t, norm in enumerate(r.norms[condition])]
    atomic_write_text(output / "gradflow.csv", _csv(["cell", "condition", "t", "grad_norm"], rows))
    training_rows = [[r.cell, condition, step + 1, f"{trace.loss[step]:.6f}", f"{trace.grad_norm[step]:.6e}",
                      f"{trace.applied_norm[step]:.6e}"]
                     for r in results for condition, trace in r.traces.items() for step in range(len(trace.loss))]
    atomic_write_text(output / "gradflow-training.csv",
                      _csv(["cell", "condition", "step", "loss", "grad_norm", "applied_norm"], training_rows))
    summary = summarise(results, settings)
    atomic_write_text(output / "gradflow.txt", summary + "\n")
    report = {
        "settings": asdict(settings),
        "cells": {r.cell: {"ratio_first_to_last": {c: _finite_or_none(r.ratio(c)) for c in CONDITIONS}, "accuracy": r.accuracy,
                           "first_step_grad_norm": {c: r.norms[c][0] for c in CONDITIONS},
                           "max_grad_norm": {c: max(t.grad_norm) for c, t in r.traces.items()},
                           "max_applied_norm": {c: max(t.applied_norm) for c, t in r.traces.items()}}
                  for r in results},
        "summary": summary,
    }
    atomic_write_text(output / "gradflow.json", json.dumps(report, indent=2) + "\n")
    plot_gradient_flow({r.cell: r.norms for r in results},
                       {r.cell: {c: t.grad_norm for c, t in r.traces.items()} for r in results},
                       settings.clip_norm, output / "gradflow.png")


# ---------------------------------------------------------------------------------------------------
# Saliency in a trained translation model


@dataclass
class Saliency:
    source_pieces: list[str]
    target_pieces: list[str]
    embedding_grad: list[float]  # ‖∂ log p(y|x) / ∂e(x_t)‖ per source piece
    state_grad: list[float]  # ‖∂ log p(y|x) / ∂s_t‖ per encoder state
    log_prob: float  # log p(y|x) of the whole target (with </s>)
    target: str  # the target text y (the model's translation unless one was given)

    def summary(self) -> str:
        ranked = sorted(range(len(self.source_pieces)), key=lambda t: -self.embedding_grad[t])[:3]
        top = ", ".join(f"{self.source_pieces[t]!r} ({self.embedding_grad[t]:.3g})" for t in ranked)
        peak = max(range(len(self.state_grad)), key=lambda t: self.state_grad[t])
        return (f"log p(y|x) = {self.log_prob:.3f} for y = {self.target!r} ({len(self.target_pieces)} target pieces with </s>). "
                f"Most salient source pieces by ‖∂ log p/∂e(x_t)‖: {top}. The encoder-state gradient is largest at "
                f"position {peak + 1} ({self.source_pieces[peak]!r}, {self.state_grad[peak]:.3g}) and smallest "
                f"{min(self.state_grad):.3g}.")


def saliency(model_path: Path, text: str, source: str, target: str, context: Optional[str] = None,
             reference: Optional[str] = None, beam: int = 5) -> Saliency:
    """Gradients of log p(y|x) for one input: y is `reference`, or the model's own translation."""
    from translator.data import collate, normalize
    from translator.prediction import TranslationError, Translator, strip_control_symbols

    translator = Translator.load(model_path)
    translator.check_direction(source, target)
    if not text.strip():
        raise TranslationError("--text is empty: nothing to explain")
    if reference is None:
        reference = translator.translate(text, source, target, beam=beam, context=context)[0].text
    # Encoded exactly as the Translator facade encodes a request (normalised, control symbols removed).
    tokenizer, config, model = translator.tokenizer, translator.config, translator.model
    lowercase = config.data.lowercase
    clean_context = normalize(strip_control_symbols(context), lowercase) if context else None
    source_ids = tokenizer.encode_source(normalize(strip_control_symbols(text), lowercase), target, clean_context,
                                         config.data.context_encoding)
    target_ids = tokenizer.encode_target(normalize(reference, lowercase))
    batch = collate([source_ids], [target_ids], tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, [0])
    model.eval()
    with torch.enable_grad():
        embedded = model.src_embed(batch.src).detach().requires_grad_(True)
        enc = model.encode(batch.src, batch.src_lengths, embedded=embedded)
        enc.states.retain_grad()
        vectors, _ = model.decoder(model.tgt_embed(batch.tgt_in), enc)
        log_probs = F.log_softmax(model.logits(vectors), dim=-1)
        log_p = log_probs.gather(-1, batch.tgt_out.unsqueeze(-1)).sum()
        log_p.backward()
    return Saliency(
        source_pieces=tokenizer.source_pieces(source_ids),
        target_pieces=tokenizer.source_pieces(target_ids) + ["</s>"],
        embedding_grad=embedded.grad[0].norm(dim=-1).tolist(),
        state_grad=enc.states.grad[0].norm(dim=-1).tolist(),
        log_prob=log_p.item(),
        target=reference,
    )


def write_saliency(result: Saliency, output: Path) -> None:
    from translator.plots import plot_saliency

    rows = [[t + 1, piece, f"{result.embedding_grad[t]:.6e}", f"{result.state_grad[t]:.6e}"]
            for t, piece in enumerate(result.source_pieces)]
    atomic_write_text(output / "saliency.csv", _csv(["position", "piece", "embedding_grad_norm", "encoder_state_grad_norm"], rows))
    atomic_write_text(output / "saliency.txt", result.summary() + "\n")
    plot_saliency(result.source_pieces, result.embedding_grad, result.state_grad,
                  f"y = {result.target}   (log p = {result.log_prob:.2f})", output / "saliency.png")


def _finite_or_none(value: float) -> Optional[float]:
    """JSON has no NaN: an undefined ratio (the last step's gradient underflowed to 0) is null."""
    return value if math.isfinite(value) else None


def _csv(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
