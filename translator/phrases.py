"""The project's phrase corpus (directional rows with optional context) and the glossary importer.

Phrase corpus format (TSV, UTF-8, header required)::

    src_lang  tgt_lang  text  context  translation  sense

`context` is a sentence containing `text` (or empty); `sense` labels ambiguous words (`bat/animal`)
and is `-` otherwise. See data/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from translator.config import LANGUAGES, CorpusSpec
from translator.data import DataError, Example, Pair, normalize, read_lines
from translator.io import resolve_location

PHRASE_COLUMNS = ("src_lang", "tgt_lang", "text", "context", "translation", "sense")
GLOSSARY_COLUMNS = ("korean", "english_gloss", "pos_code", "level")


@dataclass(frozen=True)
class PhraseRow:
    src_lang: str
    tgt_lang: str
    text: str
    context: str
    translation: str
    sense: str = "-"

    @property
    def word(self) -> str:
        """The ambiguous word a sense label is about ('bat' for 'bat/club'); '' for plain rows."""
        return self.sense.split("/")[0] if self.sense not in ("", "-") else ""

    def example(self, lowercase: bool = False) -> Example:
        return Example(normalize(self.text, lowercase), normalize(self.translation, lowercase),
                       self.src_lang, self.tgt_lang, normalize(self.context, lowercase))


def read_table(spec: CorpusSpec, columns: Sequence[str]) -> list[tuple[int, list[str]]]:
    """Rows of a headed TSV as (line number, fields); the header must list `columns` in order."""
    try:
        path = resolve_location(spec.path)
    except ValueError as err:
        raise DataError(str(err)) from None
    lines = read_lines(path)
    if not lines or lines[0].split("\t") != list(columns):
        raise DataError(f"{path} line 1: expected the header {'<TAB>'.join(columns)}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise DataError(f"{path} line {number}: expected {len(columns)} tab-separated columns, got {len(fields)}")
        rows.append((number, fields))
    if not rows:
        raise DataError(f"{path} contains no rows")
    return rows


def read_phrase_corpus(spec: CorpusSpec) -> list[PhraseRow]:
    """Read a phrase corpus; languages must be en/ko and differ, text and translation non-empty."""
    path = spec.path
    rows = []
    for number, fields in read_table(spec, PHRASE_COLUMNS):
        row = PhraseRow(*(f.strip() for f in fields))
        if row.src_lang not in LANGUAGES or row.tgt_lang not in LANGUAGES or row.src_lang == row.tgt_lang:
            raise DataError(f"{path} line {number}: languages must be en and ko, got {row.src_lang!r} → {row.tgt_lang!r}")
        if not row.text or not row.translation:
            raise DataError(f"{path} line {number}: text and translation must not be empty")
        rows.append(row)
    return rows


def phrase_examples(rows: Iterable[PhraseRow], directions: Sequence[str], reverse_plain: bool,
                    lowercase: bool = False, context_windows: Sequence[int] = ()) -> list[Example]:
    """Examples in each row's own direction; rows without context and without a sense label also
    teach the reverse direction (a phrase pair is a phrase pair both ways). For each size k in
    `context_windows`, a row with context also yields the same example with its context cut to k
    words either side of the text (users give anything from a collocation to a long sentence)."""
    examples, seen = [], set()
    for row in rows:
        candidates = [row.example(lowercase)]
        if reverse_plain and not row.context and not row.word:
            candidates.append(Example(candidates[0].tgt, candidates[0].src, row.tgt_lang, row.src_lang))
        for size in context_windows if row.context else ():
            window = context_window(candidates[0].context, candidates[0].src, size)
            if window:
                candidates.append(Example(candidates[0].src, candidates[0].tgt, row.src_lang, row.tgt_lang, window))
        for example in candidates:
            if f"{example.src_lang}-{example.tgt_lang}" in directions and example not in seen:
                seen.add(example)
                examples.append(example)
    return examples


def context_window(context: str, text: str, size: int) -> str:
    """The words of `context` within `size` words of the first occurrence of `text` ('' if absent)."""
    start = context.lower().find(text.lower())
    if start < 0:
        return ""
    before = context[:start].split()
    after = context[start + len(text):].split()
    # A text inside a word (배 in 배를) keeps its attached characters with it.
    head = "" if start == 0 or context[start - 1].isspace() else before.pop()
    tail = "" if not after or context[start + len(text):][:1].isspace() else after.pop(0)
    core = head + context[start:start + len(text)] + tail
    return " ".join(before[max(0, len(before) - size):] + [core] + after[:size])


# --- the ezcorean glossary ---------------------------------------------------------------------------

_ARTICLE = re.compile(r"^(a|an|the|to)\s+", re.IGNORECASE)
_USABLE = re.compile(r"^[A-Za-z][A-Za-z' -]*$")


def clean_gloss(gloss: str, proper_noun: bool) -> str:
    """The first sense of a gloss as a short dictionary form ('' when it is a definition, not a word).

    'A faucet,tap' → 'faucet'; 'To record' → 'record'; 'That much or  to that extent' → ''.
    """
    first = re.split(r"[,;/]", gloss)[0].strip()
    first = re.sub(r"\s+", " ", _ARTICLE.sub("", first))
    # Proper-noun glosses are often descriptions ("region surrounding seoul"): keep only names.
    max_words = 1 if proper_noun else 3
    if not first or not _USABLE.match(first) or len(first.split()) > max_words or " or " in f" {first} ":
        return ""
    return first if proper_noun else first.lower()


def read_glossary(spec: CorpusSpec, exclude_korean: set[str] = frozenset(), exclude_english: set[str] = frozenset()) -> list[Pair]:
    """Korean words with a usable English gloss, as pairs. Words whose senses the phrase corpus
    teaches in context are left out so the glossary cannot teach one sense as *the* translation."""
    pairs, seen = [], set()
    for _, (korean, gloss, pos, _level) in read_table(spec, GLOSSARY_COLUMNS):
        korean = normalize(korean)
        english = clean_gloss(gloss, proper_noun=pos.strip() == "7")
        if not english or not korean or korean in exclude_korean or english.lower() in exclude_english:
            continue
        pair = Pair(english, korean)
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    if not pairs:
        raise DataError(f"{spec.path}: no usable glossary entries")
    return pairs
