"""The phrase corpus format, phrase examples, and the glossary importer."""

from __future__ import annotations

from pathlib import Path

import pytest

from translator.config import CorpusSpec
from translator.data import DataError, Example
from translator.phrases import (
    PHRASE_COLUMNS,
    PhraseRow,
    clean_gloss,
    context_window,
    phrase_examples,
    read_glossary,
    read_phrase_corpus,
)

HEADER = "\t".join(PHRASE_COLUMNS)
ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_rows_with_and_without_context(tmp_path):
    path = write(tmp_path / "p.tsv", [
        HEADER,
        "en\tko\tbat\tA bat flew out of the cave\t박쥐\tbat/animal",
        "en\tko\tbaseball bat\t\t야구 방망이\t-",
        "",
        "ko\ten\t배\t배를 타고 섬에 갔다\tship\t배/ship",
    ])
    rows = read_phrase_corpus(CorpusSpec(path.as_uri()))  # file:// URLs work like paths
    assert [r.text for r in rows] == ["bat", "baseball bat", "배"]
    assert rows[0].word == "bat" and rows[1].word == "" and rows[2].word == "배"
    assert rows[1].context == ""


@pytest.mark.parametrize("lines, message", [
    (["src\ttgt\ttext\tcontext\ttranslation"], "line 1: expected the header"),
    ([HEADER, "en\tko\tbat\t\t박쥐"], "line 2: expected 6 tab-separated columns, got 5"),
    ([HEADER, "en\ten\tbat\t\tbat\t-"], "line 2: languages must be en and ko"),
    ([HEADER, "en\tfr\tbat\t\tchauve-souris\t-"], "line 2: languages must be en and ko"),
    ([HEADER, "en\tko\t\t\t박쥐\t-"], "line 2: text and translation must not be empty"),
    ([HEADER], "contains no rows"),
])
def test_malformed_corpora_name_file_and_line(tmp_path, lines, message):
    path = write(tmp_path / "bad.tsv", lines)
    with pytest.raises(DataError) as err:
        read_phrase_corpus(CorpusSpec(str(path)))
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_phrase_examples_keep_direction_and_reverse_only_plain_rows():
    rows = [
        PhraseRow("en", "ko", "bat", "A bat flew out of the cave", "박쥐", "bat/animal"),
        PhraseRow("en", "ko", "bat", "", "박쥐", "bat/animal"),  # the default sense: never reversed
        PhraseRow("en", "ko", "river bank", "", "강둑", "-"),
    ]
    examples = phrase_examples(rows, ["en-ko", "ko-en"], reverse_plain=True)
    assert Example("bat", "박쥐", "en", "ko", "A bat flew out of the cave") in examples
    assert Example("강둑", "river bank", "ko", "en") in examples
    assert not any(e.src == "박쥐" for e in examples)
    assert len(examples) == 4
    # Directions the model is not trained for are left out, and reversing can be switched off.
    only_ko_en = phrase_examples(rows, ["ko-en"], reverse_plain=True)
    assert only_ko_en == [Example("강둑", "river bank", "ko", "en")]
    assert len(phrase_examples(rows, ["en-ko", "ko-en"], reverse_plain=False)) == 3


@pytest.mark.parametrize("gloss, proper, expected", [
    ("A faucet,tap", False, "faucet"),
    ("To record", False, "record"),
    ("The normal", False, "normal"),
    ("Body temperature", False, "body temperature"),
    ("That much or  to that extent", False, ""),  # a definition, not a word
    ("Medical examination and treatment", False, ""),  # too long to be a dictionary form
    ("Related to the form (shape)", False, ""),
    ("Ulsan", True, "Ulsan"),  # proper nouns keep their capital
    ("region surrounding seoul", True, ""),  # a description, not a name
])
def test_clean_gloss(gloss, proper, expected):
    assert clean_gloss(gloss, proper) == expected


def test_glossary_import_skips_unusable_and_excluded_words(tmp_path):
    path = write(tmp_path / "g.tsv", [
        "korean\tenglish_gloss\tpos_code\tlevel",
        "기록하다\tTo record\t2\tB",
        "수도꼭지\tA faucet,tap\t1\tC",
        "배\tShip\t1\tA",
        "정도\tThat much or  to that extent\t1\tB",
        "울산\tUlsan\t7\tD",
    ])
    pairs = read_glossary(CorpusSpec(str(path)), exclude_korean={"배"}, exclude_english={"bat"})
    assert [(p.en, p.ko) for p in pairs] == [("record", "기록하다"), ("faucet", "수도꼭지"), ("Ulsan", "울산")]


def test_project_corpus_is_well_formed_and_held_out():
    """The shipped corpus: ≥ 3,000 distinct rows, ≥ 15 train and 5 dev contexts per sense, and no
    held-out context in training."""
    corpus = ROOT / "data" / "corpus"
    train = [r for p in sorted(corpus.glob("*.tsv")) for r in read_phrase_corpus(CorpusSpec(str(p)))]
    dev = [r for p in sorted((ROOT / "data" / "eval").glob("ambiguous-*.dev.tsv")) for r in read_phrase_corpus(CorpusSpec(str(p)))]
    assert len(set(train) | set(dev)) >= 3000
    train_contexts = {(r.text.lower(), r.context.lower()) for r in train}
    assert not any((r.text.lower(), r.context.lower()) in train_contexts for r in dev)
    for row in train + dev:
        if row.context:
            assert row.text.lower() in row.context.lower(), row
    senses = {r.sense for r in train if r.word}
    for sense in senses:
        assert sum(1 for r in train if r.sense == sense and r.context) >= 15, sense
        assert sum(1 for r in dev if r.sense == sense) >= 5, sense
    words = {r.word for r in train if r.word}
    assert {"bat", "bank", "배", "눈"} <= words and len(words) >= 47


@pytest.mark.parametrize("context, text, size, expected", [
    ("He swung the bat at the fastball yesterday", "bat", 2, "swung the bat at the"),
    ("어제 우리는 배를 타고 섬에 갔다", "배", 1, "우리는 배를 타고"),  # the particle stays attached
    ("Bats are the only mammals", "bats", 1, "Bats are"),
    ("the bat", "cat", 1, ""),
])
def test_context_window(context, text, size, expected):
    assert context_window(context, text, size) == expected


def test_context_windows_add_shorter_contexts_of_the_same_example():
    row = PhraseRow("en", "ko", "bat", "Yesterday he swung the bat at the fastball", "방망이", "bat/club")
    examples = phrase_examples([row], ["en-ko"], reverse_plain=True, context_windows=[1, 2, 50])
    assert [e.context for e in examples] == [
        "Yesterday he swung the bat at the fastball", "the bat at", "swung the bat at the"]  # size 50 = the original
    assert all(e.src == "bat" and e.tgt == "방망이" for e in examples)
