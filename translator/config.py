"""One YAML file describes a run; it is read once into these typed dataclasses.

Every key is checked before any work starts: unknown keys, wrong types and impossible values raise
`ConfigError` with one line naming the key (e.g. ``model.cell: 'lstmm' is not one of rnn, lstm, gru``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from translator.io import atomic_write_text

LANGUAGES = ("en", "ko")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or impossible."""


# The dev scores training logs, prints and plots (per direction too: bleu_en-ko, …); best_metric is one.
SCORE_PREFIXES = ("bleu", "chrf", "exact", "sense")


@dataclass
class CorpusSpec:
    """One parallel corpus: a path or file:// URL and its format.

    ``tsv`` is ``english<TAB>korean``; ``tatoeba`` is the Tatoeba-Challenge 4-column TSV
    (``lang1 lang2 text1 text2``); ``aligned`` is a prefix ``x`` naming ``x.en`` and ``x.ko``;
    ``auto`` picks by looking at the file.
    """

    path: str
    format: Literal["auto", "tsv", "tatoeba", "aligned"] = "auto"


@dataclass
class DataConfig:
    train: list[CorpusSpec] = field(default_factory=list)
    dev: list[CorpusSpec] = field(default_factory=list)
    # Which directions one model learns; the target language is a tag token on the source side.
    directions: list[Literal["en-ko", "ko-en"]] = field(default_factory=lambda: ["en-ko", "ko-en"])
    max_chars: int = 200  # pairs whose longer side exceeds this are dropped (before tokenizing)
    max_tokens: int = 80  # pairs whose longer side exceeds this many pieces are dropped
    dev_fraction: float = 0.05  # used only when no dev corpus is given
    dev_max: int = 1000
    lowercase: bool = False
    # The project's phrase corpus (src_lang, tgt_lang, text, context, translation, sense; see data/README.md).
    phrases: list[CorpusSpec] = field(default_factory=list)
    phrases_dev: list[CorpusSpec] = field(default_factory=list)
    phrase_repeat: int = 1  # phrase examples are repeated this often per epoch (they are few but matter)
    reverse_phrases: bool = True  # context-free, sense-free phrase rows also train the reverse direction
    # Korean word<TAB>English gloss<TAB>pos<TAB>level lists (the ezcorean glossary); usable glosses become pairs.
    glossary: list[CorpusSpec] = field(default_factory=list)
    # How a context sentence is given to the model: "separator" (text <ctx> context) or "inline"
    # (the context with the text marked in place: ... <p> text </p> ...).
    context_encoding: Literal["separator", "inline"] = "separator"
    # Also train each context row with its context cut to k words either side of the text, per k.
    context_windows: list[int] = field(default_factory=list)


@dataclass
class TokenizerConfig:
    type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = 8000
    character_coverage: float = 1.0


@dataclass
class ModelConfig:
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    embedding: int = 256
    hidden: int = 256  # per direction in the encoder, so encoder states are 2 * hidden wide
    decoder_hidden: int = 0  # 0 = same as hidden
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.3
    embedding_dropout: float = 0.1
    residual: bool = False  # residual connections between stacked encoder layers
    attention: Literal["bahdanau", "luong"] = "bahdanau"
    luong_score: Literal["general", "dot"] = "general"
    # Input feeding: the previous attentional vector is part of the next decoder input. Without it the
    # decoder recurrence runs as one fused RNN call over the whole target during training.
    input_feeding: bool = True
    bridge: bool = True  # initialise the decoder from the final encoder states (else zeros)
    tie_embeddings: bool = True  # share decoder input embedding and output projection weights
    share_embeddings: bool = True  # one embedding table for source and target (the vocabulary is joint)


@dataclass
class TrainingConfig:
    seed: int = 1
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    scheduler: Literal["none", "plateau", "warmup"] = "plateau"
    plateau_factor: float = 0.5
    plateau_patience: int = 2  # validations without BLEU improvement before the LR is cut
    warmup_steps: int = 1000  # warmup: linear warmup, then inverse-square-root decay
    min_learning_rate: float = 1e-5
    label_smoothing: float = 0.1
    teacher_forcing: float = 1.0  # probability of feeding the gold previous token
    # Truncated BPTT: back-propagate through at most K decoder steps at a time (the decoder state is
    # carried forward but detached every K target steps); 0 = off, full back-propagation through time.
    truncated_bptt: int = 0
    # Context word dropout: each word of a training example's context becomes <unk> with this
    # probability (never the text being translated, nor a Korean text's next word, which may be its
    # ending), so the model reads the whole context instead of leaning on one memorised cue; 0 = off.
    context_word_dropout: float = 0.0
    # Mixed precision: bfloat16 runs the forward pass under torch.autocast (weights, optimizer state and
    # loss stay float32). On a CPU with native bf16 (AVX512-BF16/AMX) matmuls run ~4x faster.
    precision: Literal["float32", "bfloat16"] = "float32"
    clip_norm: float = 1.0  # 0 disables clipping; the norm is logged either way
    batch_tokens: int = 2000  # source+target tokens per batch (padding included)
    max_steps: int = 10000
    max_epochs: int = 100
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    validate_every: int = 500
    save_every: int = 500
    log_every: int = 50
    # Dev metric that picks best.pt, drives the plateau schedule and early stopping: corpus BLEU for
    # sentences; chrF or exact match for word/phrase dev sets, where corpus BLEU is always 0; sense for
    # word-in-context accuracy on the dev rows that have a context (data.phrases_dev).
    best_metric: Literal["bleu", "chrf", "exact", "sense"] = "bleu"
    patience: int = 10  # validations without improvement of best_metric before stopping; 0 = never
    keep_best: int = 3
    dev_examples: int = 3  # example translations logged at each validation
    dev_max_ratio: float = 2.0
    num_threads: int = 0  # torch intra-op threads; 0 = number of cores


@dataclass
class Config:
    name: str = "model"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


# Values that must hold beyond their type: key -> (check, message).
_RULES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "data.max_chars": (lambda v: v >= 1, "must be >= 1"),
    "data.max_tokens": (lambda v: v >= 2, "must be >= 2"),
    "data.dev_fraction": (lambda v: 0.0 < v < 1.0, "must be between 0 and 1"),
    "data.dev_max": (lambda v: v >= 1, "must be >= 1"),
    "data.phrase_repeat": (lambda v: v >= 1, "must be >= 1"),
    "data.context_windows": (lambda v: all(k >= 1 for k in v), "must list window sizes >= 1"),
    "data.directions": (lambda v: len(v) >= 1 and len(set(v)) == len(v), "must list each direction at most once, at least one"),
    "tokenizer.vocab_size": (lambda v: v >= 16, "must be >= 16"),
    "tokenizer.character_coverage": (lambda v: 0.9 <= v <= 1.0, "must be between 0.9 and 1.0"),
    "model.embedding": (lambda v: v >= 1, "must be >= 1"),
    "model.hidden": (lambda v: v >= 1, "must be >= 1"),
    "model.decoder_hidden": (lambda v: v >= 0, "must be >= 0 (0 = same as hidden)"),
    "model.encoder_layers": (lambda v: v >= 1, "must be >= 1"),
    "model.decoder_layers": (lambda v: v >= 1, "must be >= 1"),
    "model.dropout": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    "model.embedding_dropout": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    "training.learning_rate": (lambda v: v > 0, "must be > 0"),
    "training.betas": (lambda v: all(0.0 <= b < 1.0 for b in v), "must be two numbers in [0, 1)"),
    "training.weight_decay": (lambda v: v >= 0, "must be >= 0"),
    "training.plateau_factor": (lambda v: 0.0 < v < 1.0, "must be between 0 and 1"),
    "training.plateau_patience": (lambda v: v >= 0, "must be >= 0"),
    "training.warmup_steps": (lambda v: v >= 1, "must be >= 1"),
    "training.min_learning_rate": (lambda v: v >= 0, "must be >= 0"),
    "training.label_smoothing": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    "training.teacher_forcing": (lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]"),
    "training.truncated_bptt": (lambda v: v >= 0, "must be >= 0 (0 = off)"),
    "training.context_word_dropout": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    "training.clip_norm": (lambda v: v >= 0, "must be >= 0"),
    "training.batch_tokens": (lambda v: v >= 8, "must be >= 8"),
    "training.max_steps": (lambda v: v >= 1, "must be >= 1"),
    "training.max_epochs": (lambda v: v >= 1, "must be >= 1"),
    "training.max_minutes": (lambda v: v >= 0, "must be >= 0"),
    "training.validate_every": (lambda v: v >= 1, "must be >= 1"),
    "training.save_every": (lambda v: v >= 1, "must be >= 1"),
    "training.log_every": (lambda v: v >= 1, "must be >= 1"),
    "training.patience": (lambda v: v >= 0, "must be >= 0"),
    "training.keep_best": (lambda v: v >= 1, "must be >= 1"),
    "training.dev_examples": (lambda v: v >= 0, "must be >= 0"),
    "training.dev_max_ratio": (lambda v: v > 0, "must be > 0"),
    "training.num_threads": (lambda v: v >= 0, "must be >= 0"),
}


def load_config(path: str | Path) -> Config:
    """Read a YAML config file into a checked `Config`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config {path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    return config_from_dict(raw if raw is not None else {})


def config_from_dict(raw: Any) -> Config:
    """Build a checked `Config` from plain data (a parsed YAML file or a checkpoint's saved config)."""
    config = _build(Config, raw, "")
    for key, (check, message) in _RULES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not check(value):
            raise ConfigError(f"{key}: {value!r} {message}")
    model = config.model
    if model.attention == "luong" and model.luong_score == "dot" and model.decoder_hidden != 2 * model.hidden:
        raise ConfigError(
            "model.luong_score: dot attention compares decoder states with encoder states directly, "
            f"so decoder_hidden must be 2 * hidden = {2 * model.hidden} (or use luong_score: general)"
        )
    if not config.data.train and not config.data.phrases:
        raise ConfigError("data.train: at least one training corpus (data.train or data.phrases) is required")
    return config


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {_type_name(raw)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown key (expected one of: {', '.join(sorted(known))})")
    for f in dataclasses.fields(cls):
        if f.name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix or 'config'}: missing required key '{f.name}'")
    values = {name: _convert(hints[name], raw[name], f"{prefix}.{name}" if prefix else name) for name in raw}
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, str) and hint is CorpusSpec:
            return CorpusSpec(path=value)  # a bare path is a corpus of auto-detected format
        return _build(hint, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if isinstance(value, (str, dict)):
            value = [value]  # one corpus may be written without a list
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_type_name(value)}")
        return [_convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML .inf passes checks like "> 0" (an infinite LR trains NaNs)
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")  # pragma: no cover - a bug in this module


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(type(value), type(value).__name__)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def save_config(config: Config, path: str | Path) -> None:
    """Write the effective config as YAML (atomically)."""
    atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))
