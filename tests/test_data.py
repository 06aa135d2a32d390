"""Reading, cleaning, splitting and batching parallel data."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from translator.config import CorpusSpec, DataConfig  # noqa: E402
from translator.data import (  # noqa: E402
    DataError,
    Example,
    Pair,
    clean_pairs,
    collate,
    drop_words,
    load_training_data,
    make_batches,
    make_examples,
    normalize,
    read_aligned_lines,
    read_corpus,
    split_dev,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# normalize


def test_normalize_nfkc_folds_fullwidth_and_composes_hangul():
    assert normalize("Ａｂｃ　１２３") == "Abc 123"  # fullwidth letters, digits and ideographic space
    assert normalize("\u1112\u1161\u11ab\u1100\u1173\u11af") == "한글"  # conjoining jamo -> syllables
    assert normalize("\u314e\u314f") == "하"  # compatibility jamo ㅎ + ㅏ compose too


def test_normalize_removes_controls_and_collapses_whitespace():
    assert normalize("  hello\t\tworld \n\r again\u00a0 ") == "hello world again"
    assert normalize("zero\u200bwidth\x00\x07 bom\ufeff") == "zerowidth bom"
    assert normalize("Hello 세계", lowercase=True) == "hello 세계"
    assert normalize("Hello") == "Hello"


# ---------------------------------------------------------------------------------------------------
# read_corpus: formats


def test_read_tsv_normalizes_and_skips_blank_lines(tmp_path):
    path = write(tmp_path / "c.tsv", "Hello .\t안녕 .\n\n  \nＨｉ\t\u1112\u1161\u11ab\n")
    assert read_corpus(CorpusSpec(str(path), "tsv")) == [Pair("Hello .", "안녕 ."), Pair("Hi", "한")]
    assert read_corpus(CorpusSpec(str(path), "tsv"), lowercase=True)[0] == Pair("hello .", "안녕 .")


def test_read_tsv_accepts_file_url_bom_and_crlf(tmp_path):
    path = tmp_path / "dir with space" / "c.tsv"
    path.parent.mkdir()
    path.write_bytes(b"\xef\xbb\xbfI am.\t\xeb\x82\x98\xec\x95\xbc.\r\nYou.\t\xeb\x84\x88.\r\n")
    pairs = read_corpus(CorpusSpec(path.as_uri(), "auto"))
    assert pairs == [Pair("I am.", "나야."), Pair("You.", "너.")]


def test_remote_url_is_refused(tmp_path):
    with pytest.raises(DataError, match="https"):
        read_corpus(CorpusSpec("https://example.com/x.tsv", "tsv"))


def test_read_tatoeba_maps_languages_in_either_order(tmp_path):
    path = write(
        tmp_path / "t.tsv",
        "eng\tkor\tI run.\t나는 달린다.\n"
        "kor_Hang\teng\t고양이.\tA cat.\n"
        "ko\ten\t개.\tA dog.\n",
    )
    expected = [Pair("I run.", "나는 달린다."), Pair("A cat.", "고양이."), Pair("A dog.", "개.")]
    assert read_corpus(CorpusSpec(str(path), "tatoeba")) == expected
    assert read_corpus(CorpusSpec(str(path), "auto")) == expected  # detected from the first line


def test_tatoeba_other_language_names_line(tmp_path):
    path = write(tmp_path / "t.tsv", "eng\tkor\tI run.\t달린다.\neng\tfra\tI run.\tJe cours.\n")
    with pytest.raises(DataError, match=r"t\.tsv line 2: .*'fra'"):
        read_corpus(CorpusSpec(str(path), "auto"))


def test_read_aligned_and_auto_detects_it(tmp_path):
    write(tmp_path / "x.en", "One.\nTwo.\n\nThree.\n")
    write(tmp_path / "x.ko", "하나.\n둘.\n\n셋.\n")
    expected = [Pair("One.", "하나."), Pair("Two.", "둘."), Pair("Three.", "셋.")]
    assert read_corpus(CorpusSpec(str(tmp_path / "x"), "aligned")) == expected
    assert read_corpus(CorpusSpec(str(tmp_path / "x"))) == expected


def test_aligned_line_separator_does_not_shift_lines(tmp_path):
    # U+2028 inside a sentence must not count as a line break (str.splitlines would split it).
    write(tmp_path / "x.en", "One\u2028more.\nTwo.\n")
    write(tmp_path / "x.ko", "하나.\n둘.\n")
    assert read_corpus(CorpusSpec(str(tmp_path / "x"), "aligned")) == [Pair("One more.", "하나."), Pair("Two.", "둘.")]


def test_aligned_mismatch_names_both_files_and_counts(tmp_path):
    write(tmp_path / "x.en", "One.\nTwo.\nThree.\n")
    write(tmp_path / "x.ko", "하나.\n둘.\n")
    with pytest.raises(DataError) as info:
        read_corpus(CorpusSpec(str(tmp_path / "x"), "aligned"))
    message = str(info.value)
    assert "x.en" in message and "x.ko" in message and "3" in message and "2" in message
    assert "\n" not in message


def test_read_aligned_lines_for_evaluation(tmp_path):
    src = write(tmp_path / "test.src", "Ｏne.\n\nTwo.\n")
    ref = write(tmp_path / "test.ref", "하나.\n\n둘.\n")
    assert read_aligned_lines(str(src), ref.as_uri()) == (["Ｏne.", "Two."], ["하나.", "둘."])  # not normalized
    write(tmp_path / "short.ref", "하나.\n")
    with pytest.raises(DataError, match=r"test\.src has 3 lines but .*short\.ref has 1"):
        read_aligned_lines(src, tmp_path / "short.ref")


# ---------------------------------------------------------------------------------------------------
# read_corpus: errors


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"Fine.\t\xec\xa2\x8b\xec\x95\x84.\nOk.\tok\nBad \xff.\tx\n")
    with pytest.raises(DataError, match=r"bad\.tsv line 3: .*UTF-8"):
        read_corpus(CorpusSpec(str(path), "tsv"))


def test_missing_column_names_line(tmp_path):
    path = write(tmp_path / "x.tsv", "One.\t하나.\n\nTwo without tab\n")
    with pytest.raises(DataError, match=r"x\.tsv line 3: expected 2 tab-separated columns, got 1$"):
        read_corpus(CorpusSpec(str(path), "tsv"))


def test_extra_columns_are_an_error_for_tsv(tmp_path):
    path = write(tmp_path / "x.tsv", "One.\t하나.\textra\n")
    with pytest.raises(DataError, match=r"line 1: expected 2 tab-separated columns, got 3"):
        read_corpus(CorpusSpec(str(path), "tsv"))


def test_missing_file_and_empty_corpus(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: file not found"):
        read_corpus(CorpusSpec(str(tmp_path / "nope.tsv"), "tsv"))
    with pytest.raises(DataError, match="file not found"):
        read_corpus(CorpusSpec(str(tmp_path / "nope"), "auto"))
    empty = write(tmp_path / "empty.tsv", "\n  \n")
    with pytest.raises(DataError, match="empty.tsv contains no sentence pairs"):
        read_corpus(CorpusSpec(str(empty), "tsv"))
    one_sided = write(tmp_path / "one.tsv", "Only English.\t\n")
    with pytest.raises(DataError, match="contains no sentence pairs"):
        read_corpus(CorpusSpec(str(one_sided), "tsv"))


# ---------------------------------------------------------------------------------------------------
# Cleaning, splitting, examples


def test_clean_pairs_filters_and_deduplicates_in_order():
    pairs = [
        Pair("b", "나"),
        Pair("a", "가"),
        Pair("b", "나"),  # duplicate
        Pair("", "빈"),  # empty side
        Pair("x" * 11, "길다"),  # too long
        Pair("b", "다른"),  # same English, different Korean: kept
        Pair("ok", "가" * 10),  # exactly at the limit: kept
    ]
    assert clean_pairs(pairs, max_chars=10) == [Pair("b", "나"), Pair("a", "가"), Pair("b", "다른"), Pair("ok", "가" * 10)]


def _pairs(n: int) -> list[Pair]:
    # Every English sentence has two translations, and some Korean sentences are shared.
    pairs = []
    for i in range(n):
        pairs.append(Pair(f"sentence {i}", f"문장 {i}"))
        pairs.append(Pair(f"sentence {i}", f"문장 {i} 변형"))
    pairs.append(Pair("another 3", "문장 3"))
    return pairs


def test_split_dev_is_deterministic_and_holds_out_sentences():
    pairs = _pairs(100)
    train, dev = split_dev(pairs, fraction=0.1, max_size=1000, seed=7)
    assert (train, dev) == split_dev(list(pairs), fraction=0.1, max_size=1000, seed=7)
    assert split_dev(pairs, fraction=0.1, max_size=1000, seed=8)[1] != dev
    assert 1 <= len(dev) <= round(0.1 * len(pairs))
    assert len(dev) >= round(0.1 * len(pairs)) - 3  # groups are small: close to the target
    assert sorted(train + dev, key=pairs.index) == pairs  # a partition, original order kept
    assert not {p.en for p in train} & {p.en for p in dev}
    assert not {p.ko for p in train} & {p.ko for p in dev}


def test_split_dev_respects_max_size_and_keeps_train_nonempty():
    pairs = [Pair(f"s{i}", f"문{i}") for i in range(50)]
    assert len(split_dev(pairs, 0.5, max_size=4, seed=1)[1]) == 4
    train, dev = split_dev(pairs[:2], 0.9, max_size=10, seed=1)
    assert len(train) == 1 and len(dev) == 1
    with pytest.raises(DataError):
        split_dev(pairs[:1], 0.5, 10, seed=1)


def test_load_training_data_removes_dev_pairs_from_train(tmp_path):
    train = write(tmp_path / "train.tsv", "A.\t가.\nB.\t나.\nC.\t다.\nA.\t가.\n" + "x" * 50 + "\t길다\n")
    dev = write(tmp_path / "dev.tsv", "B.\t나.\nA.\t다른.\n")
    config = DataConfig(train=[CorpusSpec(str(train))], dev=[CorpusSpec(str(dev))], max_chars=20)
    train_pairs, dev_pairs = load_training_data(config, seed=1)
    # Only exact duplicates of dev pairs leave train; a shared English side alone does not.
    assert train_pairs == [Pair("A.", "가."), Pair("C.", "다.")]
    assert dev_pairs == [Pair("B.", "나."), Pair("A.", "다른.")]


def test_load_training_data_splits_when_no_dev(tmp_path):
    lines = "".join(f"Sentence {i}.\t문장 {i}.\n" for i in range(40))
    config = DataConfig(train=[CorpusSpec(str(write(tmp_path / "t.tsv", lines)))], dev_fraction=0.1, lowercase=True)
    train, dev = load_training_data(config, seed=3)
    assert len(dev) == 4 and len(train) == 36
    assert all(p.en.startswith("sentence") for p in train + dev)  # lowercase applied


def test_make_examples_one_per_direction():
    pairs = [Pair("Hi.", "안녕."), Pair("Bye.", "잘 가.")]
    examples = make_examples(pairs, ["en-ko", "ko-en"])
    assert examples[:2] == [Example("Hi.", "안녕.", "en", "ko"), Example("안녕.", "Hi.", "ko", "en")]
    assert len(examples) == 4
    assert make_examples(pairs, ["ko-en"]) == [Example("안녕.", "Hi.", "ko", "en"), Example("잘 가.", "Bye.", "ko", "en")]
    with pytest.raises(DataError):
        make_examples(pairs, ["en-fr"])


# ---------------------------------------------------------------------------------------------------
# Batching


def _lengths(n: int = 500, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(3, 40), rng.randint(2, 45)) for _ in range(n)]


def test_make_batches_respects_budget_and_covers_every_example():
    lengths = _lengths() + [(300, 300)]  # one example alone exceeds the budget
    batches = make_batches(lengths, batch_tokens=400, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        padded = len(batch) * (max(lengths[i][0] for i in batch) + max(lengths[i][1] for i in batch))
        assert padded <= 400 or len(batch) == 1
    assert [len(lengths) - 1] in batches
    assert max(len(b) for b in batches) > 3  # the budget is actually used, not one example per batch


def test_make_batches_deterministic_and_epoch_dependent():
    lengths = _lengths()
    first = make_batches(lengths, 500, seed=1, epoch=0)
    assert first == make_batches(lengths, 500, seed=1, epoch=0)
    assert first != make_batches(lengths, 500, seed=1, epoch=1)
    assert first != make_batches(lengths, 500, seed=2, epoch=0)


def test_make_batches_without_shuffle_is_sorted():
    lengths = _lengths()
    batches = make_batches(lengths, 500, seed=1, epoch=0, shuffle=False)
    assert batches == make_batches(lengths, 500, seed=9, epoch=4, shuffle=False)
    flat = [i for b in batches for i in b]
    assert flat == sorted(range(len(lengths)), key=lambda i: (lengths[i], i))


def test_collate_pads_and_places_bos_eos():
    pad, bos, eos = 0, 2, 3
    batch = collate([[5, 10, 11, 3], [4, 12, 3]], [[20, 21, 22], [23]], pad, bos, eos, indices=[7, 2])
    assert batch.size == 2 and batch.indices == [7, 2]
    assert batch.src.tolist() == [[5, 10, 11, 3], [4, 12, 3, 0]]
    assert batch.src_lengths.tolist() == [4, 3]
    assert batch.tgt_in.tolist() == [[2, 20, 21, 22], [2, 23, 0, 0]]
    assert batch.tgt_out.tolist() == [[20, 21, 22, 3], [23, 3, 0, 0]]
    assert batch.n_tokens == 6 == int((batch.tgt_out != pad).sum())
    assert batch.src.dtype == torch.long and batch.tgt_in.dtype == torch.long


def test_collate_for_inference_has_no_targets():
    batch = collate([[5, 9, 3]], None, 0, 2, 3, indices=[0])
    assert batch.tgt_in is None and batch.tgt_out is None and batch.n_tokens == 0
    assert batch.src.shape == (1, 3)


# ---------------------------------------------------------------------------------------------------
# Real data


def test_reads_real_tatoeba_dev():
    path = SHARED_DATA / "tatoeba" / "dev.en-ko.tsv"
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    pairs = read_corpus(CorpusSpec(str(path)))
    assert len(pairs) == 975
    assert all(p.en and p.ko for p in pairs)
    assert all(any("\uac00" <= c <= "\ud7a3" for c in p.ko) for p in pairs[:50])  # Korean side is Hangul
    assert not any(any("\uac00" <= c <= "\ud7a3" for c in p.en) for p in pairs[:50])


# --- context word dropout ---------------------------------------------------------------------------


def test_drop_words_sets_every_piece_of_each_chosen_span_to_unk():
    ids = [9, 10, 11, 12, 13, 14, 15]
    spans = [(1, 3), (3, 4), (5, 7)]
    assert drop_words(ids, spans, 0.0, random.Random(1), unk_id=1) == ids
    assert drop_words(ids, spans, 0.999999, random.Random(1), unk_id=1) == [9, 1, 1, 1, 13, 1, 1]
    # Ids outside the spans (the tag, the marked text, eos) always survive.
    for seed in range(20):
        kept = drop_words(ids, spans, 0.5, random.Random(seed), unk_id=1)
        assert kept[0] == 9 and kept[4] == 13
        assert kept[1:3] in ([10, 11], [1, 1]) and kept[5:7] in ([14, 15], [1, 1])  # whole words or none


def test_drop_words_follows_its_random_stream_and_rate():
    ids, spans = list(range(100, 400)), [(i, i + 1) for i in range(300)]
    first = drop_words(ids, spans, 0.2, random.Random(7), unk_id=1)
    assert first == drop_words(ids, spans, 0.2, random.Random(7), unk_id=1)
    assert first != drop_words(ids, spans, 0.2, random.Random(8), unk_id=1)
    assert 30 <= first.count(1) <= 90  # about 60 of 300
