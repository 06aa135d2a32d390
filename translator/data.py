"""Parallel corpora: reading, cleaning, the dev split, and length-bucketed batches.

Data flows one way: files -> `Pair` (normalized text) -> `Example` (one per direction) -> token ids
(by the tokenizer) -> `Batch` (padded tensors). Nothing here knows about the model.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from translator.config import CorpusSpec, DataConfig
from translator.io import resolve_location

# Target-language tags go first on the source side, so one model serves both directions.
TAGS = {"en": "<2en>", "ko": "<2ko>"}
# Separates the sentence to translate from optional preceding context on the source side.
CONTEXT_SEPARATOR = "<ctx>"
# Mark the phrase to translate inside its context sentence (the "inline" context encoding).
PHRASE_START, PHRASE_END = "<p>", "</p>"

DIRECTIONS = ("en-ko", "ko-en")


class DataError(ValueError):
    """A corpus cannot be read or is malformed; the message is one line naming the file (and line)."""


@dataclass(frozen=True)
class Pair:
    en: str
    ko: str


@dataclass(frozen=True)
class Example:
    src: str
    tgt: str
    src_lang: str
    tgt_lang: str
    context: str = ""


# ---------------------------------------------------------------------------------------------------
# Normalization


def normalize(text: str, lowercase: bool = False) -> str:
    """NFKC, drop invisible control/format characters, collapse whitespace runs, strip.

    NFKC folds fullwidth Latin and digits to ASCII and composes decomposed Hangul jamo into
    precomposed syllables, so the same sentence typed two ways becomes the same string.
    """
    text = unicodedata.normalize("NFKC", text)
    chars = []
    for char in text:
        if char.isspace():
            chars.append(" ")  # tabs, newlines, NBSP, U+2028...: all become plain spaces
        elif unicodedata.category(char) not in ("Cc", "Cf"):
            chars.append(char)  # Cc/Cf are controls and zero-width marks (ZWSP, BOM, LRM...)
    text = _SPACES.sub(" ", "".join(chars)).strip()
    return text.lower() if lowercase else text


_SPACES = re.compile(r" {2,}")


# ---------------------------------------------------------------------------------------------------
# Reading corpora


def read_corpus(spec: CorpusSpec, lowercase: bool = False) -> list[Pair]:
    """Read one corpus into normalized pairs (blank lines skipped, order kept)."""
    try:
        path = resolve_location(spec.path)
    except ValueError as err:
        raise DataError(str(err)) from None
    fmt = spec.format
    if fmt == "auto":
        fmt = _detect_format(path)
    if fmt == "aligned":
        pairs = _read_aligned(path, lowercase)
        where = f"{path}.en/.ko"
    elif fmt in ("tsv", "tatoeba"):
        pairs = _read_columns(path, fmt, lowercase)
        where = str(path)
    else:
        raise DataError(f"{spec.path}: unknown corpus format {fmt!r} (expected auto, tsv, tatoeba or aligned)")
    if not any(pair.en and pair.ko for pair in pairs):
        raise DataError(f"{where} contains no sentence pairs")
    return pairs


def load_corpora(specs: Sequence[CorpusSpec], lowercase: bool) -> list[Pair]:
    """Concatenate several corpora in order."""
    pairs: list[Pair] = []
    for spec in specs:
        pairs.extend(read_corpus(spec, lowercase=lowercase))
    return pairs


def _aligned_paths(path: Path) -> tuple[Path, Path]:
    return Path(f"{path}.en"), Path(f"{path}.ko")


def _detect_format(path: Path) -> str:
    en_path, ko_path = _aligned_paths(path)
    if en_path.is_file() and ko_path.is_file():
        return "aligned"
    if not path.exists():
        raise DataError(f"{path}: file not found (nor an aligned pair {en_path.name} + {ko_path.name})")
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) == 4 and _language(columns[0]) and _language(columns[1]):
            return "tatoeba"
        if len(columns) == 2:
            return "tsv"
        raise DataError(
            f"{path} line {number}: cannot detect the corpus format from {len(columns)} tab-separated columns "
            "(expected english<TAB>korean, or lang1<TAB>lang2<TAB>text1<TAB>text2)"
        )
    raise DataError(f"{path} contains no sentence pairs")


def read_lines(path: Path) -> list[str]:
    """Decode a whole file strictly as UTF-8 (a BOM is allowed) and split it on LF only."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a corpus file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        start = bom + err.start
        line = data.count(b"\n", 0, start) + 1
        bad = data[start : bom + err.end].hex(" ")
        raise DataError(f"{path} line {line}: not valid UTF-8 (bytes {bad})") from None
    # str.splitlines() would also split on U+2028, \x1c, \x85...: that would shift line numbers
    # and break the line alignment of .en/.ko files, so split on LF only.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read_columns(path: Path, fmt: str, lowercase: bool) -> list[Pair]:
    expected = 4 if fmt == "tatoeba" else 2
    pairs = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != expected:
            raise DataError(f"{path} line {number}: expected {expected} tab-separated columns, got {len(columns)}")
        if fmt == "tatoeba":
            en, ko = _tatoeba_texts(columns, path, number)
        else:
            en, ko = columns
        pairs.append(Pair(normalize(en, lowercase), normalize(ko, lowercase)))
    return pairs


def _tatoeba_texts(columns: list[str], path: Path, number: int) -> tuple[str, str]:
    first, second = _language(columns[0]), _language(columns[1])
    if (first, second) == ("en", "ko"):
        return columns[2], columns[3]
    if (first, second) == ("ko", "en"):
        return columns[3], columns[2]
    raise DataError(
        f"{path} line {number}: languages {columns[0].strip()!r} and {columns[1].strip()!r} "
        "are not English and Korean (expected eng/kor codes)"
    )


_LANGUAGE_CODE = re.compile(r"^([a-z]{2,3})(?:[_-][A-Za-z0-9]+)*$")
_LANGUAGE_NAMES = {"en": "en", "eng": "en", "ko": "ko", "kor": "ko"}


def _language(code: str) -> str | None:
    """'eng', 'en', 'kor_Hang' -> 'en'/'ko'; another code -> 'other'; not a code at all -> None."""
    match = _LANGUAGE_CODE.match(code.strip())
    if match is None:
        return None
    return _LANGUAGE_NAMES.get(match.group(1), "other")


def _read_aligned(prefix: Path, lowercase: bool) -> list[Pair]:
    en_path, ko_path = _aligned_paths(prefix)
    en_lines, ko_lines = _read_line_pairs(en_path, ko_path)
    return [Pair(normalize(en, lowercase), normalize(ko, lowercase)) for en, ko in zip(en_lines, ko_lines)]


def read_aligned_lines(first: str | Path, second: str | Path) -> tuple[list[str], list[str]]:
    """Two line-aligned files (paths or file:// URLs), e.g. sources and references for evaluation.

    Lines are returned as written (not normalized); lines blank in both files are skipped.
    """
    try:
        first_path, second_path = resolve_location(first), resolve_location(second)
    except ValueError as err:
        raise DataError(str(err)) from None
    firsts, seconds = _read_line_pairs(first_path, second_path)
    if not firsts:
        raise DataError(f"{first_path} and {second_path} contain no sentence pairs")
    return firsts, seconds


def _read_line_pairs(first: Path, second: Path) -> tuple[list[str], list[str]]:
    first_lines, second_lines = read_lines(first), read_lines(second)
    if len(first_lines) != len(second_lines):
        raise DataError(
            f"{first} has {len(first_lines)} lines but {second} has {len(second_lines)}: "
            "aligned files must match line by line"
        )
    kept = [(a, b) for a, b in zip(first_lines, second_lines) if a.strip() or b.strip()]
    return [a for a, _ in kept], [b for _, b in kept]


# ---------------------------------------------------------------------------------------------------
# Cleaning and splitting


def clean_pairs(pairs: Iterable[Pair], max_chars: int) -> list[Pair]:
    """Drop pairs with an empty or over-long side and exact duplicates (first occurrence kept)."""
    seen: set[Pair] = set()
    kept = []
    for pair in pairs:
        if not pair.en or not pair.ko or len(pair.en) > max_chars or len(pair.ko) > max_chars:
            continue
        if pair in seen:
            continue
        seen.add(pair)
        kept.append(pair)
    return kept


def split_dev(pairs: Sequence[Pair], fraction: float, max_size: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Hold out a deterministic dev set of min(max_size, max(1, round(fraction * n))) pairs (or fewer).

    Pairs that share an English or a Korean sentence (several translations of one sentence) stay
    on the same side, so no dev source sentence was seen in training, in either direction.
    """
    if len(pairs) < 2:
        raise DataError(f"cannot split a dev set from {len(pairs)} sentence pair(s); give data.dev or more data")
    target = min(max_size, max(1, round(fraction * len(pairs))), len(pairs) - 1)  # train stays non-empty
    groups = _sentence_groups(pairs)
    if len(groups) < 2:
        raise DataError("cannot split a dev set: all sentence pairs share a sentence; give data.dev")
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)  # indices, not strings: independent of PYTHONHASHSEED
    dev_indices: list[int] = []
    for g in order:
        if len(dev_indices) + len(groups[g]) <= target:
            dev_indices.extend(groups[g])
        if len(dev_indices) == target:
            break
    if not dev_indices:  # every group is larger than the target: take the smallest one
        dev_indices = list(min(groups, key=len))
    dev_set = set(dev_indices)
    train = [pair for i, pair in enumerate(pairs) if i not in dev_set]
    dev = [pair for i, pair in enumerate(pairs) if i in dev_set]
    return train, dev


def _sentence_groups(pairs: Sequence[Pair]) -> list[list[int]]:
    """Connected components of pairs linked by an identical English or Korean side (union-find)."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(pairs):
        for key in (("en", pair.en), ("ko", pair.ko)):
            j = first_seen.setdefault(key, i)
            root_i, root_j = find(i), find(j)
            if root_i != root_j:
                parent[max(root_i, root_j)] = min(root_i, root_j)
    groups: dict[int, list[int]] = {}
    for i in range(len(pairs)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())  # ordered by first member: deterministic


def load_training_data(data: DataConfig, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Read, clean and split the configured corpora into (train, dev)."""
    train = clean_pairs(load_corpora(data.train, data.lowercase), data.max_chars)
    if not train:
        raise DataError(f"no training pairs left after dropping empty and longer than {data.max_chars} characters")
    if data.dev:
        dev = clean_pairs(load_corpora(data.dev, data.lowercase), data.max_chars)
        if not dev:
            raise DataError(f"no dev pairs left after dropping empty and longer than {data.max_chars} characters")
    else:
        train, dev = split_dev(train, data.dev_fraction, data.dev_max, seed)
    # A pair that is also in dev would make the dev score measure memorisation.
    held_out = set(dev)
    train = [pair for pair in train if pair not in held_out]
    if not train:
        raise DataError("no training pairs left: every training pair is also in the dev set")
    return train, dev


def make_examples(pairs: Iterable[Pair], directions: Sequence[str]) -> list[Example]:
    """One example per pair and direction ("en-ko": English source, Korean target)."""
    for direction in directions:
        if direction not in DIRECTIONS:
            raise DataError(f"unknown direction {direction!r} (expected one of: {', '.join(DIRECTIONS)})")
    examples = []
    for pair in pairs:
        text = {"en": pair.en, "ko": pair.ko}
        for direction in directions:
            src_lang, tgt_lang = direction.split("-")
            examples.append(Example(text[src_lang], text[tgt_lang], src_lang, tgt_lang))
    return examples


# ---------------------------------------------------------------------------------------------------
# Batching


@dataclass
class Batch:
    src: torch.Tensor  # [B, S] long, padded with pad_id
    src_lengths: torch.Tensor  # [B] long
    tgt_in: torch.Tensor | None  # [B, T] long: bos + target (decoder input); None at inference
    tgt_out: torch.Tensor | None  # [B, T] long: target + eos (what the decoder must predict)
    n_tokens: int  # non-pad tokens in tgt_out: the loss is normalised by this
    indices: list[int]  # positions of these examples in the encoded list, in batch order

    @property
    def size(self) -> int:
        return self.src.size(0)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with its tensors on `device`."""
        return Batch(
            src=self.src.to(device),
            src_lengths=self.src_lengths.to(device),
            tgt_in=None if self.tgt_in is None else self.tgt_in.to(device),
            tgt_out=None if self.tgt_out is None else self.tgt_out.to(device),
            n_tokens=self.n_tokens,
            indices=self.indices,
        )


def make_batches(
    lengths: Sequence[tuple[int, int]], batch_tokens: int, seed: int, epoch: int, shuffle: bool = True
) -> list[list[int]]:
    """Group example indices into batches of similar length within a padded-token budget.

    Sorting by length keeps padding small; the random tie-break and batch order change with the
    epoch (but not between runs), so each epoch sees different batch compositions.
    """
    rng = random.Random(seed * 1000003 + epoch)
    if shuffle:
        ties = [rng.random() for _ in lengths]
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i][0], lengths[i][1], ties[i]))
    else:
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i][0], lengths[i][1], i))
    batches: list[list[int]] = []
    current: list[int] = []
    max_src = max_tgt = 0
    for i in order:
        src_len, tgt_len = lengths[i]
        new_src, new_tgt = max(max_src, src_len), max(max_tgt, tgt_len)
        if current and (len(current) + 1) * (new_src + new_tgt) > batch_tokens:
            batches.append(current)
            current, new_src, new_tgt = [], src_len, tgt_len
        current.append(i)
        max_src, max_tgt = new_src, new_tgt
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


def drop_words(ids: Sequence[int], spans: Sequence[tuple[int, int]], rate: float, rng: random.Random,
               unk_id: int) -> list[int]:
    """`ids` with the pieces of each [start, end) span (a word) set to `unk_id`, each span with probability
    `rate`. The length stays the same, so batch shapes do too (oneDNN caches a kernel per shape)."""
    dropped = list(ids)
    for start, end in spans:
        if rng.random() < rate:
            dropped[start:end] = [unk_id] * (end - start)
    return dropped


def collate(
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]] | None,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    indices: list[int],
) -> Batch:
    """Pad complete source id lists and wrap bare target ids as bos+y (input) and y+eos (output)."""
    if not sources:
        raise ValueError("collate needs at least one example")
    src = _pad([list(s) for s in sources], pad_id)
    src_lengths = torch.tensor([len(s) for s in sources], dtype=torch.long)
    if targets is None:
        return Batch(src, src_lengths, None, None, 0, list(indices))
    tgt_in = _pad([[bos_id, *t] for t in targets], pad_id)
    tgt_out = _pad([[*t, eos_id] for t in targets], pad_id)
    n_tokens = sum(len(t) + 1 for t in targets)
    return Batch(src, src_lengths, tgt_in, tgt_out, n_tokens, list(indices))


def _pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.long)
