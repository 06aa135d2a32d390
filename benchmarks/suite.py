"""The pure parts of benchmarks/run.py: log parsing, throughput, FLOP counts, the table and RESULTS.md.

Nothing here starts processes or touches torch, so tests/test_benchmarks.py can check it quickly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional, Sequence

SECTION_HEADING = "## Side by side with Joey NMT"


# --- statistics ------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Window:
    """One logged training window: the wall-clock time it ended, the step, the logged tokens/s."""

    time: float
    step: int
    tokens_per_sec: float


def window_throughput(windows: Sequence[Window], skip: int = 1) -> dict[str, float]:
    """Target tokens/s over the logged windows after the first `skip` (warm-up: allocator, first
    kernels, data loading), weighting each window's logged rate by its duration (the time between
    consecutive log lines) — i.e. tokens divided by seconds over the measured span."""
    if len(windows) < skip + 1 or skip < 1:
        raise ValueError(f"need at least {skip + 1} logged windows (skip {skip} for warm-up), got {len(windows)}")
    tokens = seconds = 0.0
    for previous, current in zip(windows[skip - 1 :], windows[skip:]):
        duration = current.time - previous.time
        if duration <= 0:
            raise ValueError(f"log times do not increase at step {current.step}")
        tokens += current.tokens_per_sec * duration
        seconds += duration
    steps = windows[-1].step - windows[skip - 1].step
    return {"tokens_per_sec": tokens / seconds, "seconds": seconds, "steps": steps,
            "seconds_per_step": seconds / steps, "first_step": windows[skip - 1].step + 1, "last_step": windows[-1].step}


# --- Joey NMT's training log ----------------------------------------------------------------------------
_JOEY_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_JOEY_STEP = re.compile(_JOEY_TIME + r" - INFO - joeynmt\.training - Epoch\s+\d+, Step:\s+(\d+), .*Tokens per Sec:\s+([\d.]+)")
_JOEY_EPOCH1 = re.compile(_JOEY_TIME + r" - INFO - joeynmt\.training - EPOCH 1\s*$", re.M)
_JOEY_VALIDATION = re.compile(r"Steps: (\d+)\t.*?bleu: ([\d.]+)")


def joey_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def joey_windows(log: str) -> list[Window]:
    """The 'Epoch N, Step: S, ... Tokens per Sec: R' lines of Joey's train.log (logged every logging_freq updates)."""
    return [Window(joey_time(m.group(1)), int(m.group(2)), float(m.group(3))) for m in _JOEY_STEP.finditer(log)]


def joey_training_started(log: str) -> Optional[float]:
    """When Joey's training loop began (its 'EPOCH 1' line): data, vocabulary and model are built."""
    match = _JOEY_EPOCH1.search(log)
    return joey_time(match.group(1)) if match else None


_JOEY_INTERRUPT = re.compile(r"Interrupt at epoch \d+, step (\d+)\.")
_JOEY_MAX_UPDATES = re.compile(r"Training ended since maximum num\. of updates (\d+) was reached")


def joey_interrupted_at(log: str) -> Optional[int]:
    """The update count at which Joey stopped: Ctrl-C ('Interrupt at epoch E, step S.') or its updates limit."""
    match = _JOEY_INTERRUPT.search(log) or _JOEY_MAX_UPDATES.search(log)
    return int(match.group(1)) if match else None


def joey_validations(validations_txt: str) -> list[tuple[int, float]]:
    """(step, BLEU) per line of Joey's validations.txt."""
    return [(int(m.group(1)), float(m.group(2))) for m in _JOEY_VALIDATION.finditer(validations_txt)]


# --- FLOPs of our training step -------------------------------------------------------------------
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


@dataclass(frozen=True)
class Dims:
    embedding: int
    hidden: int
    encoder_layers: int
    decoder_layers: int
    vocab: int
    input_feeding: bool = True
    cell: str = "lstm"
    attention: str = "bahdanau"

    @classmethod
    def from_config(cls, model: dict[str, Any], vocab: int) -> "Dims":
        if model.get("decoder_hidden", 0) not in (0, model["hidden"]):
            raise ValueError("the FLOP count assumes decoder_hidden = hidden")
        return cls(model["embedding"], model["hidden"], model["encoder_layers"], model["decoder_layers"], vocab,
                   bool(model.get("input_feeding", True)), model.get("cell", "lstm"), model.get("attention", "bahdanau"))


@dataclass(frozen=True)
class Gemm:
    """`count` matrix products [m × k] · [k × n], each batched `bmm` times (torch.bmm) or a plain
    torch.mm when bmm is 1; count may be fractional (an average over batches)."""

    name: str
    m: int
    k: int
    n: int
    count: float = 1.0
    bmm: int = 1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.bmm, self.m, self.k, self.n)

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.k * self.n * self.bmm * self.count


def forward_gemms(d: Dims, batch: int, src_len: int, tgt_len: int, src_tokens: Optional[int] = None) -> list[Gemm]:
    """The matrix products of one forward pass of our model on a batch of `batch` sentences padded to
    `src_len` source and `tgt_len` target positions (`src_tokens` real source tokens: the encoder runs
    on packed sequences). Elementwise work (gates, tanh, softmax, dropout) is not counted."""
    if d.attention != "bahdanau":
        raise ValueError("the FLOP count models Bahdanau attention")
    g, h, e = GATES[d.cell], d.hidden, d.embedding
    src_tokens = batch * src_len if src_tokens is None else src_tokens
    bt = batch * tgt_len
    gemms: list[Gemm] = []
    for layer in range(d.encoder_layers):  # × 2 directions
        width = e if layer == 0 else 2 * h
        gemms.append(Gemm(f"encoder {layer + 1} input", src_tokens, width, g * h, 2))
        gemms.append(Gemm(f"encoder {layer + 1} recurrent", batch, h, g * h, 2 * src_tokens / batch))
    gemms.append(Gemm("attention keys", batch * src_len, 2 * h, h))
    gemms.append(Gemm("bridge", batch, 2 * h, d.decoder_layers * h, 2 if d.cell == "lstm" else 1))
    if d.input_feeding:  # step by step: every product has `batch` rows, tgt_len times
        gemms.append(Gemm("decoder 1 input", batch, e + h, g * h, tgt_len))
        gemms += [Gemm(f"decoder {layer + 1} input", batch, h, g * h, tgt_len) for layer in range(1, d.decoder_layers)]
        gemms += [Gemm(f"decoder {layer + 1} recurrent", batch, h, g * h, tgt_len) for layer in range(d.decoder_layers)]
        gemms.append(Gemm("attention query", batch, h, h, tgt_len))
        gemms.append(Gemm("attention energy", batch * src_len, h, 1, tgt_len))
        gemms.append(Gemm("attention context", 1, src_len, 2 * h, tgt_len, bmm=batch))
        gemms.append(Gemm("combine", batch, 3 * h, h, tgt_len))
    else:  # one fused RNN call: input products over all positions at once
        gemms.append(Gemm("decoder 1 input", bt, e, g * h))
        gemms += [Gemm(f"decoder {layer + 1} input", bt, h, g * h) for layer in range(1, d.decoder_layers)]
        gemms += [Gemm(f"decoder {layer + 1} recurrent", batch, h, g * h, tgt_len) for layer in range(d.decoder_layers)]
        gemms.append(Gemm("attention query", bt, h, h))
        gemms.append(Gemm("attention energy", bt * src_len, h, 1))
        gemms.append(Gemm("attention context", tgt_len, src_len, 2 * h, 1, bmm=batch))
        gemms.append(Gemm("combine", bt, 3 * h, h))
    gemms.append(Gemm("output layer", bt, h, d.vocab))
    return gemms


def training_step_flops(d: Dims, batch: int, src_len: int, tgt_len: int, src_tokens: Optional[int] = None) -> float:
    """Forward + backward ≈ 3 × the forward matrix products (backward computes two products per forward one)."""
    return 3.0 * sum(gemm.flops for gemm in forward_gemms(d, batch, src_len, tgt_len, src_tokens))


# --- the table --------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the comparison. `kind` says how ours compares with the peer:
    'higher' (ratio ours/peer, more is better), 'lower' (ratio ours/peer, less is better),
    'delta' (difference ours − peer, e.g. BLEU), 'info' (no comparison)."""

    metric: str
    ours: Optional[float]
    peer: Optional[float] = None
    kind: str = "higher"
    target: str = ""
    met: Optional[bool] = None
    digits: int = 1
    note: str = ""
    ours_text: str = ""  # overrides the formatted number (e.g. "2.1 / 3.4")
    peer_text: str = ""

    @property
    def ratio(self) -> Optional[float]:
        if self.ours is None or self.peer is None or self.kind == "info":
            return None
        if self.kind == "delta":
            return self.ours - self.peer
        return self.ours / self.peer if self.peer else None


def format_number(value: Optional[float], digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def format_ratio(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "—"
    if row.kind == "delta":
        return f"{ratio:+.2f}"
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.1f}×"


def format_met(met: Optional[bool]) -> str:
    return "—" if met is None else ("**yes**" if met else "no")


def render_table(rows: Sequence[Row], peer_name: str = "Joey NMT") -> str:
    """A Markdown table: metric | ours | peer | ratio | target | met?"""
    lines = [f"| metric | ours | {peer_name} | ratio | target | met? |", "|---|---|---|---|---|---|"]
    for row in rows:
        ours = row.ours_text or format_number(row.ours, row.digits)
        peer = row.peer_text or format_number(row.peer, row.digits)
        metric = row.metric + (f" ({row.note})" if row.note else "")
        lines.append(f"| {metric} | {ours} | {peer} | {format_ratio(row)} | {row.target or '—'} | {format_met(row.met)} |")
    return "\n".join(lines)


def met_ratio(ours: Optional[float], peer: Optional[float], *, at_least: Optional[float] = None,
              at_most: Optional[float] = None) -> Optional[bool]:
    """ours/peer ≥ at_least or ≤ at_most; None when a figure is missing."""
    if ours is None or peer is None or not peer:
        return None
    ratio = ours / peer
    if at_least is not None and ratio < at_least:
        return False
    if at_most is not None and ratio > at_most:
        return False
    return True


# --- RESULTS.md ------------------------------------------------------------------------------------
def replace_section(document: str, heading: str, section: str) -> str:
    """Replace the `heading` section (up to the next heading of the same or a higher level) with
    `section`, or append it when the document has none. Everything else is kept byte for byte."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    section = section.rstrip("\n") + "\n"
    if start is None:
        text = document.rstrip("\n")
        return (text + "\n\n" if text else "") + section
    end = len(lines)
    for i in range(start + 1, len(lines)):
        match = re.match(r"(#+) ", lines[i])
        if match and len(match.group(1)) <= level and not _inside_fence(lines, i):
            end = i
            break
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + tail if tail else "")


def _inside_fence(lines: list[str], index: int) -> bool:
    return sum(1 for line in lines[:index] if line.startswith("```")) % 2 == 1


@dataclass
class Machine:
    model: str
    cores: int
    threads_per_core: int = 1
    memory_gb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        threads = f", {self.threads_per_core} threads per core" if self.threads_per_core > 1 else ""
        memory = f", {self.memory_gb:.1f} GB RAM" if self.memory_gb else ""
        return f"{self.model}, {self.cores} cores{threads}{memory}"


def parse_lscpu(text: str) -> tuple[str, int, int]:
    """(model name, CPUs, threads per core) from `lscpu` output."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value.strip())
    return fields.get("Model name", "unknown CPU"), int(fields.get("CPU(s)", "0") or 0), int(fields.get("Thread(s) per core", "1") or 1)
