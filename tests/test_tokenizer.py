"""The joint SentencePiece tokenizer: training, ids, special symbols and the stored proto."""

from __future__ import annotations

import io
import pickle

import pytest
import sentencepiece as spm

from translator.config import TokenizerConfig  # noqa: E402
from translator.data import CONTEXT_SEPARATOR, TAGS, normalize  # noqa: E402
from translator.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, TokenizerError  # noqa: E402

ENGLISH = [
    "I love you.", "Where is the station?", "The cat is sleeping on the sofa.", "I have 3 apples and 12 pears.",
    "Thank you very much.", "What time is it now?", "She reads a book every night.", "We are going to school.",
    "It's raining today.", "Please open the window.", "My brother lives in Seoul.", "How much is this?",
]
KOREAN = [
    "사랑해.", "역은 어디예요?", "고양이가 소파 위에서 자고 있어요.", "저는 사과 3개와 배 12개가 있어요.",
    "정말 고마워요.", "지금 몇 시예요?", "그녀는 매일 밤 책을 읽어요.", "우리는 학교에 가고 있어요.",
    "오늘 비가 와요.", "창문 좀 열어 주세요.", "제 동생은 서울에 살아요.", "이거 얼마예요?",
]
TEXTS = (ENGLISH + KOREAN) * 3 + ["Call 010 2345 6789 or 2024."] * 5


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(TEXTS, TokenizerConfig(type="unigram", vocab_size=500), seed=1)


def test_special_ids_and_tags_are_fixed(tokenizer):
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert tokenizer.id_to_piece(tokenizer.tag_id("en")) == TAGS["en"]
    assert tokenizer.id_to_piece(tokenizer.tag_id("ko")) == TAGS["ko"]
    assert tokenizer.id_to_piece(tokenizer.separator_id) == CONTEXT_SEPARATOR
    ids = {tokenizer.tag_id("en"), tokenizer.tag_id("ko"), tokenizer.separator_id}
    assert len(ids) == 3 and not ids & {PAD_ID, UNK_ID, BOS_ID, EOS_ID}
    with pytest.raises(TokenizerError, match="fr"):
        tokenizer.tag_id("fr")


@pytest.mark.parametrize("text", ENGLISH[:4] + KOREAN[:4] + ["Ｈｅｌｌｏ　２０２４", "뷁 똠 ☃ 😀 Ωmega", "\u1112\u1161\u11ab"])
def test_round_trip_after_normalize(tokenizer, text):
    text = normalize(text)
    ids = tokenizer.encode(text)
    assert UNK_ID not in ids  # byte fallback covers characters never seen in training
    assert tokenizer.decode(ids) == text


def test_digits_are_split(tokenizer):
    # Frequent numbers ("12", "6789") would otherwise become single pieces.
    pieces = [p for p in tokenizer.pieces("I have 12 apples, call 6789 in 2024.") if not p.startswith("<0x")]
    assert all(sum(c.isdigit() for c in piece) <= 1 for piece in pieces)
    assert sum(c.isdigit() for piece in pieces for c in piece) == 10  # every digit is an ordinary piece


def test_tags_are_single_ids_never_split(tokenizer):
    for tag in (*TAGS.values(), CONTEXT_SEPARATOR):
        assert tag in tokenizer.pieces(f"x{tag}y {tag} z")
    ids = tokenizer.encode_source("I love you.", "ko", context="Hello.")
    assert ids[0] == tokenizer.tag_id("ko") and ids[-1] == EOS_ID
    sep = ids.index(tokenizer.separator_id)
    assert ids[1:sep] == tokenizer.encode("I love you.") and ids[sep + 1 : -1] == tokenizer.encode("Hello.")
    assert tokenizer.encode_source("사랑해.", "en") == [tokenizer.tag_id("en"), *tokenizer.encode("사랑해."), EOS_ID]
    pieces = tokenizer.source_pieces(ids)
    assert pieces[0] == "<2ko>" and pieces[sep] == "<ctx>" and len(pieces) == len(ids)


def test_decode_ignores_specials(tokenizer):
    body = tokenizer.encode_target("정말 고마워요.")
    assert tokenizer.decode([BOS_ID, tokenizer.tag_id("en"), *body, EOS_ID, PAD_ID, PAD_ID]) == "정말 고마워요."
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tokenizer.decode([tokenizer.vocab_size])


def test_from_proto_and_pickle_reproduce_encodings(tokenizer):
    again = Tokenizer.from_proto(tokenizer.proto)
    unpickled = pickle.loads(pickle.dumps(tokenizer))
    for text in ENGLISH + KOREAN:
        assert again.encode(text) == tokenizer.encode(text) == unpickled.encode(text)
    assert again.proto == tokenizer.proto and again.vocab_size == tokenizer.vocab_size


@pytest.mark.parametrize("cut", [b"", b"not a model", "half"])
def test_corrupt_proto_is_rejected(tokenizer, cut):
    proto = tokenizer.proto[: len(tokenizer.proto) // 2] if cut == "half" else cut
    with pytest.raises(TokenizerError) as info:
        Tokenizer.from_proto(proto)
    assert "\n" not in str(info.value)


def _foreign_proto(**options) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS), model_writer=model, vocab_size=200, hard_vocab_limit=False, minloglevel=2, **options
    )
    return model.getvalue()


def test_foreign_models_are_rejected():
    with pytest.raises(TokenizerError, match="special ids"):
        Tokenizer.from_proto(_foreign_proto())  # spm defaults: unk=0, bos=1, eos=2, no pad
    with pytest.raises(TokenizerError, match="<2en>"):
        Tokenizer.from_proto(_foreign_proto(pad_id=0, unk_id=1, bos_id=2, eos_id=3))


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_training_is_deterministic_and_sized(kind):
    config = TokenizerConfig(type=kind, vocab_size=450)
    first = Tokenizer.train(TEXTS, config, seed=1)
    second = Tokenizer.train(iter(TEXTS), config, seed=1)
    assert first.proto == second.proto
    assert first.vocab_size <= 450
    assert first.decode(first.encode("저는 사과 3개와 배 12개가 있어요.")) == "저는 사과 3개와 배 12개가 있어요."


def test_model_types_differ():
    unigram = Tokenizer.train(TEXTS, TokenizerConfig(type="unigram", vocab_size=450))
    bpe = Tokenizer.train(TEXTS, TokenizerConfig(type="bpe", vocab_size=450))
    assert unigram.proto != bpe.proto


def test_vocab_size_is_a_soft_limit():
    # Far more pieces than the corpus supports: trains anyway, with fewer pieces.
    large = Tokenizer.train(TEXTS, TokenizerConfig(vocab_size=8000))
    assert 259 < large.vocab_size < 8000
    # Fewer than the characters plus byte pieces need: raised to that minimum.
    small = Tokenizer.train(TEXTS, TokenizerConfig(vocab_size=16))
    assert small.vocab_size > 256 + 7
    assert small.decode(small.encode("사랑해.")) == "사랑해."


def test_training_is_quiet_and_leaves_no_files(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    Tokenizer.train(TEXTS, TokenizerConfig(vocab_size=300))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert list(tmp_path.iterdir()) == []


def test_no_text_is_an_error():
    with pytest.raises(TokenizerError, match="no text"):
        Tokenizer.train(["", "  "], TokenizerConfig())


# --- context encodings ---------------------------------------------------------------------------------

def test_separator_encoding_puts_context_after_the_text(tokenizer):
    ids = tokenizer.encode_source("bat", "ko", "I love you.", context_encoding="separator")
    sep = tokenizer.separator_id
    assert ids[0] == tokenizer.tag_id("ko") and ids[-1] == EOS_ID
    assert ids[1 : ids.index(sep)] == tokenizer.encode("bat")
    assert ids[ids.index(sep) + 1 : -1] == tokenizer.encode("I love you.")


def test_inline_encoding_marks_the_text_inside_its_context(tokenizer):
    start, end = (tokenizer._sp.piece_to_id(s) for s in ("<p>", "</p>"))
    ids = tokenizer.encode_source("Station", "ko", "Where is the station?", context_encoding="inline")
    assert tokenizer.separator_id not in ids
    assert ids.count(start) == 1 and ids.count(end) == 1
    inner = ids[ids.index(start) + 1 : ids.index(end)]
    assert inner == tokenizer.encode("Station")  # the text as given, found case-insensitively
    assert ids[1 : ids.index(start)] == tokenizer.encode("Where is the ")
    # Markers never show up in decoded text.
    assert "<p>" not in tokenizer.decode(ids) and "Station" in tokenizer.decode(ids)


def test_inline_encoding_falls_back_to_separator_when_context_lacks_the_text(tokenizer):
    inline = tokenizer.encode_source("cat", "ko", "Where is the station?", context_encoding="inline")
    separator = tokenizer.encode_source("cat", "ko", "Where is the station?", context_encoding="separator")
    assert inline == separator


def test_no_context_is_the_same_in_both_encodings(tokenizer):
    assert tokenizer.encode_source("고양이", "en", None, "inline") == tokenizer.encode_source("고양이", "en", None, "separator")


def _word_texts(tokenizer, ids) -> list[str]:
    return [tokenizer.decode(ids[start:end]) for start, end in tokenizer.context_words(ids)]


def test_context_words_inline_are_the_words_around_the_marked_text(tokenizer):
    ids = tokenizer.encode_source("station", "ko", "Where is the station now please?", "inline")
    # The marked text is never a context word; tag and eos are not words.
    assert _word_texts(tokenizer, ids) == ["Where", "is", "the", "now", "please?"]
    # A Korean text's next word may be its own ending (를 in 배를): it is left out.
    korean = tokenizer.encode_source("배", "en", "오늘 배를 타고 갔다", "inline")
    assert _word_texts(tokenizer, korean) == ["오늘", "타고", "갔다"]


def test_context_words_with_a_separator_are_the_words_after_it(tokenizer):
    ids = tokenizer.encode_source("bat", "ko", "I love you.", "separator")
    spans = tokenizer.context_words(ids)
    assert _word_texts(tokenizer, ids) == ["I", "love", "you."]
    assert spans[0][0] == ids.index(tokenizer.separator_id) + 1 and spans[-1][1] == len(ids) - 1


def test_a_source_without_context_has_no_context_words(tokenizer):
    assert tokenizer.context_words(tokenizer.encode_source("Where is the station?", "ko")) == []
