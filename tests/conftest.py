"""Shared fixtures: tiny English–Korean corpora and one tiny model trained once per test session.

The model is small enough to train in a few seconds on one thread and is trained long enough to
memorise its 50 training pairs in both directions, so tests can check exact translations.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from translator.checkpoint import load_checkpoint, save_checkpoint
from translator.config import Config, config_from_dict

# 50 simple word/phrase pairs (English, Korean); every English and every Korean side is distinct.
TRAIN_PAIRS: list[tuple[str, str]] = [
    ("water", "물"), ("apple", "사과"), ("school", "학교"), ("friend", "친구"), ("house", "집"),
    ("book", "책"), ("dog", "개"), ("cat", "고양이"), ("tree", "나무"), ("flower", "꽃"),
    ("mother", "어머니"), ("father", "아버지"), ("teacher", "선생님"), ("student", "학생"), ("hospital", "병원"),
    ("bread", "빵"), ("milk", "우유"), ("rice", "밥"), ("coffee", "커피"), ("tea", "차"),
    ("river", "강"), ("mountain", "산"), ("sea", "바다"), ("sky", "하늘"), ("rain", "비"),
    ("snow", "눈"), ("summer", "여름"), ("winter", "겨울"), ("spring", "봄"), ("autumn", "가을"),
    ("today", "오늘"), ("tomorrow", "내일"), ("yesterday", "어제"), ("morning", "아침"), ("night", "밤"),
    ("library", "도서관"), ("red car", "빨간 차"), ("big house", "큰 집"), ("small dog", "작은 개"),
    ("cold water", "차가운 물"), ("hot coffee", "뜨거운 커피"), ("good friend", "좋은 친구"), ("new book", "새 책"),
    ("thank you", "감사합니다"), ("hello", "안녕하세요"), ("chair", "의자"), ("door", "문"), ("window", "창문"),
    ("bird", "새"), ("fish", "물고기"),
]
# A small held-out dev set (disjoint from training: the loader drops training pairs that are in dev).
DEV_PAIRS: list[tuple[str, str]] = [("moon", "달"), ("sun", "해"), ("star", "별"), ("egg", "달걀")]

assert len(TRAIN_PAIRS) == 50
assert len({en for en, _ in TRAIN_PAIRS}) == 50 and len({ko for _, ko in TRAIN_PAIRS}) == 50

# Steps that make the tiny model below reproduce every training pair (about 150 are needed; margin).
OVERFIT_STEPS = 250


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{en}\t{ko}\n" for en, ko in pairs), encoding="utf-8")
    return path


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def tiny_config_dict(train: Path, dev: Path | None, **overrides: Any) -> dict[str, Any]:
    """A tiny, fast, deterministic config as plain data; sections in `overrides` are merged in."""
    base: dict[str, Any] = {
        "name": "tiny",
        "data": {"train": str(train), "max_tokens": 40, "directions": ["en-ko", "ko-en"]},
        "tokenizer": {"type": "unigram", "vocab_size": 200},  # raised to what the characters need
        "model": {
            "cell": "lstm", "embedding": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 1,
            "dropout": 0.0, "embedding_dropout": 0.0, "attention": "bahdanau",
        },
        "training": {
            "seed": 1, "learning_rate": 0.01, "scheduler": "none", "label_smoothing": 0.0,
            "batch_tokens": 400, "max_steps": 20, "validate_every": 10, "save_every": 10, "log_every": 1,
            "patience": 0, "keep_best": 2, "dev_examples": 1, "num_threads": 1,
        },
    }
    if dev is not None:
        base["data"]["dev"] = str(dev)
    return _merge(base, overrides)


@dataclass
class Corpus:
    train: Path
    dev: Path
    pairs: list[tuple[str, str]]
    dev_pairs: list[tuple[str, str]]


@dataclass
class TrainedModel:
    output_dir: Path
    summary: dict[str, Any]
    config: Config
    pairs: list[tuple[str, str]]

    @property
    def path(self) -> Path:
        return self.output_dir / "last.pt"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    return Corpus(write_tsv(root / "train.tsv", TRAIN_PAIRS), write_tsv(root / "dev.tsv", DEV_PAIRS),
                  list(TRAIN_PAIRS), list(DEV_PAIRS))


@pytest.fixture
def tsv() -> Callable[[Path, list[tuple[str, str]]], Path]:
    """tsv(path, pairs) writes an english<TAB>korean file and returns its path."""
    return write_tsv


@pytest.fixture
def make_config_dict(corpus) -> Callable[..., dict[str, Any]]:
    """make_config_dict(model={...}) -> the tiny config on the shared corpus as plain data (for YAML)."""

    def make(**overrides: Any) -> dict[str, Any]:
        return tiny_config_dict(corpus.train, corpus.dev, **overrides)

    return make


@pytest.fixture
def make_config(corpus) -> Callable[..., Config]:
    """make_config(training={...}, model={...}) -> a checked tiny `Config` on the shared corpus."""

    def make(**overrides: Any) -> Config:
        return config_from_dict(tiny_config_dict(corpus.train, corpus.dev, **overrides))

    return make


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, corpus) -> TrainedModel:
    """One tiny model trained once to memorise the 50 training pairs in both directions."""
    from translator.training import train

    output = tmp_path_factory.mktemp("trained") / "run"
    config = config_from_dict(tiny_config_dict(
        corpus.train, corpus.dev,
        training={"max_steps": OVERFIT_STEPS, "validate_every": 50, "save_every": 50, "log_every": 10, "keep_best": 2},
    ))
    summary = train(config, output)
    return TrainedModel(output, summary, config, list(TRAIN_PAIRS))


@pytest.fixture(scope="session")
def translator(trained_model):
    from translator.prediction import Translator

    return Translator.load(trained_model.path)


@pytest.fixture(scope="session")
def en_ko_only_model(tmp_path_factory, trained_model) -> Path:
    """The trained model re-saved as an inference-only checkpoint that declares only en-ko."""
    payload = load_checkpoint(trained_model.path)
    config = copy.deepcopy(payload["config"])
    config["data"]["directions"] = ["en-ko"]
    path = tmp_path_factory.mktemp("en-ko-only") / "model.pt"
    save_checkpoint(path, payload["model"], config, payload["tokenizer"], None, payload["metrics"])
    return path


# --- a tiny model trained with contexts (the word-in-context path) --------------------------------------

PHRASE_HEADER = "src_lang\ttgt_lang\ttext\tcontext\ttranslation\tsense"
# The same words in different contexts must get different translations.
CONTEXT_ROWS: list[tuple[str, str, str, str, str, str]] = [
    ("en", "ko", "bat", "A bat flew out of the cave", "박쥐", "bat/animal"),
    ("en", "ko", "bat", "the bat hangs upside down", "박쥐", "bat/animal"),
    ("en", "ko", "bat", "He swung the bat hard", "방망이", "bat/club"),
    ("en", "ko", "bat", "a wooden baseball bat", "방망이", "bat/club"),
    ("en", "ko", "bat", "", "박쥐", "bat/animal"),
    ("ko", "en", "배", "배를 타고 섬에 갔다", "ship", "배/ship"),
    ("ko", "en", "배", "항구에 배가 들어왔다", "ship", "배/ship"),
    ("ko", "en", "배", "배가 아파서 병원에 갔다", "stomach", "배/stomach"),
    ("ko", "en", "배", "배가 고파요", "stomach", "배/stomach"),
    ("ko", "en", "배", "", "stomach", "배/stomach"),
    ("en", "ko", "baseball bat", "", "야구 방망이", "-"),
    ("en", "ko", "river bank", "", "강둑", "-"),
]


def write_phrases(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PHRASE_HEADER + "\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


@dataclass
class ContextModel:
    path: Path
    rows: list[tuple[str, str, str, str, str, str]]


@pytest.fixture(scope="session")
def context_model(tmp_path_factory, corpus) -> ContextModel:
    """A tiny model trained on the 50 pairs plus `CONTEXT_ROWS` (inline context encoding)."""
    from translator.training import train

    root = tmp_path_factory.mktemp("context")
    phrases = write_phrases(root / "phrases.tsv", CONTEXT_ROWS)
    config = config_from_dict(tiny_config_dict(
        corpus.train, corpus.dev,
        data={"phrases": [str(phrases)], "phrase_repeat": 2, "context_encoding": "inline"},
        training={"max_steps": OVERFIT_STEPS, "validate_every": 125, "save_every": 125, "log_every": 25},
    ))
    train(config, root / "run")
    return ContextModel(root / "run" / "last.pt", list(CONTEXT_ROWS))


# --- helpers for module-level model tests ---------------------------------------------------------------

@pytest.fixture
def one_thread():
    """Tiny models are fastest single-threaded (and do not fight a training job for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reverse_task(n: int, seed: int, vocab: int, min_len: int, max_len: int, pad: int, bos: int, eos: int):
    """n random id sequences (lengths min_len..max_len, ids from 3) and their reversals as decoder
    input (bos + reversed) and output (reversed + eos), padded: (src, lengths, tgt_in, tgt_out)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=gen)
    src = torch.full((n, int(lengths.max())), pad, dtype=torch.long)
    tgt_in = torch.full((n, int(lengths.max()) + 1), pad, dtype=torch.long)
    tgt_out = tgt_in.clone()
    for i, length in enumerate(lengths.tolist()):
        tokens = torch.randint(3, vocab, (length,), generator=gen)
        src[i, :length] = tokens
        tgt_in[i, 0] = bos
        tgt_in[i, 1 : length + 1] = tokens.flip(0)
        tgt_out[i, :length] = tokens.flip(0)
        tgt_out[i, length] = eos
    return src, lengths, tgt_in, tgt_out


def random_padded_batch(lengths: list[int], seed: int, vocab: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (never PAD/BOS/EOS: ids from 3) right-padded with pad: src [B, max], lengths [B]."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), pad, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(3, vocab, (n,), generator=gen)
    return src, torch.tensor(lengths)
